"""``usage_meters_1h_tenant`` and ``usage_meters_1d_tenant`` (schemas/sql/122, 123) hold
exactly the minute meters summed by UTC hour / day without ``subject``: after the backfill
of a database that had data, after the backfill runs again, under a retried INSERT,
under a second 120 backfill (the chained-view trap they are built to avoid), and after
verify's repairs; verify names any difference."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.verify import (
    repair_at_start,
    repair_hours,
    repair_tenant_days,
    repair_tenant_hours,
    verify_tenant_days,
    verify_tenant_hours,
)
from sinks import ddl
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate
from tests.sinks.test_hourly_meters import (
    COMPARED,
    HOUR_MS,
    T0,
    batch,
    unguarded,
    upgrade_with_old_data,
)

DB = "hours"  # the name test_hourly_meters' helpers (unguarded) read from
KEYS = "tenant, model, feature, provider, type, unit"
HOURS, DAYS = "usage_meters_1h_tenant", "usage_meters_1d_tenant"
SPAN = (T0 - HOUR_MS, T0 + 40 * HOUR_MS)


def summed(engine: ChdbEngine, table: str, grain: str) -> list[dict[str, Any]]:
    """``table`` by UTC ``grain`` (hour or day) and the dimensions without subject."""
    start = {
        "hour": "toStartOfHour(window_start)",
        "day": "toStartOfDay(window_start, 'UTC')",
    }[grain]
    # The minute rows as stored (projection off): the independent side.
    extra = " SETTINGS optimize_use_projections = 0" if table == "usage_meters" else ""
    return engine.sql.query_rows(
        f"SELECT {start} AS bucket, {KEYS}, {COMPARED} FROM {DB}.{table} "
        f"GROUP BY bucket, {KEYS} ORDER BY bucket, {KEYS}{extra}"
    )


def state(engine: ChdbEngine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return summed(engine, HOURS, "hour"), summed(engine, DAYS, "day")


def consistent(engine: ChdbEngine) -> bool:
    """Both tenant-wide tables equal the minutes summed without subject."""
    return state(engine) == (
        summed(engine, "usage_meters", "hour"),
        summed(engine, "usage_meters", "day"),
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path / "chdb", DB)
    yield chdb
    chdb.close()


@pytest.fixture
def upgraded(engine: ChdbEngine, monkeypatch: pytest.MonkeyPatch) -> ChdbEngine:
    """A database migrated to 110 that took three batches, then migrated to the end."""
    return upgrade_with_old_data(engine, monkeypatch)


def test_backfill_makes_the_tenant_tables_equal_the_minutes_without_subject(
    upgraded: ChdbEngine,
) -> None:
    hours, days = state(upgraded)
    assert consistent(upgraded)
    assert sum(int(r["events"]) for r in hours) == sum(int(r["events"]) for r in days) == 1200
    # Fewer rows than the subject table: three subjects folded into one row per group.
    subject_hours = upgraded.sql.scalar(
        f"SELECT count() FROM (SELECT 1 FROM {DB}.usage_meters_1h "
        "GROUP BY tenant, window_start, subject, model, feature, provider, type, unit)"
    )
    assert 0 < len(hours) < int(subject_hours or 0)
    assert verify_tenant_hours(upgraded.sql, *SPAN) == []
    assert verify_tenant_days(upgraded.sql, *SPAN) == []


def test_the_tenant_backfills_run_again_change_nothing(upgraded: ChdbEngine) -> None:
    # A crash after the backfill, before the file is recorded: every statement again.
    before = state(upgraded)
    for file in [f for f in ddl.files(DB) if f.version in (122, 123)]:
        for statement in file.statements:
            upgraded.run_sql(statement, "CSV")
    assert state(upgraded) == before
    assert migrate(upgraded) == []
    assert state(upgraded) == before


def test_the_tenant_backfill_token_drops_a_second_backfill_that_passed_the_guard(
    upgraded: ChdbEngine,
) -> None:
    before = state(upgraded)
    upgraded.run_sql(unguarded(122, HOURS), "CSV")
    upgraded.run_sql(unguarded(123, DAYS), "CSV")
    assert state(upgraded) == before


def test_a_late_second_hour_backfill_does_not_reach_the_tenant_tables(
    upgraded: ChdbEngine,
) -> None:
    # The trap of chained views (test_hourly_meters pins it for 120 -> 121): a dropped
    # 120 block still reaches usage_meters_1h's own views. The tenant tables are fed
    # from the minutes, not from the hours, so they stay exact.
    before = state(upgraded)
    upgraded.run_sql(unguarded(120, "usage_meters_1h"), "CSV")
    assert state(upgraded) == before
    assert consistent(upgraded)


def test_new_inserts_reach_the_tenant_tables_once_even_when_retried(
    upgraded: ChdbEngine,
) -> None:
    writer = upgraded.writer()
    writer.insert(batch([f"new-{i}" for i in range(300)], 23), "new-batch")
    writer.insert(batch([f"new-{i}" for i in range(300)], 23), "new-batch")  # a retry
    hours, days = state(upgraded)
    assert consistent(upgraded)
    assert sum(int(r["events"]) for r in hours) == sum(int(r["events"]) for r in days) == 1500


def test_a_fresh_database_fills_the_tenant_tables_from_its_first_insert(
    engine: ChdbEngine,
) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"f-{i}" for i in range(200)]), "fresh")
    assert consistent(engine)
    assert engine.sql.scalar(f"SELECT sum(events) FROM {DB}.{DAYS}") == 200


def test_an_hour_repair_of_the_subject_table_does_not_reach_the_tenant_tables(
    engine: ChdbEngine,
) -> None:
    # repair_hours writes its correction into usage_meters_1h only; the tenant tables,
    # fed from the minutes, already had that row and must not count it twice.
    migrate(engine)
    engine.writer().insert(batch([f"h-{i}" for i in range(100)]), "h")
    engine.run_sql(f"DETACH TABLE {DB}.usage_meters_1h_mv", "CSV")
    engine.sql.query_raw(
        f"INSERT INTO {DB}.usage_meters (tenant, window_start, subject, input_tokens) "
        "VALUES ('t1', toDateTime('2025-01-01 03:59:00', 'UTC'), 'acme', 9)",
        "CSV",
    )
    engine.run_sql(f"ATTACH TABLE {DB}.usage_meters_1h_mv", "CSV")
    assert repair_hours(engine.sql, *SPAN) == []
    assert consistent(engine)


@pytest.mark.parametrize(
    ("view", "verify", "repair", "bucket"),
    [
        (f"{HOURS}_mv", verify_tenant_hours, repair_tenant_hours, "2025-01-01 03:00:00"),
        (f"{DAYS}_mv", verify_tenant_days, repair_tenant_days, "2025-01-01 00:00:00"),
    ],
)
def test_verify_names_a_tenant_hour_or_day_short_of_its_minutes_and_repair_mends_it(
    engine: ChdbEngine, view: str, verify: Any, repair: Any, bucket: str
) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"s-{i}" for i in range(100)]), "s")
    # An INSERT torn between its meter part and the tenant table's part.
    engine.run_sql(f"DETACH TABLE {DB}.{view}", "CSV")
    engine.sql.query_raw(
        f"INSERT INTO {DB}.usage_meters (tenant, window_start, subject, model, "
        "input_tokens, cost_usd) VALUES ('t1', toDateTime('2025-01-01 03:59:00', 'UTC'), "
        "'acme', 'claude', 9, 0.000000000002)",
        "CSV",
    )
    engine.run_sql(f"ATTACH TABLE {DB}.{view}", "CSV")
    differences = verify(engine.sql, *SPAN)
    assert {(d.group["window_start"], d.group["model"], d.column) for d in differences} == {
        (bucket, "claude", "input_tokens"),
        (bucket, "claude", "cost_usd"),
    }
    assert all("subject" not in d.group for d in differences)
    assert repair(engine.sql, *SPAN) == []
    assert verify(engine.sql, *SPAN) == []
    assert consistent(engine)


def recent(ids: list[str], minute_step: int = 17) -> dict[str, list[Any]]:
    """``batch`` as the processor writes it: processed now (start-up repair looks only
    at the events processed in its last minutes)."""
    cols = batch(ids, minute_step)
    cols["processed_at"] = [int(time.time() * 1000)] * len(ids)
    return cols


@pytest.mark.parametrize("view", [f"{HOURS}_mv", f"{DAYS}_mv"])
def test_start_up_repair_mends_a_torn_tenant_hour_or_day(engine: ChdbEngine, view: str) -> None:
    migrate(engine)
    writer = engine.writer()
    writer.insert(recent([f"a-{i}" for i in range(100)]), "a")
    # The processor's batch whose tenant-table part was lost (view detached).
    engine.run_sql(f"DETACH TABLE {DB}.{view}", "CSV")
    writer.insert(recent([f"b-{i}" for i in range(50)], 29), "b")
    engine.run_sql(f"ATTACH TABLE {DB}.{view}", "CSV")
    assert not consistent(engine)
    assert repair_at_start(engine.sql).refused == []
    assert consistent(engine)


def test_an_hour_above_its_minutes_is_named_and_left_for_a_human(engine: ChdbEngine) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"o-{i}" for i in range(60)]), "o")
    engine.run_sql(
        f"INSERT INTO {DB}.{HOURS} (tenant, window_start, model, events) "
        "VALUES ('t1', toDateTime('2025-01-01 01:00:00', 'UTC'), 'claude', 3)",
        "CSV",
    )
    refused = repair_tenant_hours(engine.sql, *SPAN)
    assert [(d.group["window_start"], d.column, d.in_meters - d.from_events) for d in refused] == [
        ("2025-01-01 01:00:00", "events", 3)
    ]
    assert len(verify_tenant_hours(engine.sql, *SPAN)) == 1
