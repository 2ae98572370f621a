"""Gateway fixtures: an in-process app (httpx ASGI transport) over a real log.

``LogTap`` reads back what a request put in the log (embedded or Kafka), so
tests assert on the log itself, never on the gateway's word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.log.base import LogAdmin, LogProducer, Record
from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from ingest.app import Gateway, create_app
from query import Reader
from query import routes as read_routes

TOPIC = "events"
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
CONFORMANCE = Path(__file__).parents[2] / ".." / "shared" / "conformance" / "cloudevents"


class LogTap:
    """The records appended to a topic since the tap was created (or last ``mark``)."""

    def __init__(self, admin: LogAdmin, topic: str) -> None:
        self.admin = admin
        self.topic = topic
        self.mark()

    def mark(self) -> None:
        self._since = self.admin.end_offsets(self.topic)

    def count(self) -> int:
        ends = self.admin.end_offsets(self.topic)
        return sum(end - self._since.get(p, 0) for p, end in ends.items())

    def records(self) -> list[Record]:
        out: list[Record] = []
        for partition, end in sorted(self.admin.end_offsets(self.topic).items()):
            for chunk in self.admin.read_range(
                self.topic, partition, self._since.get(partition, 0), end
            ):
                out.extend(chunk)
        return out


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic(TOPIC, 2)
    return path


@pytest.fixture
def producer(log_path: Path) -> Iterator[EmbeddedProducer]:
    producer = EmbeddedProducer(log_path, TOPIC)
    yield producer
    producer.close()


@pytest.fixture
def tap(log_path: Path) -> Iterator[LogTap]:
    admin = EmbeddedAdmin(log_path)
    yield LogTap(admin, TOPIC)
    admin.close()


GATEWAY_DEFAULTS: dict[str, Any] = {
    "tenant": "t1",
    "max_body_bytes": 200_000,
    "max_event_bytes": 100_000,
    "max_batch_events": 10,
}

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def gateway_client(producer: LogProducer, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    gateway = Gateway(producer, **{**GATEWAY_DEFAULTS, **options})
    # Mounted as the shell mounts it; no store here, so reads answer 404.
    app = create_app(gateway, mounts=read_routes(Reader(None, gateway.guard)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


@pytest.fixture
def make_client(producer: EmbeddedProducer) -> ClientFactory:
    """``async with make_client(keys=..., limiter=...) as client``: one gateway per call."""

    def make(**options: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return gateway_client(options.pop("log_producer", producer), **options)

    return make
