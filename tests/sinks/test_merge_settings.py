"""Migration 140 (schemas/sql/140_usage_events_merge_base.sql): usage_events' merges wait
for more parts (fewer rewrites of each row, issue 17); every other table keeps the
engine's default. (What the tables hold is the bench's and tests/e2e's to check: merges
never change a MergeTree's rows.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

DB = "merges"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb", DB)
    migrate(engine)
    yield engine
    engine.close()


def _engines(engine: ChdbEngine) -> dict[str, str]:
    rows = engine.run_sql(
        f"SELECT name, engine_full FROM system.tables WHERE database = '{DB}' "
        "AND engine LIKE '%MergeTree'",
        "TSVRaw",
    )
    return dict(line.split("\t", 1) for line in rows.decode().splitlines())


def test_usage_events_merges_wait_for_twenty_parts_and_no_other_table_changes(
    engine: ChdbEngine,
) -> None:
    tables = _engines(engine)
    assert "merge_selector_base = 20" in tables.pop("usage_events")
    # the dedupe lookup reads usage_event_ids every batch: more parts there would cost it
    assert "usage_event_ids" in tables and "usage_meters" in tables
    assert not [name for name, full in tables.items() if "merge_selector_base" in full]


def test_migrating_again_keeps_the_setting_and_applies_nothing(engine: ChdbEngine) -> None:
    assert migrate(engine) == []
    assert "merge_selector_base = 20" in _engines(engine)["usage_events"]
