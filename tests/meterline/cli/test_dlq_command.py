"""``meterline dlq``: an operator finds a dead letter, fixes the cause, re-drives it once.

Through the real CLI, a real ``meterline run`` (embedded log, chDB) and its DLQ topic.
The fix here is one an operator really makes: a back-filled event older than the
dedupe horizon is dead-lettered; after widening the horizon, re-driving stores it,
and re-driving again stores nothing more.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.conftest import MeterlineFactory
from tests.support.cli import meterline_cli
from tests.support.stack import MeterlineProcess


def dlq(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return meterline_cli(data_dir, "dlq", *args)


def backfilled_event(days_ago: int) -> dict[str, object]:
    moment = datetime.now(UTC) - timedelta(days=days_ago)
    return {
        "specversion": "1.0",
        "id": "backfill-1",
        "source": "/billing/backfill",
        "type": "io.meterline.usage.units",
        "subject": "acme",
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {"unit": "page", "quantity": "3"},
    }


def stored(stack: MeterlineProcess) -> int:
    rows = stack.sql("SELECT count() AS n FROM usage_events WHERE id = 'backfill-1'")
    return int(rows[0]["n"])


def test_a_dead_letter_is_listed_shown_and_re_driven_exactly_once_after_the_fix(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    stack = meterline_factory(data_dir, METERLINE_LOG="embedded", METERLINE_STORE="chdb")
    assert stack.post([backfilled_event(days_ago=60)]).status_code == 202
    stack.wait_caught_up()

    listed = dlq(data_dir, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [(x["reason"], x["key"]) for x in letters] == [("beyond_dedupe_horizon", "backfill-1")]
    shown = dlq(data_dir, "show", letters[0]["at"])
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(orjson.loads(shown.stdout)["value"])["id"] == "backfill-1"
    assert dlq(data_dir, "redrive").returncode == 2  # no filter: refused, nothing sent
    assert stored(stack) == 0

    # The fix: a horizon that covers the back-fill (the dedupe keeps 90 days of ids).
    stack.stop()
    stack = meterline_factory(
        data_dir,
        METERLINE_LOG="embedded",
        METERLINE_STORE="chdb",
        METERLINE_DEDUPE_HORIZON_DAYS="90",
    )
    for _ in range(2):  # the second re-drive is absorbed by the dedupe
        redriven = dlq(data_dir, "redrive", "--reason", "beyond_dedupe_horizon")
        assert redriven.returncode == 0, redriven.stderr
        assert "re-drove 1 dead letters" in redriven.stdout
        stack.wait_caught_up()
        assert stored(stack) == 1
    stats = dlq(data_dir, "stats")
    assert "beyond_dedupe_horizon" in stats.stdout
