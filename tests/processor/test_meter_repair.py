"""A crash between the usage_events part and the meter view's part is repaired at start-up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from processor.verify import repair_recent, verify
from sinks.base import EVENT_COLUMNS
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

NOW_MS = int(time.time() * 1000)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ChdbEngine]:
    sink = ChdbEngine(tmp_path / "chdb", "mrepair")
    migrate(sink)
    yield sink
    sink.close()


def columns(ids: list[str], minute: int) -> dict[str, list[Any]]:
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    cols = {name: [defaults[kind]] * len(ids) for name, kind in EVENT_COLUMNS.items()}
    cols.update(
        id=ids,
        tenant=["t"] * len(ids),
        source=["/s"] * len(ids),
        subject=["acme"] * len(ids),
        model=["gpt-4o"] * len(ids),
        time=[NOW_MS - NOW_MS % 60_000 - minute * 60_000 + 5] * len(ids),
        processed_at=[NOW_MS] * len(ids),
        input_tokens=[7] * len(ids),
        cost_usd=[Decimal("0.000000000003")] * len(ids),
    )
    return cols


def test_missing_meter_rows_after_a_torn_insert_are_restored_exactly(sink: ChdbEngine) -> None:
    sink.writer().insert(columns(["a", "b"], 1), "ok")
    # Simulate the crash: the events part landed, the view's part did not.
    sink.sql.query_raw("DETACH TABLE usage_meters_mv", "CSV")
    sink.writer().insert(columns(["c", "d", "e"], 1) | {}, "torn-1")
    sink.writer().insert(columns(["f"], 3), "torn-2")
    sink.sql.query_raw("ATTACH TABLE usage_meters_mv", "CSV")
    assert len(verify(sink.sql, 0, NOW_MS + 60_000)) > 0

    assert repair_recent(sink.sql, NOW_MS - 60_000) == []
    assert verify(sink.sql, 0, NOW_MS + 60_000) == []
    assert sink.sql.scalar("SELECT sum(events) FROM usage_meters") == 6
    assert sink.sql.scalar("SELECT sum(cost_usd) FROM usage_meters") == Decimal("0.000000000018")
    # Idempotent: a second start-up finds nothing to repair.
    repair_recent(sink.sql, NOW_MS - 60_000)
    assert sink.sql.scalar("SELECT sum(events) FROM usage_meters") == 6


def test_two_identical_corrections_of_one_minute_are_both_kept(sink: ChdbEngine) -> None:
    # Two torn INSERTs, each with one event of the same group and the same usage, each
    # repaired at its own start-up: the two correction rows are byte for byte the same
    # VALUES. usage_meters dedups blocks (its dedup window, for the processor's token),
    # so the second correction must not be taken for a retried insert and dropped.
    for event in ("torn-a", "torn-b"):
        sink.sql.query_raw("DETACH TABLE usage_meters_mv", "CSV")
        sink.writer().insert(columns([event], 1), event)
        sink.sql.query_raw("ATTACH TABLE usage_meters_mv", "CSV")
        assert repair_recent(sink.sql, NOW_MS - 60_000) == []

    assert verify(sink.sql, 0, NOW_MS + 60_000) == []
    assert sink.sql.scalar("SELECT sum(events) FROM usage_meters") == 2


def test_a_meter_above_its_events_is_reported_not_changed(sink: ChdbEngine) -> None:
    sink.writer().insert(columns(["a"], 2), "ok")
    sink.sql.query_raw(
        "INSERT INTO usage_meters (tenant, window_start, subject, model, events) "
        "SELECT 't', toStartOfMinute(fromUnixTimestamp64Milli("
        f"toInt64({NOW_MS - 120_000}), 'UTC')), 'acme', 'gpt-4o', 1",
        "CSV",
    )
    refused = repair_recent(sink.sql, NOW_MS - 60_000)
    assert [(d.column, d.from_events, d.in_meters) for d in refused] == [("events", 1, 2)]


def test_daily_and_monthly_rollups_follow_the_billing_timezone(tmp_path: Path) -> None:
    sink = ChdbEngine(tmp_path / "tz", "mtz")
    migrate(sink, "Asia/Tokyo")
    try:
        cols = columns(["late-evening"], 0)
        cols["time"] = [1_738_341_000_000]  # 2025-01-31 16:30 UTC = 2025-02-01 01:30 in Tokyo
        sink.writer().insert(cols, "tz")
        assert sink.sql.query_rows("SELECT toString(day) AS d, events FROM usage_meters_daily") == [
            {"d": "2025-02-01", "events": 1}
        ]
        assert sink.sql.query_rows("SELECT toString(month) AS m FROM usage_meters_monthly") == [
            {"m": "2025-02-01"}
        ]
        assert sink.sql.query_rows("SELECT toString(hour) AS h FROM usage_meters_hourly") == [
            {"h": "2025-01-31 16:00:00"}
        ]
    finally:
        sink.close()


def test_repair_looks_only_at_the_minutes_of_recently_written_events(sink: ChdbEngine) -> None:
    old = columns(["old"], 60)
    old["processed_at"] = [NOW_MS - 86_400_000]  # written yesterday
    sink.sql.query_raw("DETACH TABLE usage_meters_mv", "CSV")
    sink.writer().insert(old, "old")  # a torn window, but not a recent one
    sink.sql.query_raw("ATTACH TABLE usage_meters_mv", "CSV")
    sink.writer().insert(columns(["new"], 1), "new")
    repair_recent(sink.sql, NOW_MS - 60_000)
    # Start-up repair left yesterday's window alone (it is for `meterline verify`).
    assert [d.column for d in verify(sink.sql, 0, NOW_MS + 60_000)][:1] == ["events"]
    assert sink.sql.scalar("SELECT sum(events) FROM usage_meters") == 1
