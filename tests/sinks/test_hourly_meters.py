"""``usage_meters_1h`` (schemas/sql/120_usage_meters_1h.sql) holds exactly the minute meters
summed by hour: after the backfill of a database that had data, after the backfill runs
again, under a retried INSERT, and after verify's repairs; verify names any difference."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from processor.verify import (
    repair_at_start,
    repair_days,
    repair_hours,
    verify_days,
    verify_hours,
)
from sinks import ddl
from sinks.base import EVENT_COLUMNS
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

DB = "hours"
HOUR_MS = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
COMPARED = ", ".join(
    f"toString(sum({c})) AS {c}"
    for c in ("events", "input_tokens", "output_tokens", "quantity", "cost_usd", "price_usd")
)
KEYS = "tenant, subject, model, feature, provider, type, unit"


def batch(ids: list[str], minute_step: int = 17) -> dict[str, list[Any]]:
    """Events spread over several hours and groups, with 12-decimal money."""
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    cols = {name: [defaults[kind]] * len(ids) for name, kind in EVENT_COLUMNS.items()}
    n = len(ids)
    cols["id"] = ids
    cols["tenant"] = ["t1" if i % 5 else "t2" for i in range(n)]
    cols["source"] = ["/s"] * n
    cols["type"] = ["io.meterline.usage.tokens"] * n
    cols["unit"] = ["token"] * n
    cols["subject"] = [("acme", "globex", "initech")[i % 3] for i in range(n)]
    cols["model"] = [("gpt-4o", "claude")[i % 2] for i in range(n)]
    cols["time"] = [T0 + (i * minute_step * 60_000 + i * 1_001) % (30 * HOUR_MS) for i in range(n)]
    cols["input_tokens"] = [1000 + i for i in range(n)]
    cols["output_tokens"] = [7 * i for i in range(n)]
    cols["quantity"] = [Decimal(1000 + i) for i in range(n)]
    cols["cost_usd"] = [Decimal(i * 7919 + 1) / 10**12 for i in range(n)]
    cols["price_usd"] = [Decimal(i * 104_729 + 3) / 10**12 for i in range(n)]
    cols["priced"] = [1] * n
    return cols


def by_day(engine: ChdbEngine, table: str) -> list[dict[str, Any]]:
    day = "window_start" if table == "usage_meters_1d" else "toStartOfDay(window_start, 'UTC')"
    return engine.sql.query_rows(
        f"SELECT {day} AS day, {KEYS}, {COMPARED} FROM {DB}.{table} "
        f"GROUP BY day, {KEYS} ORDER BY day, {KEYS} SETTINGS optimize_use_projections = 0"
    )


def consistent(engine: ChdbEngine) -> bool:
    """Hours equal the minutes, and days equal the minutes (through the hours too)."""
    return (
        by_hour(engine, "usage_meters_1h") == by_hour(engine, "usage_meters")
        and by_day(engine, "usage_meters_1d") == by_day(engine, "usage_meters")
        and by_day(engine, "usage_meters_1h") == by_day(engine, "usage_meters")
    )


def by_hour(engine: ChdbEngine, table: str) -> list[dict[str, Any]]:
    hour = "window_start" if table == "usage_meters_1h" else "toStartOfHour(window_start)"
    # Minute rows as stored (projection off): the independent side.
    extra = " SETTINGS optimize_use_projections = 0" if table == "usage_meters" else ""
    return engine.sql.query_rows(
        f"SELECT {hour} AS hour, {KEYS}, {COMPARED} FROM {DB}.{table} "
        f"GROUP BY hour, {KEYS} ORDER BY hour, {KEYS}{extra}"
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path / "chdb", DB)
    yield chdb
    chdb.close()


def upgrade_with_old_data(engine: ChdbEngine, monkeypatch: pytest.MonkeyPatch) -> ChdbEngine:
    """A database migrated to 110 that took three batches, then migrated to the end."""
    real = ddl.files
    monkeypatch.setattr(
        ddl, "files", lambda db, tz="UTC": [f for f in real(db, tz) if f.version <= 110]
    )
    migrate(engine)
    assert not engine.sql.scalar(f"EXISTS TABLE {DB}.usage_meters_1h")
    writer = engine.writer()
    for n in range(3):  # several parts, groups spread over unmerged minute rows
        writer.insert(batch([f"old-{n}-{i}" for i in range(400)], 17 + n), f"old-{n}")
    monkeypatch.setattr(ddl, "files", real)
    # [:4]: later migrations (130, ...) run after these.
    assert [m.version for m in migrate(engine)][:4] == [120, 121, 122, 123]
    return engine


@pytest.fixture
def upgraded(engine: ChdbEngine, monkeypatch: pytest.MonkeyPatch) -> ChdbEngine:
    return upgrade_with_old_data(engine, monkeypatch)


def test_backfill_makes_the_hourly_table_equal_the_minutes_of_an_existing_database(
    upgraded: ChdbEngine,
) -> None:
    hours = by_hour(upgraded, "usage_meters_1h")
    assert hours == by_hour(upgraded, "usage_meters")
    assert sum(int(r["events"]) for r in hours) == 1200
    assert consistent(upgraded)
    assert len(by_day(upgraded, "usage_meters_1d")) < len(hours)  # 30 hours: two days
    assert verify_hours(upgraded.sql, T0 - HOUR_MS, T0 + 40 * HOUR_MS) == []
    assert verify_days(upgraded.sql, T0 - HOUR_MS, T0 + 40 * HOUR_MS) == []


def test_the_backfill_run_again_changes_nothing(upgraded: ChdbEngine) -> None:
    # A crash after the backfill and before the file is recorded: the next start runs
    # every statement of the file again.
    before = by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")
    for file in [f for f in ddl.files(DB) if f.version in (120, 121)]:
        for statement in file.statements:
            upgraded.run_sql(statement, "CSV")
    assert (by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")) == before
    assert migrate(upgraded) == []
    assert (by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")) == before


def test_the_backfill_token_drops_a_second_backfill_that_passed_the_guard(
    upgraded: ChdbEngine,
) -> None:
    # Two processes migrating one server: both may find the table empty. The second,
    # identical INSERT carries the same token and is dropped as a duplicate block.
    before = by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")
    upgraded.run_sql(unguarded(121, "usage_meters_1d"), "CSV")
    assert (by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")) == before


def test_a_late_second_hour_backfill_doubles_the_days_and_verify_names_it(
    upgraded: ChdbEngine,
) -> None:
    # The limit of the token (docs/query.md): a second 120 backfill that lands after
    # 121 made the day view is dropped by the hours, but the engine still pushes the
    # block to the hours' views, and the days count it again. Only concurrent
    # migrations of a server can do this; verify must then name every such day.
    hours = by_hour(upgraded, "usage_meters_1h")
    upgraded.run_sql(unguarded(120, "usage_meters_1h"), "CSV")
    assert by_hour(upgraded, "usage_meters_1h") == hours
    differences = verify_days(upgraded.sql, T0, T0 + 30 * HOUR_MS)
    assert differences and all(d.in_meters == 2 * d.from_events for d in differences)
    assert len(repair_days(upgraded.sql, T0, T0 + 30 * HOUR_MS)) == len(differences)


def unguarded(version: int, table: str) -> str:
    (file,) = [f for f in ddl.files(DB) if f.version == version]
    backfill = file.statements[-1]
    out = backfill.replace(f"WHERE (SELECT count() FROM {DB}.{table}) = 0", "")
    assert out != backfill
    return out


def test_new_inserts_reach_the_hourly_table_once_even_when_retried(upgraded: ChdbEngine) -> None:
    writer = upgraded.writer()
    writer.insert(batch([f"new-{i}" for i in range(300)], 23), "new-batch")
    writer.insert(batch([f"new-{i}" for i in range(300)], 23), "new-batch")  # a retry
    hours = by_hour(upgraded, "usage_meters_1h")
    assert consistent(upgraded)
    assert sum(int(r["events"]) for r in hours) == 1500


def test_a_fresh_database_fills_the_hourly_table_from_its_first_insert(engine: ChdbEngine) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"f-{i}" for i in range(200)]), "fresh")
    assert consistent(engine)
    assert engine.sql.scalar(f"SELECT sum(events) FROM {DB}.usage_meters_1h") == 200


def test_a_meter_correction_reaches_the_hour_through_the_view(engine: ChdbEngine) -> None:
    # verify's start-up repair writes correction rows straight into usage_meters
    # (processor/verify.py repair_recent): the hour must get them too.
    migrate(engine)
    engine.writer().insert(batch([f"c-{i}" for i in range(50)]), "c")
    engine.sql.query_raw(
        f"INSERT INTO {DB}.usage_meters (tenant, window_start, subject, input_tokens, cost_usd) "
        "VALUES ('t1', toDateTime('2025-01-01 00:07:00', 'UTC'), 'acme', 5, 0.000000000001)",
        "CSV",
    )
    assert consistent(engine)


def test_verify_names_an_hour_short_of_its_minutes_and_repair_mends_it(engine: ChdbEngine) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"s-{i}" for i in range(100)]), "s")
    # An INSERT torn between its meter part and its hour part: minutes without the hour
    # (the view detached while a meter row goes in).
    engine.run_sql(f"DETACH TABLE {DB}.usage_meters_1h_mv", "CSV")
    engine.sql.query_raw(
        f"INSERT INTO {DB}.usage_meters (tenant, window_start, subject, input_tokens, cost_usd) "
        "VALUES ('t1', toDateTime('2025-01-01 03:59:00', 'UTC'), 'acme', 9, 0.000000000002)",
        "CSV",
    )
    engine.run_sql(f"ATTACH TABLE {DB}.usage_meters_1h_mv", "CSV")
    differences = verify_hours(engine.sql, T0, T0 + 30 * HOUR_MS)
    assert {(d.group["window_start"], d.group["subject"], d.column) for d in differences} == {
        ("2025-01-01 03:00:00", "acme", "input_tokens"),
        ("2025-01-01 03:00:00", "acme", "cost_usd"),
    }
    assert repair_hours(engine.sql, T0, T0 + 30 * HOUR_MS) == []
    assert verify_hours(engine.sql, T0, T0 + 30 * HOUR_MS) == []
    assert consistent(engine)  # the hour's correction reached the day through its view


def test_a_day_short_of_its_hours_is_named_and_mended(engine: ChdbEngine) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"d-{i}" for i in range(100)]), "d")
    engine.run_sql(f"DETACH TABLE {DB}.usage_meters_1d_mv", "CSV")
    engine.sql.query_raw(
        f"INSERT INTO {DB}.usage_meters_1h (tenant, window_start, subject, events) "
        "VALUES ('t2', toDateTime('2025-01-01 05:00:00', 'UTC'), 'globex', 4)",
        "CSV",
    )
    engine.run_sql(f"ATTACH TABLE {DB}.usage_meters_1d_mv", "CSV")
    differences = verify_days(engine.sql, T0, T0 + 30 * HOUR_MS)
    assert [(d.group["window_start"], d.group["subject"], d.column) for d in differences] == [
        ("2025-01-01 00:00:00", "globex", "events")
    ]
    assert repair_days(engine.sql, T0, T0 + 30 * HOUR_MS) == []
    assert verify_days(engine.sql, T0, T0 + 30 * HOUR_MS) == []


def test_an_hour_above_its_minutes_is_named_and_left_for_a_human(engine: ChdbEngine) -> None:
    migrate(engine)
    engine.writer().insert(batch([f"o-{i}" for i in range(60)]), "o")
    # A backfill counted twice (a rolling upgrade): the hour is above its minutes.
    engine.run_sql(
        f"INSERT INTO {DB}.usage_meters_1h (tenant, window_start, subject, model, events) "
        "VALUES ('t1', toDateTime('2025-01-01 01:00:00', 'UTC'), 'acme', 'claude', 3)",
        "CSV",
    )
    refused = repair_hours(engine.sql, T0, T0 + 30 * HOUR_MS)
    assert [(d.group["window_start"], d.column, d.in_meters - d.from_events) for d in refused] == [
        ("2025-01-01 01:00:00", "events", 3)
    ]
    assert len(verify_hours(engine.sql, T0, T0 + 30 * HOUR_MS)) == 1


def test_start_up_repair_leaves_a_consistent_database_untouched(upgraded: ChdbEngine) -> None:
    before = by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")
    assert repair_at_start(upgraded.sql).refused == []
    assert (by_hour(upgraded, "usage_meters_1h"), by_day(upgraded, "usage_meters_1d")) == before
