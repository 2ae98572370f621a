"""Render meterline's single-node DDL for a ClickHouse cluster (``meterline migrate --cluster``).

For each table ``T`` of ``schemas/sql`` a cluster gets (docs/scaling.md, "ClickHouse cluster"):

- ``T_local`` on every node, ``ON CLUSTER``, with the ``Replicated`` variant of the
  engine (``MergeTree`` becomes ``ReplicatedMergeTree``, ``SummingMergeTree``
  becomes ``ReplicatedSummingMergeTree``...), its Keeper path per shard;
- ``T``, a ``Distributed`` table over the ``T_local`` tables with the same name
  the single-node schema uses, so the processor, ``verify``, ``replay`` and
  users' SQL are unchanged;
- materialized views attached to the LOCAL tables (an insert through the
  Distributed table reaches each shard's ``usage_events_local``, whose views fill
  that shard's ``usage_event_ids_local`` and ``usage_meters_local``);
- plain views ``ON CLUSTER``, reading the Distributed tables.

A statement of a shape this module does not know is refused (``ConfigError``):
a new kind of DDL must be given its cluster form here, not shipped as single-node
DDL that would create a table on one node only.
"""

from __future__ import annotations

import re

from core.errors import ConfigError

# How each Distributed table spreads inserts over shards. The event identity for
# the live tables: every copy of one event lands on ONE shard, so the
# ReplacingMergeTree dedupe index and Keeper's block dedup see it in one place.
# ``rand()`` for meters: sums are additive, and only `verify`'s repair inserts there.
SHARDING_KEYS = {
    "usage_events": "cityHash64(tenant, source, id)",
    "usage_event_ids": "cityHash64(tenant, source, id)",
    "usage_meters": "rand()",
    "billing_run_events": "cityHash64(run, tenant, source, id)",
    "billing_runs": "cityHash64(run)",
    # Any shard would do (gateways read the whole list through the Distributed table).
    "portal_token_revocations": "cityHash64(tenant, token_id)",
    # All versions of one budget on one shard (its history reads one place).
    "budget_versions": "cityHash64(tenant, id)",
    # Additive sums, like usage_meters; a check reads through the Distributed table.
    "usage_running_totals": "rand()",
    # Hourly and daily meters (120, 121), fed by views on each shard's local tables.
    "usage_meters_1h": "rand()",
    "usage_meters_1d": "rand()",
    # Tenant-wide hourly and daily meters (122, 123), fed by views on each shard's
    # local minute table; additive sums, like usage_meters.
    "usage_meters_1h_tenant": "rand()",
    "usage_meters_1d_tenant": "rand()",
    # Every claim of one alert on one shard: Keeper's block dedup (the claim's
    # token) only sees inserts into the same shard.
    "budget_alerts": "cityHash64(tenant, alert_id)",
    "alert_deliveries": "cityHash64(tenant, alert_id)",
    # Every revision of one customer's period on one shard: a close reads what was
    # already billed and its insert_deduplication_token must meet the rival insert.
    "invoice_lines": "cityHash64(tenant, period, subject)",
}

# ``{shard}`` and ``{replica}`` are the servers' own macros (config.xml <macros>),
# filled in by each node: they are not meterline placeholders.
KEEPER_PATH = "/clickhouse/tables/{{shard}}/{database}/{table}"

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DATABASE = re.compile(r"^CREATE DATABASE IF NOT EXISTS (\w+)$")
_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)(\s*\(.*\))?\s*"
    r"ENGINE = (\w*MergeTree)(?:\(([^)]*)\))?(.*)$",
    re.DOTALL,
)
_MATERIALIZED = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\.(\w+)\s+TO (\w+)\.(\w+)(\s.*)$", re.DOTALL
)
_VIEW = re.compile(r"^CREATE OR REPLACE VIEW (\w+)\.(\w+)(\s.*)$", re.DOTALL)
# Only ADD COLUMN: it is the one ALTER whose cluster form is the same change on the
# local tables and on the Distributed table over them (which must list the column
# too, or SELECTs through it do not see it).
_ADD_COLUMNS = re.compile(r"^ALTER TABLE (\w+)\.(\w+)(\s+ADD COLUMN IF NOT EXISTS\s.*)$", re.DOTALL)


# Projections, MergeTree settings (merges, dedup) and a column's stored values
# (MATERIALIZE COLUMN) live in the parts of the LOCAL tables (a Distributed table has
# no parts, and settings of its own): each shard answers a query sent through the
# Distributed table from its own projection, and merges its own parts. So these
# ALTERs go to the local tables only.
_LOCAL_ALTER = re.compile(
    r"^ALTER TABLE (\w+)\.(\w+)(\s+(?:MODIFY SETTING \w+"
    r"|ADD PROJECTION IF NOT EXISTS|MATERIALIZE PROJECTION|MATERIALIZE COLUMN)\s.*)$",
    re.DOTALL,
)


# A one-off backfill (``INSERT INTO t SELECT ... FROM u``, migration 120). Not ON CLUSTER
# (INSERT has no such form): it runs once, on the node ``migrate`` talks to, through the
# Distributed tables, which read every shard and spread the rows like any insert.
_INSERT_SELECT = re.compile(r"^INSERT INTO (\w+)\.(\w+)\s+SELECT\s.*$", re.DOTALL)


