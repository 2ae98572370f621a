"""The sink contracts: the event columns, and the roles an engine connection provides."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from core.types import EventKey
from schemas.usage import TOKEN_FIELDS

if TYPE_CHECKING:
    from sinks.changes import MeterChanges
    from sinks.reader import SqlReader

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
    # Added by schemas/sql/110_call_outcome_and_price_source.sql (ALTER ... ADD COLUMN
    # appends, and the chDB writer inserts by position: keep them last, in this order).
    "price_source": str,
    "status": str,
    "error_type": str,
    "http_status": int,
    "latency_ms": int,
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
    # No collapse of each inserted block by the Summing/Replacing tables' merge logic:
    # every block the views write is already one row per sort key (each view GROUPs BY
    # exactly its table's ORDER BY; usage_event_ids gets one row per identity, deduped
    # in the batch), so that pass found nothing to collapse and only cost the engine
    # ~1 µs of CPU per event (issue 17, docs/benchmarks.md "Round 6"). The stored rows
    # are the same either way, so dedup tokens, merges and the sum(...) GROUP BY reads
    # are unaffected.
    "optimize_on_insert": 0,
}


@dataclass(frozen=True)
class EventTable:
    """Where a writer puts priced events and where a key lookup finds their identities."""

    name: str  # the table rows are inserted into
    ids: str  # the table holding (tenant, source, id) of what is stored
    run: str | None = None  # a billing run's name: rows carry it, lookups filter on it
    # ``ids`` has key_hash = cityHash64(tenant, source, id) (migration 150): lookups
    # filter on it first, reading 8 bytes per stored identity instead of ~45.
    key_hash: bool = False


LIVE_EVENTS = EventTable("usage_events", "usage_event_ids", key_hash=True)


def billing_run(run: str) -> EventTable:
    """Rows of ``billing_run_events`` under one run name (replay); live tables untouched."""
    return EventTable("billing_run_events", "billing_run_events", run)


class EventWriter(abc.ABC):
    """Writes priced events into ONE table (``table``), bound at construction."""

    table: EventTable

    @abc.abstractmethod
    def insert(self, columns: Mapping[str, list[Any]], dedup_token: str) -> None:
        """Insert rows in ONE statement; return once durable.

        For the live table the materialized views fill usage_event_ids and
        usage_meters from the same statement. ``dedup_token`` makes a retry of
        the very same batch a no-op inside ClickHouse's dedup window. Raises
        ``StoreUnavailable`` when the engine cannot be reached (the caller
        retries) and ``StoreError`` when it refuses the data.
        """

    def encode(self, columns: Mapping[str, list[Any]]) -> Any:
        """The rows in the form this writer sends them; by default the columns as they are.

        Split from the INSERT so that the Python work of a batch (which holds the
        GIL) can run on the processor's thread while the previous batch's INSERT
        (which releases it) runs on the writer thread (processor/runner.py).
        """
        return columns

    def insert_encoded(self, rows: Any, dedup_token: str) -> None:
        """``insert`` of rows made by ``encode``, with the same guarantees."""
        self.insert(rows, dedup_token)

    # The Arrow schema of ``encode``'s rows when they are an Arrow table, else None.
    # A writer that has one also takes token rows built straight as Arrow columns
    # (processor/token_columns.py), concatenated with ``encode``'s.
    arrow_schema: Any = None

    # ``encode``'s rows, cut: the halves of a refused INSERT, a batch minus its
    # stored duplicates, two parts made one. By default ``encode``'s columns.
    def slice(self, rows: Any, start: int, stop: int) -> Any:
        """Rows ``start:stop``."""
        return {name: values[start:stop] for name, values in rows.items()}

    def pick(self, rows: Any, indexes: Sequence[int]) -> Any:
        """These rows, in this order."""
        return {name: [values[i] for i in indexes] for name, values in rows.items()}

    def concat(self, parts: Sequence[Any]) -> Any:
        """The rows of every part, in order."""
        return {name: [v for part in parts for v in part[name]] for name in parts[0]}


class KeyLookup(abc.ABC):
    """The dedupe guard's source of truth: which identities a table already holds."""

    table: EventTable

    @abc.abstractmethod
    def stored_keys(self, keys: Sequence[EventKey]) -> set[EventKey]:
        """Which of these event identities are already stored in ``table``."""


class Engine(abc.ABC):
    """ONE connection to a ClickHouse engine (a chDB session, a clickhouse-connect client).

    It runs SQL and builds the roles on top of itself: ``sql`` (reads and ad-hoc
    statements), ``writer(table)`` and ``key_lookup(table)``. Migrations are
    ``sinks.migrations.migrate(engine)``. Every call translates the engine's
    exceptions into ``StoreError`` / ``StoreUnavailable`` in one place per engine.
    """

    database: str
    # Set by an engine that sees every write to its tables (chDB in this process):
    # the read side may then keep exact answers of closed time (sinks/changes.py).
    changes: MeterChanges | None = None

    @abc.abstractmethod
    def run_sql(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        """Run one statement and return the engine's output in a ClickHouse format."""

    @abc.abstractmethod
    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter: ...

    @abc.abstractmethod
    def key_lookup(self, table: EventTable = LIVE_EVENTS) -> KeyLookup: ...

    @cached_property
    def sql(self) -> SqlReader:
        from sinks.reader import SqlReader

        return SqlReader(self.run_sql, self.database, self.changes)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine (chDB: the data folder lock)."""


def quote(value: str) -> str:
    """A ClickHouse string literal (for values that cannot be bound as parameters)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
