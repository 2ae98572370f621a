"""kill -9 of the running process mid-stream, restart on the same data: totals stay exact.

The client behaves like a real one: a request that got no 202 is retried until
it does, so events that reached the log before the crash arrive twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MeterlineFactory
from tests.support.events import ground_truth, make_events, stored_totals, totals_query
from tests.support.stack import MeterlineProcess


def _post_until_accepted(stack: MeterlineProcess, batch: list[dict]) -> None:
    for _ in range(50):
        try:
            if stack.post(batch).status_code == 202:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # the process is restarting: back off, then retry the same batch
    raise AssertionError("batch never accepted")


def _crash_and_recover(start: MeterlineFactory, data_dir: Path, **env: str) -> None:
    events = make_events(3000, seed=5)
    batches = [events[i : i + 250] for i in range(0, len(events), 250)]
    stack = start(data_dir, **env)
    for batch in batches[:8]:
        _post_until_accepted(stack, batch)
    # Mid-stream: some of it stored, not all of it.
    stack.wait_until(lambda: stack.stored() > 0, 60, "first stored events")
    stack.kill()

    stack.start()
    _post_until_accepted(stack, batches[7])  # the client retries the last batch it was unsure of
    for batch in batches[8:]:
        _post_until_accepted(stack, batch)
    stack.wait_caught_up()
    truth = ground_truth(events)
    assert stack.stored() == len(events)
    assert stored_totals(stack.sql(totals_query("usage_events"))) == truth
    assert stored_totals(stack.sql(totals_query("usage_meters"))) == truth


def test_embedded_restart_after_kill_keeps_totals_exact(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    _crash_and_recover(
        meterline_factory,
        tmp_path / "data",
        METERLINE_LOG="embedded",
        METERLINE_PARTITIONS="4",
        METERLINE_BATCH_MAX_EVENTS="300",
    )


@pytest.mark.kafka
def test_kafka_restart_after_kill_keeps_totals_exact(
    meterline_factory: MeterlineFactory, tmp_path: Path, kafka_bootstrap: str, unique_topic: str
) -> None:
    _crash_and_recover(
        meterline_factory,
        tmp_path / "data",
        METERLINE_LOG="kafka",
        METERLINE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        METERLINE_TOPIC=unique_topic,
        METERLINE_CONSUMER_GROUP=f"g-{unique_topic}",
        METERLINE_PARTITIONS="6",
        # The killed member's partitions return after the session timeout: keep it short.
        METERLINE_KAFKA_EXTRA='{"session.timeout.ms": 6000}',
        METERLINE_BATCH_MAX_EVENTS="300",
    )
