"""Migration 150: the dedupe lookup filters on usage_event_ids.key_hash first (issue 17).

The hash is only a prefilter, but a wrong one would be a missed duplicate (a double
count), so what must hold is that every stored identity is found through it: rows
written after the migration, and rows in parts written before it (an upgrade), whose
hash the engine computes on read until MATERIALIZE COLUMN has written it.
"""

from __future__ import annotations

from pathlib import Path

from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate, plan
from tests.sinks.test_engines import columns

DB = "khash"


def test_identities_stored_before_and_after_the_hash_column_are_all_found(
    tmp_path: Path,
) -> None:
    engine = ChdbEngine(tmp_path / "chdb", DB)
    migrate(engine)
    writer, lookup = engine.writer(), engine.key_lookup()
    try:
        # A database from before migration 150: its parts have no key_hash.
        engine.run_sql(f"ALTER TABLE {DB}.usage_event_ids DROP COLUMN key_hash", "CSV")
        before = [f"before-{i}" for i in range(3000)]
        writer.insert(columns(before), "tok-before")
        (migration,) = [m for m in plan(DB) if m.version == 150]
        for statement in migration.statements:
            engine.run_sql(statement, "CSV")
        after = [f"after-{i}" for i in range(3000)]
        writer.insert(columns(after), "tok-after")

        asked = [("t", "/s", i) for i in [*before, *after, *(f"absent-{i}" for i in range(3000))]]
        assert lookup.stored_keys(asked) == {("t", "/s", i) for i in [*before, *after]}
        # Same id, another source or tenant: another identity, not found.
        assert lookup.stored_keys([("t", "/other", "before-1"), ("u", "/s", "after-1")]) == set()
        expression = engine.sql.scalar(
            f"SELECT default_expression FROM system.columns WHERE database = '{DB}' "
            "AND table = 'usage_event_ids' AND name = 'key_hash'"
        )
        assert expression == "cityHash64(tenant, source, id)"
    finally:
        engine.close()


def test_a_stored_identity_whose_hash_equals_an_asked_one_is_not_answered(
    tmp_path: Path,
) -> None:
    # The SQL filters on the hash alone; the identity itself is compared in Python.
    # A 64-bit collision cannot be found by search, so the test plants one: a row
    # whose key_hash is that of another identity (DEFAULT instead of MATERIALIZED,
    # so that it can be written).
    engine = ChdbEngine(tmp_path / "chdb", DB)
    migrate(engine)
    try:
        engine.run_sql(f"ALTER TABLE {DB}.usage_event_ids DROP COLUMN key_hash", "CSV")
        engine.run_sql(
            f"ALTER TABLE {DB}.usage_event_ids ADD COLUMN key_hash UInt64 "
            "DEFAULT cityHash64(tenant, source, id)",
            "CSV",
        )
        engine.run_sql(
            f"INSERT INTO {DB}.usage_event_ids (tenant, source, id, key_hash) "
            "VALUES ('t', '/s', 'stored', cityHash64('t', '/s', 'asked'))",
            "CSV",
        )
        # A row with its own hash, asked beside the collision: it is found.
        engine.run_sql(
            f"INSERT INTO {DB}.usage_event_ids (tenant, source, id) VALUES ('t', '/s', 'kept')",
            "CSV",
        )
        lookup = engine.key_lookup()
        assert lookup.stored_keys([("t", "/s", "asked")]) == set()
        assert lookup.stored_keys([("t", "/s", "asked"), ("t", "/s", "kept")]) == {
            ("t", "/s", "kept")
        }
    finally:
        engine.close()
