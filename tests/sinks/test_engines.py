"""Every engine (chDB, clickhouse-connect over HTTP, a real server): idempotent migrations,
exact decimals and milliseconds, the dedup token, stored keys, billing runs, verify."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.errors import StoreError
from sinks import ddl
from sinks.base import EVENT_COLUMNS, Engine, EventTable, billing_run
from sinks.migrations import migrate


def columns(ids: list[str], cost: str = "0.000000000001") -> dict[str, list[Any]]:
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    cols = {name: [defaults[kind]] * len(ids) for name, kind in EVENT_COLUMNS.items()}
    cols["id"] = ids
    cols["tenant"] = ["t"] * len(ids)
    cols["source"] = ["/s"] * len(ids)
    cols["subject"] = ["acme"] * len(ids)
    cols["time"] = [1_735_689_600_123] * len(ids)
    cols["input_tokens"] = [10] * len(ids)
    cols["cost_usd"] = [Decimal(cost)] * len(ids)
    cols["metadata"] = [{"k": "v"}] * len(ids)
    return cols


def test_migrate_again_applies_nothing_and_each_file_is_recorded_once(engine: Engine) -> None:
    migrate(engine)  # brings the rollup views back to UTC if a test changed them
    assert migrate(engine) == []
    versions = engine.sql.query_rows(
        "SELECT version, count() AS n FROM schema_migrations FINAL GROUP BY version"
    )
    assert {int(r["version"]) for r in versions} == {f.version for f in ddl.files("mtest")}
    assert {int(r["n"]) for r in versions} == {1}


def test_migrate_is_idempotent(engine: Engine) -> None:
    migrate(engine)
    migrate(engine, "Europe/Paris")
    tables = {
        r["name"]
        for r in engine.sql.query_rows("SELECT name FROM system.tables WHERE database = 'mtest'")
    }
    assert {
        "usage_events",
        "usage_event_ids",
        "usage_meters",
        "usage_meters_hourly",
        "usage_meters_daily",
        "usage_meters_monthly",
    } <= tables


def test_insert_keeps_milliseconds_decimals_and_metadata(engine: Engine) -> None:
    engine.writer().insert(columns(["a1"], "12345678901234567890.123456789012"), "tok-a1")
    row = engine.sql.query_rows(
        "SELECT toString(time) AS t, cost_usd, metadata['k'] AS k FROM usage_events WHERE id = 'a1'"
    )[0]
    assert row == {
        "t": "2025-01-01 00:00:00.123",
        "cost_usd": Decimal("12345678901234567890.123456789012"),
        "k": "v",
    }


def test_same_dedup_token_inserts_once_into_events_and_meters(engine: Engine) -> None:
    engine.writer().insert(columns(["d1", "d2"]), "tok-d")
    engine.writer().insert(columns(["d1", "d2"]), "tok-d")
    assert engine.sql.scalar("SELECT count() FROM usage_events WHERE id IN ('d1', 'd2')") == 2
    meters = engine.sql.scalar(
        "SELECT sum(input_tokens) FROM usage_meters WHERE subject = 'acme' "
        "AND window_start = toDateTime('2025-01-01 00:00:00', 'UTC')"
    )
    events = engine.sql.scalar(
        "SELECT sum(input_tokens) FROM usage_events WHERE subject = 'acme' "
        "AND toStartOfMinute(time) = toDateTime('2025-01-01 00:00:00', 'UTC')"
    )
    assert meters == events


def test_stored_keys_finds_exactly_the_stored_identities(engine: Engine) -> None:
    engine.writer().insert(columns(["k1"]), "tok-k1")
    found = engine.key_lookup().stored_keys(
        [("t", "/s", "k1"), ("t", "/other", "k1"), ("t2", "/s", "k1"), ("t", "/s", "k9")]
    )
    assert found == {("t", "/s", "k1")}


def test_verify_passes_on_consistent_data_and_catches_a_corrupted_meter(engine: Engine) -> None:
    from processor.verify import verify

    start, end = 1_735_689_600_000, 1_735_689_660_000
    engine.writer().insert(columns(["v1", "v2"]), "tok-v")
    assert verify(engine.sql, start, end) == []
    # Someone "fixes" a meter by hand: verify must name the group and the column.
    engine.sql.query_raw(
        "INSERT INTO usage_meters (tenant, window_start, subject, input_tokens) "
        "VALUES ('t', toDateTime('2025-01-01 00:00:00', 'UTC'), 'acme', 5)"
    )
    differences = verify(engine.sql, start, end)
    assert [(d.group["subject"], d.column, d.from_events, d.in_meters) for d in differences] == [
        ("acme", "input_tokens", differences[0].from_events, differences[0].from_events + 5)
    ]
    assert differences[0].group["window_start"] == "2025-01-01 00:00:00"


def test_a_billing_run_writer_and_lookup_see_only_their_run(engine: Engine) -> None:
    run_a, run_b = engine.writer(billing_run("a")), engine.writer(billing_run("b"))
    run_a.insert(columns(["r1", "r2"], "0.000000000007"), "tok-run-a")
    run_b.insert(columns(["r2"]), "tok-run-b")
    assert engine.key_lookup(billing_run("a")).stored_keys(
        [("t", "/s", "r1"), ("t", "/s", "r2"), ("t", "/s", "r3")]
    ) == {("t", "/s", "r1"), ("t", "/s", "r2")}
    assert engine.key_lookup(billing_run("b")).stored_keys([("t", "/s", "r1")]) == set()
    # A billing run never reaches the live tables (what is billed).
    assert engine.key_lookup().stored_keys([("t", "/s", "r1")]) == set()
    assert engine.sql.scalar("SELECT sum(cost_usd) FROM billing_run_events WHERE run = 'a'") == (
        Decimal("0.000000000014")
    )


def test_stored_keys_of_a_full_batch_come_back_exactly(engine: Engine) -> None:
    # METERLINE_BATCH_MAX_EVENTS' default, ids as long as providers' (~2 MB of them):
    # a server parses at most max_query_size (256 KiB) of a statement, so the lookup
    # must not put them all in one.
    ids = [f"chatcmpl-{i:032x}" for i in range(50_000)]
    engine.writer().insert(columns(ids[::2]), "tok-big")
    found = engine.key_lookup().stored_keys([("t", "/s", i) for i in ids])
    assert found == {("t", "/s", i) for i in ids[::2]}


def test_an_insert_values_statement_runs_as_written(engine: Engine) -> None:
    # replay records its run this way; clickhouse-connect's raw_query(fmt=) appended
    # "FORMAT x" to it, which the VALUES parser refused.
    engine.sql.query_raw(
        "INSERT INTO billing_runs VALUES ('run-v', 'book', "
        "toDateTime64('2025-01-01 00:00:00', 3, 'UTC'), "
        "toDateTime64('2025-01-02 00:00:00', 3, 'UTC'), now64(3, 'UTC'))",
        "CSV",
    )
    assert engine.sql.scalar("SELECT count() FROM billing_runs WHERE run = 'run-v'") == 1


def test_a_statement_with_its_own_format_keeps_it(engine: Engine) -> None:
    assert engine.sql.query_raw("SELECT 1 AS x FORMAT CSV", "JSONCompact") == b"1\n"


def test_sql_the_engine_refuses_is_a_store_error_naming_the_cause(engine: Engine) -> None:
    with pytest.raises(StoreError, match="UNKNOWN_TABLE"):
        engine.sql.query_rows("SELECT * FROM no_such_table")


def test_a_write_the_engine_refuses_is_a_store_error(engine: Engine) -> None:
    gone = engine.writer(EventTable("no_such_events", "no_such_ids"))
    with pytest.raises(StoreError, match="no_such_events"):
        gone.insert(columns(["gone-1"]), "tok-gone")
