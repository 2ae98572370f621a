"""Shared fixtures: a real Kafka broker, and real meterline processes.

Factory fixtures (``meterline_factory``) let a test start several processes,
kill them and start them again on the same data folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kafka import kafka_broker
from tests.support.stack import MeterlineProcess


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio (mark them with ``pytest.mark.anyio``)."""
    return "asyncio"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_topic() -> str:
    return f"meterline.test.{uuid.uuid4().hex[:10]}"


MeterlineFactory = Callable[..., MeterlineProcess]


@pytest.fixture
def meterline_factory(tmp_path: Path) -> Iterator[MeterlineFactory]:
    started: list[MeterlineProcess] = []

    def start(data_dir: Path | None = None, **env: str) -> MeterlineProcess:
        proc = MeterlineProcess(
            data_dir or tmp_path / "data", {k.upper(): v for k, v in env.items()}
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def embedded_stack(meterline_factory: MeterlineFactory) -> MeterlineProcess:
    """Gateway + processor on the embedded log and chDB, in a fresh data folder."""
    return meterline_factory(
        METERLINE_LOG="embedded", METERLINE_STORE="chdb", METERLINE_PARTITIONS="4"
    )


@pytest.fixture
def kafka_stack(
    meterline_factory: MeterlineFactory, kafka_bootstrap: str, unique_topic: str
) -> MeterlineProcess:
    """Gateway + processor on the real Kafka broker (a fresh topic) and chDB."""
    return meterline_factory(
        METERLINE_LOG="kafka",
        METERLINE_STORE="chdb",
        METERLINE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        METERLINE_TOPIC=unique_topic,
        METERLINE_CONSUMER_GROUP=f"g-{unique_topic}",
        METERLINE_PARTITIONS="6",
    )
