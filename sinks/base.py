"""The sink contract: durable, idempotent writes of priced events, plus SQL reads."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from core.types import EventKey
from schemas.usage import TOKEN_FIELDS

# The columns of usage_events, in DDL order, with the Python type the processor
# fills them with. Times are epoch milliseconds (int), money is Decimal, and
# ``data`` is the event's JSON as logged, UTF-8 bytes (never decoded to str
# and encoded back: that round trip cost 1.7 µs an event).
EVENT_COLUMNS: dict[str, type] = {
    "tenant": str,
    "id": str,
    "source": str,
    "type": str,
    "subject": str,
    "time": int,
    "provider": str,
    "model": str,
    "feature": str,
    "user": str,
    # In TOKEN_FIELDS order: processor/rows.py fills them from that tuple.
    **dict.fromkeys(TOKEN_FIELDS, int),
    "images": int,
    "image_size": str,
    "image_quality": str,
    "unit": str,
    "quantity": Decimal,
    "charge_amount": Decimal,
    "charge_currency": str,
    "cost_usd": Decimal,
    "price_usd": Decimal,
    "priced": int,
    "estimated": int,
    "matched_model": str,
    "price_book": str,
    "topic": str,
    "partition": int,
    "offset": int,
    "ingested_at": int,
    "processed_at": int,
    "metadata": dict,
    "data": bytes,
}

# usage_meters: the group key and the summed columns (in DDL order).
METER_KEYS = ("tenant", "window_start", "subject", "model", "feature", "provider", "type", "unit")
METER_SUMS = (
    "events",
    "unpriced_events",
    "estimated_events",
    *TOKEN_FIELDS,
    "images",
    "quantity",
    "cost_usd",
    "price_usd",
)

# Settings every INSERT we rely on carries (docs/design.md#clickhouse): synchronous, and block
# dedup that also covers the materialized views' target tables.
INSERT_SETTINGS: dict[str, Any] = {
    "async_insert": 0,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "insert_deduplicate": 1,
}


class Sink(abc.ABC):
    """A ClickHouse engine holding meterline's tables."""

    database: str

    @abc.abstractmethod
    def migrate(self, billing_timezone: str = "UTC") -> None:
        """Apply the DDL in schemas/sql (idempotent)."""

    @abc.abstractmethod
    def stored_keys(self, keys: Sequence[EventKey], run: str | None = None) -> set[EventKey]:
        """Which of these event identities are already in usage_events (or in the billing run)."""

    @abc.abstractmethod
    def insert_events(
        self, columns: Mapping[str, list[Any]], dedup_token: str, run: str | None = None
    ) -> None:
        """Insert rows into usage_events in ONE statement; return once durable.

        The materialized views fill usage_event_ids and usage_meters from the
        same statement. ``dedup_token`` makes a retry of the very same batch a
        no-op inside ClickHouse's dedup window. Raises ``StoreUnavailable`` when
        the engine cannot be reached (the caller retries) and ``StoreError``
        when it refuses the data.
        """

    @abc.abstractmethod
    def query_raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        """Run SQL and return the engine's output in a ClickHouse format."""

    def query_rows(self, sql: str) -> list[dict[str, Any]]:
        """Run SQL and return rows as dicts with exact Python values (Decimal for money)."""
        result = orjson.loads(self.query_raw(sql, "JSONCompact"))
        names = [m["name"] for m in result["meta"]]
        converters = [_converter(m["type"]) for m in result["meta"]]
        return [
            {name: conv(value) for name, conv, value in zip(names, converters, row, strict=True)}
            for row in result["data"]
        ]

    def scalar(self, sql: str) -> Any:
        rows = self.query_rows(sql)
        return next(iter(rows[0].values())) if rows else None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine (chDB: the data folder lock)."""


def quote(value: str) -> str:
    """A ClickHouse string literal (for values that cannot be bound as parameters)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _converter(ch_type: str) -> Any:
    inner = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    if inner.startswith("Decimal"):
        return lambda v: None if v is None else Decimal(str(v))
    if inner.startswith(("UInt64", "Int64", "UInt128", "Int128", "UInt256", "Int256")):
        return lambda v: None if v is None else int(v)
    return lambda v: v
