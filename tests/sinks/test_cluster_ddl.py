"""Cluster DDL (``meterline migrate --cluster``): every statement parsed by the real engine.

No ClickHouse cluster (nor Keeper) runs here, so these statements cannot be
executed; chDB's parser (``formatQuery``, the server's own) reads each one, so a
typo in the rendering cannot ship, and the structure is asserted on the engine's
normalised text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.errors import ConfigError
from sinks import ddl
from sinks.base import quote
from sinks.chdb_sink import ChdbEngine
from sinks.cluster_ddl import SHARDING_KEYS, on_cluster
from sinks.migrations import bootstrap_statements, plan

CLUSTER = "prod-eu.1"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path_factory.mktemp("parse") / "chdb", "parse")
    yield engine
    engine.close()


def parsed(session: ChdbEngine, statement: str) -> str:
    """The engine's normalised text of ``statement`` on one line; a syntax error raises."""
    text = session.run_sql(f"SELECT formatQuery({quote(statement)})", "TSVRaw").decode()
    return " ".join(text.split())


def cluster_statements() -> list[str]:
    return bootstrap_statements("meterline", CLUSTER) + [
        s for m in plan("meterline", "Europe/Paris", CLUSTER) for s in m.statements
    ]


def test_every_cluster_statement_is_valid_clickhouse_sql(session: ChdbEngine) -> None:
    for statement in cluster_statements():
        assert parsed(session, statement).startswith(("CREATE", "ALTER TABLE", "INSERT INTO")), (
            statement
        )


def test_every_single_node_statement_is_valid_clickhouse_sql(session: ChdbEngine) -> None:
    statements = bootstrap_statements("meterline") + [
        s for m in plan("meterline") for s in m.statements
    ]
    for statement in statements:
        assert parsed(session, statement).startswith(("CREATE", "ALTER TABLE", "INSERT INTO")), (
            statement
        )


def test_every_statement_runs_on_the_cluster(session: ChdbEngine) -> None:
    # Except the one-off backfill (INSERT has no ON CLUSTER form): see below.
    for statement in cluster_statements():
        if not statement.startswith("INSERT INTO"):
            assert f"ON CLUSTER `{CLUSTER}`" in parsed(session, statement), statement


def test_the_hourly_backfill_reads_and_writes_the_whole_cluster_once(session: ChdbEngine) -> None:
    # Run on the one node `migrate` talks to, through the Distributed tables: it reads
    # every shard's minutes, and its rows spread over the shards like any insert.
    inserts = [parsed(session, s) for s in cluster_statements() if s.startswith("INSERT INTO")]
    assert len(inserts) == 5
    assert inserts[0].startswith("INSERT INTO meterline.usage_meters_1h ")
    assert "FROM meterline.usage_meters WHERE" in inserts[0]
    assert inserts[1].startswith("INSERT INTO meterline.usage_meters_1d ")
    assert "FROM meterline.usage_meters_1h WHERE" in inserts[1]
    # The tenant-wide rollups (122, 123) both backfill from the minutes.
    assert inserts[2].startswith("INSERT INTO meterline.usage_meters_1h_tenant ")
    assert inserts[3].startswith("INSERT INTO meterline.usage_meters_1d_tenant ")
    assert all("FROM meterline.usage_meters WHERE" in i for i in inserts[2:4])
    # The running totals' backfill (130) recomputes from the events and reads the table
    # it adds to, both through the Distributed tables.
    assert inserts[4].startswith("INSERT INTO meterline.usage_running_totals ")
    assert "FROM meterline.usage_events GROUP BY" in inserts[4]
    assert "FROM meterline.usage_running_totals GROUP BY" in inserts[4]
    assert not [i for i in inserts if "_local" in i]


