"""A stuck processor takes the real process down for its supervisor to restart.

Issue 11: after ``/v1/sql`` dropped ``usage_events`` the gateway still said
ready and answered 202 while the processor retried the insert forever.
``/v1/sql`` is read-only now, so the chaos harness plays the dropped table:
every INSERT fails as it did (``METERLINE_CHAOS_STORE_AWAY``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MeterlineFactory
from tests.support.chaos import STORE_AWAY_ENV
from tests.support.events import make_events


def test_a_store_away_longer_than_the_stuck_limit_fails_readyz_then_exits_non_zero(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    stack = meterline_factory(
        tmp_path / "data",
        METERLINE_LOG="embedded",
        METERLINE_STORE="chdb",
        # Above the first batch's own time (it loads the price catalog: ~2 s here).
        METERLINE_STUCK_AFTER_S="10",
        **{STORE_AWAY_ENV: "1"},
    )
    assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200
    assert stack.post(make_events(1, seed=3)).status_code == 202  # durable in the log

    def readyz() -> httpx.Response | None:
        try:
            return httpx.get(f"{stack.url}/readyz", timeout=10)
        except httpx.HTTPError:
            return None  # the port closed: the process is stopping

    seen: dict[str, Any] | None = None
    assert stack.proc is not None
    while stack.proc.poll() is None and seen is None:
        response = readyz()
        if response is not None and response.status_code == 503:
            seen = response.json()
        time.sleep(0.1)
    assert seen is not None, "the process exited without /readyz ever answering 503"
    [problem] = seen["problems"]
    assert (problem["code"], problem["field"]) == ("stuck", "processor-0")
    assert problem["message"].startswith("retrying a batch of 1 records (")
    assert "over METERLINE_STUCK_AFTER_S=10" in problem["message"]

    assert stack.proc.wait(120) == 1
    log = (tmp_path / f"meterline-{stack.port}.log").read_text()
    assert "processor-0 is stuck: retrying a batch of 1 records" in log
    assert "stopped for a restart" in log

    # What the supervisor does next, once the store is back: the batch, never
    # committed, is read again and stored exactly once.
    del stack.env[STORE_AWAY_ENV]
    stack.start()
    stack.wait_caught_up()
    assert stack.stored() == 1
    assert stack.sql("SELECT sum(events) AS n FROM usage_meters") == [{"n": "1"}]
