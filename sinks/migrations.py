"""Versioned, forward-only migrations of meterline's DDL (``schemas/sql``) on an engine.

Each file is applied once and recorded in ``schema_migrations`` (version, name,
checksum of the SQL as run, cluster, applied_at), so:

- running ``migrate`` again is a no-op (every process runs it at start);
- an applied versioned file whose SQL changed is REFUSED (``MigrationRefused``):
  editing history would leave databases migrated before the edit different from
  those after it, silently. Change the schema with a new file instead;
- a repeatable file (``-- meterline: repeatable``, only ``CREATE OR REPLACE``
  views) is applied again when its SQL changed, e.g. a new billing timezone;
- a database migrated for one cluster (or none) is refused for another.

Statements stay idempotent (``IF NOT EXISTS``): a crash after a file ran but
before its record was written applies that file again at the next start, and two
processes starting together may both apply it. Recording is the last step, so a
half-applied file is never marked done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.errors import StoreError
from sinks import ddl
from sinks.base import Engine, quote
from sinks.cluster_ddl import ClusterRenderer, check_cluster_name

TABLE = "schema_migrations"


class MigrationRefused(StoreError):
    """The database's recorded migrations do not match the files: nothing was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    repeatable: bool
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """sha256 of the SQL exactly as run (placeholders filled, cluster form applied)."""
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()


def plan(
    database: str, billing_timezone: str = "UTC", cluster: str | None = None
) -> list[Migration]:
    """Every migration, rendered for ``database`` (and ``cluster``), in version order."""
    renderer = ClusterRenderer(cluster) if cluster else None
    out: list[Migration] = []
    for file in ddl.files(database, billing_timezone):
        statements = file.statements
        if renderer is not None:
            statements = tuple(renderer.render_all(list(statements)))
        out.append(Migration(file.version, file.name, file.repeatable, statements))
    return out


def bootstrap_statements(database: str, cluster: str | None = None) -> list[str]:
    """The database and the ``schema_migrations`` table, before anything is read."""
    if cluster is None:
        return [
            f"CREATE DATABASE IF NOT EXISTS {database}",
            _migrations_table(database, "", "ReplacingMergeTree(applied_at)"),
        ]
    on = f" ON CLUSTER '{check_cluster_name(cluster)}'"
    # One Keeper path for the whole cluster (no {shard}): whichever node `migrate`
    # talks to, every node sees what was applied. {replica} must be unique
    # cluster-wide for that (the host name usually is).
    path = f"'/clickhouse/tables/{database}/{TABLE}'"
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}{on}",
        _migrations_table(
            database, on, f"ReplicatedReplacingMergeTree({path}, '{{replica}}', applied_at)"
        ),
    ]


def _migrations_table(database: str, on: str, engine: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{TABLE}{on}\n"
        "(\n"
        "    version     UInt32 COMMENT 'The NNN of schemas/sql/NNN_name.sql',\n"
        "    name        String,\n"
        "    checksum    String COMMENT 'sha256 of the SQL as run',\n"
        "    cluster     String COMMENT 'ON CLUSTER name, empty on a single node',\n"
        "    applied_at  DateTime64(3, 'UTC')\n"
        ")\n"
        f"ENGINE = {engine}\n"
        "ORDER BY version"
    )


def pending(
    engine: Engine, migrations: list[Migration], cluster: str | None = None
) -> list[Migration]:
    """The migrations still to apply; ``MigrationRefused`` if history does not match."""
    rows = engine.sql.query_rows(
        "SELECT version, argMax(name, applied_at) AS name, "
        "argMax(checksum, applied_at) AS checksum, argMax(cluster, applied_at) AS cluster "
        f"FROM {engine.database}.{TABLE} GROUP BY version"
    )
    applied = {int(row["version"]): row for row in rows}
    out: list[Migration] = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is None:
            out.append(migration)
            continue
        if row["cluster"] != (cluster or ""):
            was = f"cluster {row['cluster']!r}" if row["cluster"] else "a single node"
            now = f"cluster {cluster!r}" if cluster else "a single node"
            raise MigrationRefused(
                f"database {engine.database!r} was migrated for {was}, not {now}: "
                "set METERLINE_CLICKHOUSE_CLUSTER (or --cluster) as it was"
            )
        if row["checksum"] == migration.checksum:
            continue
        if migration.repeatable:
            out.append(migration)
            continue
        raise MigrationRefused(
            f"schemas/sql/{migration.name} was applied to {engine.database!r} with checksum "
            f"{row['checksum'][:12]}, but it now renders {migration.checksum[:12]}: applied "
            "migrations are never edited (forward-only); restore the file and add a new one"
        )
    return out


def migrate(
    engine: Engine, billing_timezone: str = "UTC", cluster: str | None = None
) -> list[Migration]:
    """Apply what is pending, in version order; return what was applied.

    A statement that fails raises ``StoreError`` and stops the start-up: writing
    into a half-migrated schema could fill meters from a stale view. The file is
    not recorded, so the next start applies it again.
    """
    migrations = plan(engine.database, billing_timezone, cluster)
    if engine.sql.scalar(f"EXISTS TABLE {engine.database}.{TABLE}"):
        # Refuse a mismatch before creating anything ON CLUSTER for it.
        pending(engine, migrations, cluster)
    for statement in bootstrap_statements(engine.database, cluster):
        engine.run_sql(statement, "CSV")
    todo = pending(engine, migrations, cluster)
    for migration in todo:
        for statement in migration.statements:
            engine.run_sql(statement, "CSV")
        # Last: only a file that ran whole is recorded. async_insert=0 (chDB's
        # default is 1): the record must be readable by the next start.
        engine.run_sql(
            f"INSERT INTO {engine.database}.{TABLE} (version, name, checksum, cluster, applied_at) "
            f"SELECT {migration.version}, {quote(migration.name)}, {quote(migration.checksum)}, "
            f"{quote(cluster or '')}, now64(3, 'UTC') SETTINGS async_insert = 0",
            "CSV",
        )
    return todo


def dry_run(database: str, billing_timezone: str = "UTC", cluster: str | None = None) -> str:
    """The SQL ``migrate`` runs on an empty database, as one script (``--dry-run``)."""
    parts = [s + ";" for s in bootstrap_statements(database, cluster)]
    for migration in plan(database, billing_timezone, cluster):
        kind = "repeatable" if migration.repeatable else "versioned"
        parts.append(f"-- {migration.name} ({kind}, sha256 {migration.checksum})")
        parts.extend(s + ";" for s in migration.statements)
    return "\n\n".join(parts) + "\n"
