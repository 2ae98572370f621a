"""Re-bill a range of the log into a named billing run.

``meterline replay --from T1 --to T2 --price-book BOOK --run NAME`` re-reads the
records the log received between T1 and T2 (ingest time: the log's own
timestamps, so back-dated events are found where they were appended), prices
them with the chosen book, and writes them to ``billing_run_events`` under the
run name. Live tables are untouched; runs can be compared with SQL.

Re-running the same replay changes nothing: each (tenant, source, id) already
in the run is skipped, exactly as the live processor skips stored events.
Events older than the dedupe horizon are re-billed too (that is the point of
a replay); invalid records are counted, not re-dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.log.base import LogAdmin, Record
from pricing.base import PriceBook
from processor.decode import Decoded, decode
from processor.dedupe import Deduplicator
from processor.rows import EventColumns
from sinks.base import Sink, quote


@dataclass
class ReplayResult:
    run: str
    price_book: str
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    unpriced: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)


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
    sink: Sink,
    price_book: PriceBook,
    *,
    topic: str,
    run: str,
    from_ms: int,
    to_ms: int,
    progress: Callable[[int], None] = lambda _n: None,
) -> ReplayResult:
    result = ReplayResult(run, price_book.version, ranges=plan(admin, topic, from_ms, to_ms))
    # The live processor's dedupe, pointed at the run: an id already in the run
    # is skipped, which is what makes re-running the same replay a no-op.
    dedupe = Deduplicator(sink, run=run)
    for partition, (start, end) in sorted(result.ranges.items()):
        for records in admin.read_range(topic, partition, start, end):
            _rebill(records, sink, dedupe, price_book, run, result)
            progress(len(records))
    sink.query_raw(
        f"INSERT INTO {sink.database}.billing_runs VALUES ({quote(run)}, "
        f"{quote(price_book.version)}, fromUnixTimestamp64Milli(toInt64({from_ms}), 'UTC'), "
        f"fromUnixTimestamp64Milli(toInt64({to_ms}), 'UTC'), now64(3, 'UTC'))",
        "CSV",
    )
    return result


def _rebill(
    records: list[Record],
    sink: Sink,
    dedupe: Deduplicator,
    price_book: PriceBook,
    run: str,
    result: ReplayResult,
) -> None:
    result.records += len(records)
    good: list[Decoded] = []
    for record in records:
        item = decode(record)
        if isinstance(item, Decoded):
            good.append(item)
        else:
            result.invalid += 1
    keys = [item.key for item in good]
    new_indexes, in_batch, stored = dedupe.new_indexes(keys)
    result.duplicates += in_batch + stored
    columns = EventColumns()
    now_ms = int(time.time() * 1000)
    for index in new_indexes:
        item = good[index]
        env = item.event.envelope
        priced = price_book.price(env.type, item.usage, item.time_ms, env.subject or "")
        result.unpriced += not priced.priced
        columns.add(item, priced, price_book.version, now_ms)
    if len(columns):
        first_record, last_record = records[0], records[-1]
        token = (
            f"replay:{run}:{first_record.topic}:{first_record.partition}:"
            f"{first_record.offset}-{last_record.offset}"
        )
        sink.insert_events(columns.columns, token, run=run)
        result.stored += len(columns)
        dedupe.remember(keys[i] for i in new_indexes)


def compare(sink: Sink, run: str) -> list[SubjectTotals]:
    """Per subject: the live (billed) totals of the run's events vs the run's totals."""
    db, name = sink.database, quote(run)
    rows: list[dict[str, Any]] = sink.query_rows(
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
