"""Re-bill a range of the log into a named billing run.

``meterline replay --from T1 --to T2 --price-book BOOK --run NAME`` re-reads the
records the log received between T1 and T2 (ingest time: the log's own
timestamps, so back-dated events are found where they were appended), prices
them with the chosen book, and writes them to ``billing_run_events`` under the
run name. Live tables are untouched; runs can be compared with SQL.

It runs the live processor's own batch pipeline (processor/pipeline.py), given
a ``BillingRun`` target instead of the live tables. Re-running the same replay
changes nothing: each (tenant, source, id) already in the run is skipped,
exactly as the live processor skips stored events. Events older than the dedupe
horizon are re-billed too (that is the point of a replay). Records the pipeline
dead-letters (invalid, or whose handling fails: the same reasons as live) are
counted per reason in the result, not published again: the live DLQ already
holds those the live processor refused, and a replay is not the live stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.log.base import LogAdmin
from pricing.base import PriceBook
from processor.decode import DeadLetter
from processor.pipeline import BatchResult, BillingRun, Pipeline
from schemas.mappings import EventMappings
from sinks.base import Engine, quote
from sinks.reader import SqlReader


@dataclass
class ReplayResult:
    run: str
    price_book: str
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0  # dead-lettered by the pipeline, for any reason (see ``dead``)
    unpriced: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)  # reason -> records
    examples: list[DeadLetter] = field(default_factory=list)  # the first few, for the operator


class _Counted:
    """Replay's dead letters: counted in the result (see the module docstring)."""

    def __init__(self, result: ReplayResult) -> None:
        self._result = result

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        room = 10 - len(self._result.examples)
        self._result.examples.extend(letters[: max(0, room)])


@dataclass(frozen=True)
class SubjectTotals:
    subject: str
    events: int
    old_cost_usd: Decimal
    new_cost_usd: Decimal
    old_price_usd: Decimal
    new_price_usd: Decimal


def plan(admin: LogAdmin, topic: str, from_ms: int, to_ms: int) -> dict[int, tuple[int, int]]:
    """Per partition, the offset range [start, end) appended between the two instants."""
    starts = admin.offsets_for_time(topic, from_ms)
    ends = admin.offsets_for_time(topic, to_ms)
    return {p: (starts[p], ends.get(p, starts[p])) for p in starts if ends.get(p, 0) > starts[p]}


def replay(
    admin: LogAdmin,
    engine: Engine,
    price_book: PriceBook,
    *,
    topic: str,
    run: str,
    from_ms: int,
    to_ms: int,
    progress: Callable[[int], None] = lambda _n: None,
    mappings: EventMappings | None = None,
) -> ReplayResult:
    result = ReplayResult(run, price_book.version, ranges=plan(admin, topic, from_ms, to_ms))
    # The live processor's pipeline, pointed at the run: an id already in the run
    # is skipped, which is what makes re-running the same replay a no-op.
    # Decoded with the live processor's event mappings (the same setting), so a
    # mapped event is re-priced as the usage it was billed as.
    pipeline = Pipeline(BillingRun(engine, run), price_book, _Counted(result), mappings=mappings)
    total = BatchResult()
    for partition, (start, end) in sorted(result.ranges.items()):
        for records in admin.read_range(topic, partition, start, end):
            batch = pipeline.run(records)
            pipeline.remember(batch.stored_keys)
            total.add(batch)
            progress(len(records))
    result.records, result.stored, result.duplicates = total.records, total.stored, total.duplicates
    result.invalid, result.unpriced, result.dead = total.dead, total.unpriced, total.dead_reasons
    engine.sql.query_raw(
        f"INSERT INTO {engine.sql.database}.billing_runs VALUES ({quote(run)}, "
        f"{quote(price_book.version)}, fromUnixTimestamp64Milli(toInt64({from_ms}), 'UTC'), "
        f"fromUnixTimestamp64Milli(toInt64({to_ms}), 'UTC'), now64(3, 'UTC'))",
        "CSV",
    )
    return result


def compare(sql: SqlReader, run: str) -> list[SubjectTotals]:
    """Per subject: the live (billed) totals of the run's events vs the run's totals."""
    db, name = sql.database, quote(run)
    rows: list[dict[str, Any]] = sql.query_rows(
        f"""
        SELECT n.subject AS subject, n.events AS events,
               o.cost AS old_cost, n.cost AS new_cost, o.price AS old_price, n.price AS new_price
        FROM (SELECT subject, count() AS events, sum(cost_usd) AS cost, sum(price_usd) AS price
              FROM {db}.billing_run_events WHERE run = {name} GROUP BY subject) AS n
        LEFT JOIN (SELECT subject, sum(cost_usd) AS cost, sum(price_usd) AS price
              FROM {db}.usage_events
              WHERE (tenant, source, id) IN
                    (SELECT tenant, source, id FROM {db}.billing_run_events WHERE run = {name})
              GROUP BY subject) AS o ON o.subject = n.subject
        ORDER BY subject
        """
    )
    return [
        SubjectTotals(
            r["subject"],
            int(r["events"]),
            r["old_cost"],
            r["new_cost"],
            r["old_price"],
            r["new_price"],
        )
        for r in rows
    ]