def test_each_table_is_replicated_locally_with_a_distributed_table_of_its_own_name(
    session: ChdbEngine,
) -> None:
    texts = [parsed(session, s) for s in cluster_statements()]
    for table, key in SHARDING_KEYS.items():
        local = [
            t for t in texts if t.startswith(f"CREATE TABLE IF NOT EXISTS meterline.{table}_local ")
        ]
        assert len(local) == 1, table
        assert "ENGINE = Replicated" in local[0]
        assert f"'/clickhouse/tables/{{shard}}/meterline/{table}_local', '{{replica}}'" in local[0]
        distributed = [
            t for t in texts if t.startswith(f"CREATE TABLE IF NOT EXISTS meterline.{table} ")
        ]
        assert distributed == [
            f"CREATE TABLE IF NOT EXISTS meterline.{table} ON CLUSTER `{CLUSTER}` "
            f"AS meterline.{table}_local "
            f"ENGINE = Distributed('{CLUSTER}', meterline, {table}_local, "
            f"{parsed_key(session, key)})"
        ]
    # No table is left on a plain (single-node, unreplicated) engine.
    assert not [t for t in texts if "ENGINE = MergeTree" in t or "ENGINE = SummingMergeTree" in t]


def parsed_key(session: ChdbEngine, key: str) -> str:
    return parsed(session, f"SELECT {key}").removeprefix("SELECT ")


def test_replicated_tables_keep_the_dedup_window_under_its_replicated_name(
    session: ChdbEngine,
) -> None:
    texts = [parsed(session, s) for s in cluster_statements()]
    windowed = [t for t in texts if "deduplication_window" in t]
    # usage_events and the three materialized-view targets (ids, meters, running
    # totals): a retried batch must be dropped by all, or the sums double while the
    # events do not. budget_alerts: a racing second claim of an alert is dropped;
    # invoice_lines: its dedup token settles two closers' race.
    # usage_meters_1h and _1d, filled by views on the local minute and hour tables, likewise,
    # and their tenant-wide twins _1h_tenant and _1d_tenant (views on the local minutes).
    assert len(windowed) == 10
    assert all("replicated_deduplication_window = 10000" in t for t in windowed)
    assert not [t for t in texts if "non_replicated_deduplication_window" in t]


def test_materialized_views_read_and_fill_the_local_tables(session: ChdbEngine) -> None:
    views = [
        parsed(session, s) for s in cluster_statements() if s.startswith("CREATE MATERIALIZED VIEW")
    ]
    # ids, meters, running totals per subject and per tenant; hours from the minutes, days
    # from the hours; tenant-wide hours and days, both from the minutes
    assert len(views) == 8
    hourly = [v for v in views if " TO meterline.usage_meters_1h_local " in v]
    assert len(hourly) == 1 and "FROM meterline.usage_meters_local GROUP BY" in hourly[0]
    daily = [v for v in views if " TO meterline.usage_meters_1d_local " in v]
    assert len(daily) == 1 and "FROM meterline.usage_meters_1h_local GROUP BY" in daily[0]
    tenant_wide = [
        v
        for v in views
        if " TO meterline.usage_meters_1h_tenant_local " in v
        or " TO meterline.usage_meters_1d_tenant_local " in v
    ]
    assert len(tenant_wide) == 2
    assert all("FROM meterline.usage_meters_local GROUP BY" in v for v in tenant_wide)
    for view in views:
        if view in hourly or view in daily or view in tenant_wide:
            continue
        # A view on the Distributed table would never fire: inserts reach the shards'
        # local tables, and only a view on the local table sees them.
        assert "FROM meterline.usage_events_local" in view
        assert (
            " TO meterline.usage_event_ids_local " in view
            or " TO meterline.usage_meters_local " in view
            or " TO meterline.usage_running_totals_local " in view
        )


def test_rollup_views_read_the_whole_cluster(session: ChdbEngine) -> None:
    views = [
        parsed(session, s) for s in cluster_statements() if s.startswith("CREATE OR REPLACE VIEW")
    ]
    assert len(views) == 3
    assert all("FROM meterline.usage_meters GROUP BY" in v for v in views)
    assert all("usage_meters_local" not in v for v in views)


