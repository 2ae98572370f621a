"""A record that SIGKILLs ``meterline run`` each time it is handled does not wedge its partition.

The kill is real (the chaos hooks SIGKILL the process when it handles a record
holding a marker, as a native crash on that record would); the supervisor here
is the test, restarting the process on the same data folder after each death.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson

from core.log.embedded import EmbeddedConsumer
from processor.attempts import DEFAULT_LIMIT
from tests.conftest import MeterlineFactory
from tests.support.events import ground_truth, make_events, stored_totals, totals_query


def test_a_record_that_kills_the_process_is_dead_lettered_after_the_limit_of_restarts(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    good = make_events(15, seed=41)
    killer = dict(good[0], id="kills-the-process")
    stack = meterline_factory(
        data_dir,
        METERLINE_LOG="embedded",
        METERLINE_PARTITIONS="1",
        METERLINE_CHAOS_KILL_AT="",  # no checkpoint kill: only the record's
        METERLINE_CHAOS_KILL_ON="kills-the-process",
    )
    assert stack.post([*good[:8], killer, *good[8:]]).status_code == 202
    assert stack.proc is not None
    restarts = 0
    while True:
        stack.wait_until(
            lambda: stack.proc is not None and (stack.proc.poll() is not None or stack.lag() == 0),
            60,
            "the process to die or catch up",
        )
        if stack.proc.poll() is None:
            break
        assert stack.proc.returncode == -9, "the process was meant to die by SIGKILL"
        restarts += 1
        assert restarts <= math.ceil(math.log2(len(good) + 1)) + DEFAULT_LIMIT
        stack.start()

    assert restarts >= DEFAULT_LIMIT
    truth = ground_truth(good)
    assert stored_totals(stack.sql(totals_query("usage_events"))) == truth
    assert stored_totals(stack.sql(totals_query("usage_meters"))) == truth
    stack.stop()
    letters = EmbeddedConsumer(data_dir / "log.sqlite3", "meterline.usage.dlq", "t").poll(10, 1.0)
    assert [
        (orjson.loads(r.value)["id"], dict(r.headers)["meterline-dlq-reason"]) for r in letters
    ] == [("kills-the-process", b"crashed_processor")]