def check_cluster_name(cluster: str) -> str:
    if not _CLUSTER_NAME.match(cluster):
        raise ConfigError(
            f"cluster name {cluster!r} is not a ClickHouse cluster name "
            "(letters, digits, '_', '.', '-'; as in the servers' <remote_servers>)"
        )
    return cluster


def on_cluster(statements: list[str], cluster: str) -> list[str]:
    """The cluster form of ``statements`` (one file's, or all of them, in order).

    Local twins made earlier in the same call are remembered, so a view's
    ``FROM``/``TO`` reaches the local table; pass every statement in one call
    when rendering the whole schema.
    """
    return ClusterRenderer(cluster).render_all(statements)


class ClusterRenderer:
    """Renders statements in order; remembers the tables that got a local twin."""

    def __init__(self, cluster: str, local_tables: set[str] | None = None) -> None:
        self.cluster = check_cluster_name(cluster)
        self.on = f"ON CLUSTER '{cluster}'"
        # Table names ("db.t") whose data lives in "db.t_local".
        self.local_tables: set[str] = set(local_tables or ())

    def render_all(self, statements: list[str]) -> list[str]:
        return [out for statement in statements for out in self.render(statement)]

    def render(self, statement: str) -> list[str]:
        if match := _DATABASE.match(statement):
            return [f"CREATE DATABASE IF NOT EXISTS {match.group(1)} {self.on}"]
        if match := _TABLE.match(statement):
            return self._table(*match.groups())
        if match := _MATERIALIZED.match(statement):
            db, name, target_db, target, body = match.groups()
            return [
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} {self.on} "
                f"TO {self._local(f'{target_db}.{target}')}{self._reads_local(body)}"
            ]
        if (match := _ADD_COLUMNS.match(statement)) and all(
            # One clause a line, each an ADD COLUMN: a DROP or MODIFY hidden in the
            # list would otherwise get this form too.
            line.strip().startswith("ADD COLUMN IF NOT EXISTS ")
            for line in match.group(3).strip().splitlines()
        ):
            db, name, body = match.groups()
            return [
                f"ALTER TABLE {self._local(f'{db}.{name}')} {self.on}{body}",
                f"ALTER TABLE {db}.{name} {self.on}{body}",
            ]
        if match := _LOCAL_ALTER.match(statement):
            db, name, body = match.groups()
            return [f"ALTER TABLE {self._local(f'{db}.{name}')} {self.on}{body}"]
        if match := _INSERT_SELECT.match(statement):
            db, name = match.groups()
            self._local(f"{db}.{name}")  # its table must have been created (a ConfigError if not)
            return [statement]
        if match := _VIEW.match(statement):
            db, name, body = match.groups()
            # Reads the Distributed tables: a view answers for the whole cluster.
            return [f"CREATE OR REPLACE VIEW {db}.{name} {self.on}{body}"]
        first = statement.splitlines()[0] if statement else statement
        raise ConfigError(
            f"no cluster form for the statement starting {first!r}: "
            "teach sinks/cluster_ddl.py its ON CLUSTER / Replicated / Distributed form"
        )

    def _table(
        self, db: str, name: str, columns: str | None, engine: str, args: str | None, rest: str
    ) -> list[str]:
        if name not in SHARDING_KEYS:
            raise ConfigError(
                f"table {db}.{name} has no sharding key: add one to "
                "sinks/cluster_ddl.py:SHARDING_KEYS (how inserts spread over shards)"
            )
        local = f"{name}_local"
        path = "'" + KEEPER_PATH.format(database=db, table=local) + "'"
        replicated_args = ", ".join([path, "'{replica}'", *([args] if args else [])])
        # Replicated tables deduplicate inserted blocks in Keeper, over
        # replicated_deduplication_window blocks (non_replicated_... is the
        # single-node setting and means nothing here).
        rest = rest.replace(
            "non_replicated_deduplication_window", "replicated_deduplication_window"
        )
        rest = self._reads_local(rest)  # EMPTY AS SELECT ... FROM another table
        local_sql = (
            f"CREATE TABLE IF NOT EXISTS {db}.{local} {self.on}{columns or ''}\n"
            f"ENGINE = Replicated{engine}({replicated_args}){rest}"
        )
        self.local_tables.add(f"{db}.{name}")
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {db}.{name} {self.on} AS {db}.{local}\n"
            f"ENGINE = Distributed('{self.cluster}', {db}, {local}, {SHARDING_KEYS[name]})"
        )
        return [local_sql, distributed]

    def _local(self, table: str) -> str:
        if table not in self.local_tables:
            raise ConfigError(f"{table} is used before its CREATE TABLE")
        return f"{table}_local"

    def _reads_local(self, sql: str) -> str:
        # Longest names first, so "db.usage_events" never rewrites inside
        # "db.usage_events_x"; \b stops at the end of the name.
        for table in sorted(self.local_tables, key=len, reverse=True):
            sql = re.sub(rf"\b{re.escape(table)}\b(?!_local)", f"{table}_local", sql)
        return sql
