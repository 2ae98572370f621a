"""Fixtures for the emitter tests: fake provider servers and one real
meterline process (gateway + embedded log + processor + chDB) per module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer
from tests.support.stack import MeterlineProcess


@pytest.fixture
def fake_provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def emitter_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterlineProcess]:
    env = {"METERLINE_LOG": "embedded", "METERLINE_STORE": "chdb", "METERLINE_PARTITIONS": "4"}
    stack = MeterlineProcess(tmp_path_factory.mktemp("emitter") / "data", env).start()
    yield stack
    stack.stop()


def stored_events(stack: MeterlineProcess, subject: str) -> list[dict[str, Any]]:
    """The CloudEvents stored for ``subject``, exactly as the gateway received them."""
    import orjson

    rows = stack.sql(f"SELECT data FROM usage_events WHERE subject = '{subject}' ORDER BY time, id")
    return [without_ok_outcome(orjson.loads(row["data"])) for row in rows]


def without_ok_outcome(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a successful call's measured outcome checked, then taken out.

    The wrappers add ``status: "ok"`` and the call's ``latency_ms`` to every event
    they build; the latency differs on every run, so the exact comparisons of the
    emitter tests compare the rest. A failed call's outcome (``status: "error"``)
    stays in, for the tests that check it.
    """
    data = event.get("data")
    if isinstance(data, dict) and data.get("status") == "ok":
        latency = data.pop("latency_ms", 0)
        assert isinstance(latency, int) and 0 <= latency < 120_000, latency
        del data["status"]
    return event


def wait_for(check: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {check}")
