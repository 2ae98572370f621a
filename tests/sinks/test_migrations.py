"""Versioned, forward-only migrations recorded in schema_migrations, on the real engine (chDB)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks import ddl
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import MigrationRefused, migrate
from tests.support.cli import meterline_cli


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb", "mig")
    yield engine
    engine.close()


def recorded(engine: ChdbEngine) -> list[tuple[int, str]]:
    rows = engine.sql.query_rows("SELECT version, name FROM schema_migrations ORDER BY applied_at")
    return [(int(r["version"]), r["name"]) for r in rows]


def shipped() -> list[tuple[int, str]]:
    return [(f.version, f.name) for f in ddl.files("mig")]


def test_a_new_database_gets_every_file_once_in_version_order(store: ChdbEngine) -> None:
    applied = migrate(store)
    assert [(m.version, m.name) for m in applied] == shipped()
    assert recorded(store) == shipped()


def test_migrating_again_applies_and_records_nothing(store: ChdbEngine) -> None:
    migrate(store)
    assert migrate(store) == []
    assert recorded(store) == shipped()


def test_an_edited_applied_file_is_refused_and_nothing_runs(
    store: ChdbEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(store)
    real_files = ddl.files

    def edited(database: str, billing_timezone: str = "UTC") -> list[ddl.DdlFile]:
        out = []
        for f in real_files(database, billing_timezone):
            if f.version == 10:  # someone "fixed" a comment in an applied file
                f = ddl.DdlFile(
                    f.version, f.name, f.repeatable, (f.statements[0] + " COMMENT 'x'",)
                )
            out.append(f)
        return out

    monkeypatch.setattr(ddl, "files", edited)
    with pytest.raises(
        MigrationRefused, match=r"schemas/sql/010_usage_events.sql was applied .* \(forward-only\)"
    ):
        migrate(store)
    assert recorded(store) == shipped()


def test_a_new_file_is_applied_alone(store: ChdbEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(store)
    real_files = ddl.files
    added = ddl.DdlFile(
        990,
        "990_invoices.sql",
        False,
        ("CREATE TABLE IF NOT EXISTS mig.invoices (id String) ENGINE = MergeTree ORDER BY id",),
    )
    monkeypatch.setattr(ddl, "files", lambda db, tz="UTC": [*real_files(db, tz), added])
    assert [m.name for m in migrate(store)] == ["990_invoices.sql"]
    assert store.sql.scalar("EXISTS TABLE mig.invoices") == 1


def test_a_new_billing_timezone_reapplies_only_the_repeatable_rollup_views(
    store: ChdbEngine,
) -> None:
    migrate(store)
    assert [m.name for m in migrate(store, "Asia/Tokyo")] == ["040_rollup_views.sql"]
    assert "Asia/Tokyo" in store.sql.scalar(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = 'mig' AND name = 'usage_meters_daily'"
    )
    assert migrate(store, "Asia/Tokyo") == []


def test_a_database_from_before_versioning_is_adopted_with_its_data(store: ChdbEngine) -> None:
    for statement in ddl.statements("mig"):  # what `migrate` used to do: run every file
        store.run_sql(statement, "CSV")
    store.run_sql(
        "INSERT INTO mig.usage_events (tenant, id, source) SETTINGS async_insert = 0 "
        "VALUES ('t', 'kept', 's')",
        "CSV",
    )
    migrate(store)
    assert recorded(store) == shipped()
    assert store.sql.scalar("SELECT count() FROM mig.usage_events") == 1


def test_a_single_node_database_is_refused_for_a_cluster_before_anything_is_created(
    store: ChdbEngine,
) -> None:
    migrate(store)
    with pytest.raises(MigrationRefused, match="migrated for a single node, not cluster 'prod'"):
        migrate(store, cluster="prod")


def test_dry_run_prints_the_cluster_sql_without_a_store(tmp_path: Path) -> None:
    # The ClickHouse URL points nowhere: a dry run must not connect.
    result = meterline_cli(
        tmp_path / "data",
        "migrate",
        "--cluster",
        "prod",
        "--dry-run",
        METERLINE_CLICKHOUSE_URL="http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    assert (
        "CREATE TABLE IF NOT EXISTS meterline.usage_events_local ON CLUSTER 'prod'" in result.stdout
    )
    assert "ENGINE = Distributed('prod', meterline, usage_events_local," in result.stdout
    assert "-- 040_rollup_views.sql (repeatable, sha256 " in result.stdout
    assert not (tmp_path / "data" / "chdb").exists()


def test_migrate_with_a_bad_cluster_name_says_which_setting(tmp_path: Path) -> None:
    result = meterline_cli(tmp_path / "data", "migrate", "--cluster", "a b", "--dry-run")
    assert result.returncode == 2
    assert "METERLINE_CLICKHOUSE_CLUSTER" in result.stderr