def test_a_statement_without_a_cluster_form_is_refused() -> None:
    with pytest.raises(
        ConfigError, match="no cluster form for the statement starting 'ALTER TABLE"
    ):
        on_cluster(["ALTER TABLE meterline.usage_events DROP COLUMN x"], "prod")


def test_an_alter_mixing_add_column_with_another_change_is_refused() -> None:
    statement = (
        "ALTER TABLE meterline.usage_events\n"
        "    ADD COLUMN IF NOT EXISTS x UInt8,\n"
        "    DROP COLUMN y"
    )
    with pytest.raises(ConfigError, match="no cluster form"):
        on_cluster([statement], "prod")


def test_added_columns_reach_the_local_tables_and_the_distributed_table_over_them() -> None:
    statements = [
        s for s in cluster_statements() if s.startswith("ALTER TABLE") and "ADD COLUMN" in s
    ]
    targets = [s.split()[2] for s in statements]
    # Local first: the Distributed table must not list a column no shard has yet.
    assert targets == [
        "meterline.usage_events_local",
        "meterline.usage_events",
        "meterline.billing_run_events_local",
        "meterline.billing_run_events",
        "meterline.usage_event_ids_local",  # key_hash, migration 150
        "meterline.usage_event_ids",
    ]
    assert all(f" ON CLUSTER '{CLUSTER}'\n" in s for s in statements)
    assert all("ADD COLUMN IF NOT EXISTS latency_ms" in s for s in statements[:4])
    assert all("ADD COLUMN IF NOT EXISTS key_hash UInt64 MATERIALIZED" in s for s in statements[4:])


def test_a_column_is_materialized_in_each_shards_local_table_only() -> None:
    # Its values live in the local tables' parts; a Distributed table has none.
    statements = [s for s in cluster_statements() if "MATERIALIZE COLUMN" in s]
    assert statements == [
        f"ALTER TABLE meterline.usage_event_ids_local ON CLUSTER '{CLUSTER}' "
        "MATERIALIZE COLUMN key_hash"
    ]


def test_the_hourly_projection_is_added_to_each_shards_local_meters_only() -> None:
    # A Distributed table has no parts, so no projection: each shard answers the
    # hourly query from its own usage_meters_local.
    statements = [s for s in cluster_statements() if "PROJECTION" in s or "projection_mode" in s]
    assert [s.split()[2] for s in statements] == ["meterline.usage_meters_local"] * 3
    assert all(f" ON CLUSTER '{CLUSTER}'" in s for s in statements)
    assert "ADD PROJECTION IF NOT EXISTS usage_meters_hourly" in statements[1]


def test_a_table_without_a_sharding_key_is_refused() -> None:
    statement = (
        "CREATE TABLE IF NOT EXISTS meterline.invoices (id String) ENGINE = MergeTree ORDER BY id"
    )
    with pytest.raises(ConfigError, match=r"meterline.invoices has no sharding key"):
        on_cluster([statement], "prod")


def test_a_view_on_a_table_not_yet_created_is_refused() -> None:
    statement = "CREATE MATERIALIZED VIEW IF NOT EXISTS db.v TO db.usage_meters AS SELECT 1"
    with pytest.raises(ConfigError, match=r"db\.usage_meters is used before its CREATE TABLE"):
        on_cluster([statement], "prod")


@pytest.mark.parametrize("name", ["", "a b", "x'; DROP TABLE y; --", "-lead"])
def test_a_cluster_name_that_is_not_one_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a ClickHouse cluster name"):
        on_cluster(ddl.statements("meterline"), name)


def test_the_merge_setting_of_usage_events_goes_to_each_shards_local_table_only() -> None:
    # Merges are the local tables' (the Distributed table has no parts to merge).
    statements = [s for s in cluster_statements() if "merge_selector_base" in s]
    assert statements == [
        f"ALTER TABLE meterline.usage_events_local ON CLUSTER '{CLUSTER}' "
        "MODIFY SETTING merge_selector_base = 20"
    ]
