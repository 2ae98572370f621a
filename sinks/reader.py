"""Ad-hoc SQL against the engine: query/, verify, replay's bookkeeping and the CLI.

Not the hot path: batches of events go through an ``EventWriter``, dedupe
lookups through a ``KeyLookup``. The few repair statements (verify's meter
repair, the dedupe-index repair) are single statements and come through here too.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from sinks.changes import MeterChanges


class SqlReader:
    """SQL in, ClickHouse output (or exact Python rows) out, over one engine connection."""

    def __init__(
        self,
        run_sql: Callable[[str, str], bytes],
        database: str,
        changes: MeterChanges | None = None,
    ) -> None:
        self._run_sql = run_sql
        self.database = database
        # None: writes this process does not see reach the store (a server), so
        # nothing read from it may be kept (sinks/changes.py).
        self.changes = changes

    def query_raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        """Run SQL and return the engine's output in a ClickHouse format."""
        return self._run_sql(sql, fmt)

    def query_rows(self, sql: str) -> list[dict[str, Any]]:
        """Run SQL and return rows as dicts with exact Python values (Decimal for money)."""
        result = orjson.loads(self._run_sql(sql, "JSONCompact"))
        names = [m["name"] for m in result["meta"]]
        converters = [_converter(m["type"]) for m in result["meta"]]
        return [
            {name: conv(value) for name, conv, value in zip(names, converters, row, strict=True)}
            for row in result["data"]
        ]

    def scalar(self, sql: str) -> Any:
        rows = self.query_rows(sql)
        return next(iter(rows[0].values())) if rows else None


def _converter(ch_type: str) -> Any:
    inner = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    if inner.startswith("Decimal"):
        return lambda v: None if v is None else Decimal(str(v))
    if inner.startswith(("UInt64", "Int64", "UInt128", "Int128", "UInt256", "Int256")):
        return lambda v: None if v is None else int(v)
    return lambda v: v
