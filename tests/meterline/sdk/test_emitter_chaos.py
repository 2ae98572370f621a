"""Chaos: the gateway goes away for 10 s in the middle of a burst. The app
sees no error and no refusal; once the gateway is back every event is stored
exactly once (retries that resent a batch are deduplicated downstream)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from meterline.sdk import Meter
from tests.support.stack import MeterlineProcess

EVENTS = 3000


@pytest.mark.slow
def test_gateway_down_10s_during_a_burst_loses_nothing(embedded_stack: MeterlineProcess) -> None:
    meter = Meter(
        url=embedded_stack.url,
        source="/tests/emitter/chaos",
        batch_size=100,
        flush_interval=0.05,
        max_queue=EVENTS,
        max_backoff=1.0,
        timeout=2.0,
    )
    results: list[bool] = []
    errors: list[BaseException] = []

    def burst() -> None:
        try:
            for i in range(EVENTS):
                results.append(
                    meter.track_units("page", i % 7 + 1, customer=f"c{i % 5}", id=f"chaos-{i}")
                )
                time.sleep(0.004)  # ~12 s of traffic, spanning the outage
        except BaseException as exc:  # the test fails on any app-visible error
            errors.append(exc)

    app = threading.Thread(target=burst)
    app.start()
    time.sleep(1.0)
    embedded_stack.stop()
    time.sleep(10.0)
    embedded_stack.start()
    app.join(60)

    assert errors == []
    assert results == [True] * EVENTS  # nothing refused: the queue bound held the outage
    assert meter.flush(timeout=90)
    stats = meter.stats()
    assert (stats.sent, stats.dropped_queue_full, stats.lost_at_shutdown, stats.rejected) == (
        EVENTS,
        0,
        0,
        0,
    )
    assert stats.retries > 0  # the outage was real
    embedded_stack.wait_stored(EVENTS, timeout_s=90)
    rows = embedded_stack.sql(
        "SELECT count() AS n, uniqExact(id) AS ids, sum(quantity) AS q FROM usage_events "
        "WHERE source = '/tests/emitter/chaos'"
    )
    expected_quantity = sum(i % 7 + 1 for i in range(EVENTS))
    assert (int(rows[0]["n"]), int(rows[0]["ids"])) == (EVENTS, EVENTS)
    assert Decimal(rows[0]["q"]) == expected_quantity
    meter.close()
