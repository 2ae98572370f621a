"""SIGKILL at each step of the processor's checkpoint order, restart, totals exact.

The kill is real (``METERLINE_CHAOS_KILL_AT`` makes the process SIGKILL itself at
that step of its 3rd batch), the restart runs on the same data folder, and the
client retries whatever was not acknowledged, as a real one would.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MeterlineFactory
from tests.support.chaos import POINTS
from tests.support.events import ground_truth, make_events, stored_totals, totals_query
from tests.support.stack import MeterlineProcess


def _send(stack: MeterlineProcess, batches: list[list[dict]]) -> list[list[dict]]:
    """Post each batch once; return the ones that were not acknowledged."""
    unacknowledged = []
    for batch in batches:
        try:
            ok = stack.post(batch).status_code == 202
        except httpx.HTTPError:
            ok = False
        if not ok:
            unacknowledged.append(batch)
    return unacknowledged


# "-pipelined": the writer thread (METERLINE_PROCESSOR_PIPELINE=true, the default);
# without: one thread (false). Both forms on both logs.
CASES = [(log, point) for log in ("embedded", "embedded-pipelined") for point in POINTS] + [
    pytest.param(log, point, marks=pytest.mark.kafka)
    for point in ("mid_insert", "torn_insert", "after_insert")
    for log in ("kafka", "kafka-pipelined")
]


@pytest.mark.parametrize(("log", "point"), CASES)
def test_kill_at_each_checkpoint_step_then_restart_keeps_totals_exact(
    log: str,
    point: str,
    meterline_factory: MeterlineFactory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = {"METERLINE_LOG": log.removesuffix("-pipelined")}
    env["METERLINE_PROCESSOR_PIPELINE"] = "true" if log.endswith("-pipelined") else "false"
    if log.startswith("kafka"):
        topic = f"meterline.chaos.{point}.{tmp_path.name[-12:]}".replace("_", "-")
        env |= {
            "METERLINE_KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
            "METERLINE_TOPIC": topic,
            "METERLINE_CONSUMER_GROUP": f"g-{topic}",
            # The killed member's partitions return after the session timeout: keep it short.
            "METERLINE_KAFKA_EXTRA": '{"session.timeout.ms": 6000}',
        }
    events = make_events(1500, seed=len(point))
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    stack = meterline_factory(
        tmp_path / "data",
        **env,
        METERLINE_PARTITIONS="3",
        METERLINE_BATCH_MAX_EVENTS="200",
        METERLINE_BATCH_MAX_WAIT_S="0.05",
        METERLINE_CHAOS_KILL_AT=f"{point}:3",
    )
    pending = []
    for batch in batches:
        pending += _send(stack, [batch])
        time.sleep(0.05)
    assert stack.proc is not None
    stack.proc.wait(60)
    assert stack.proc.returncode == -9, "the process was meant to die by SIGKILL"

    del stack.env["METERLINE_CHAOS_KILL_AT"]
    # The replay is cut at other offsets, so it carries other dedup tokens: only
    # the event-identity guard can stop it storing what the crash left stored.
    stack.env["METERLINE_BATCH_MAX_EVENTS"] = "130"
    stack.start()
    while pending:
        pending = _send(stack, pending)
    stack.wait_caught_up()
    truth = ground_truth(events)
    assert stack.stored() == len(events)
    # Each id stored once, and in the dedupe index (a torn write leaves it short).
    counts = stack.sql(
        "SELECT uniqExact(tenant, source, id) AS unique_ids, "
        "(SELECT count() FROM usage_event_ids FINAL) AS indexed FROM usage_events"
    )[0]
    assert {k: int(v) for k, v in counts.items()} == {
        "unique_ids": len(events),
        "indexed": len(events),
    }
    assert stored_totals(stack.sql(totals_query("usage_events"))) == truth
    assert stored_totals(stack.sql(totals_query("usage_meters"))) == truth
