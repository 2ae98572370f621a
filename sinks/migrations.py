"""Apply meterline's DDL (``schemas/sql``, loaded by ``sinks.ddl``) to an engine."""

from __future__ import annotations

from sinks import ddl
from sinks.base import Engine


def migrate(engine: Engine, billing_timezone: str = "UTC") -> None:
    """Run every DDL statement in file order.

    The files are idempotent (IF NOT EXISTS / OR REPLACE), so this runs on every
    start. A statement that fails raises ``StoreError`` and stops the start-up:
    writing into a half-migrated schema could fill meters from a stale view.
    """
    for statement in ddl.statements(engine.database, billing_timezone):
        engine.run_sql(statement, "CSV")
