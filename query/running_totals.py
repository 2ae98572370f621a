"""Spend so far in a budget's period, from ``usage_running_totals`` (docs/budgets.md).

The table holds one row per (tenant, subject, 15-minute UTC bucket, feature,
model), summed by materialized views from the processor's INSERT into
``usage_events`` (schemas/sql/070_budgets.sql). Reading one subject's current
month is a primary-key range, summed in the engine to one row per local day of
the billing timezone (x features x models), not a scan of the meters. Summed
per 15-minute bucket instead, a month of the whole tenant's rows (read with
every subject's) was ~2,900 x features x models Python objects per load: even
at the bench's quick size each load took 130-440 ms under the one lock and checks
queued (docs/benchmarks.md, read side).

Correctness bound: a total here includes every event of every batch the
processor has committed, and nothing else (the views are filled by the same
INSERT, deduplicated with it). It therefore lags the truth by the events of the
batch in flight (at most one processor batch per partition) plus the cache age
(``CACHE_S``) in this process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from query.budget_store import Budget
from sinks.base import quote
from sinks.reader import SqlReader

CACHE_S = 1.0


@dataclass(frozen=True, slots=True)
class Period:
    """The budget period containing now (billing-timezone days), as UTC instants."""

    first: date  # local day the period starts
    start: datetime  # UTC: local midnight of ``first``
    resets_at: datetime  # UTC: local midnight after the period's last day
    after: date  # the local day after the period's last day (that of ``resets_at``)


def period_of(kind: str, now: datetime, zone: ZoneInfo) -> Period:
    today = now.astimezone(zone).date()
    if kind == "day":
        first, after = today, today + timedelta(days=1)
    else:
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end = datetime(after.year, after.month, after.day, tzinfo=zone)
    return Period(first, start.astimezone(UTC), end.astimezone(UTC), after)


@dataclass(frozen=True, slots=True)
class _Row:
    scope: int
    day: date  # local day of the billing timezone: a bucket never straddles two
    feature: str
    model: str
    cost_usd: Decimal
    price_usd: Decimal


@dataclass(frozen=True, slots=True)
class SubjectTotals:
    """One subject's (and its tenant's) rows of the current month, as read at ``read_at``."""

    rows: tuple[_Row, ...]
    month: Period
    expires: float  # time.monotonic()

    def used(self, budget: Budget, period: Period) -> Decimal:
        scope = 0 if budget.subject else 1
        total = Decimal(0)
        for row in self.rows:
            if (
                row.scope == scope
                and period.first <= row.day < period.after
                and (not budget.feature or row.feature == budget.feature)
                and (not budget.model or row.model == budget.model)
            ):
                total += row.cost_usd if budget.metric == "cost_usd" else row.price_usd
        return total


class RunningTotals:
    """Per-process cache of ``usage_running_totals`` reads, one entry per (tenant, subject)."""

    def __init__(self, sink: SqlReader, timezone: str, cache_s: float = CACHE_S) -> None:
        self.sink = sink
        self.zone = ZoneInfo(timezone)
        self.cache_s = cache_s
        self._cache: dict[tuple[str, str], SubjectTotals] = {}
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        return f"{self.sink.database}.usage_running_totals"

    def cached(self, tenant: str, subject: str, month: Period) -> SubjectTotals | None:
        """The fresh entry, or None (then call ``load`` off the event loop)."""
        entry = self._cache.get((tenant, subject))
        if entry is None or entry.month != month or entry.expires <= time.monotonic():
            return None
        return entry

    def load(self, tenant: str, subject: str, month: Period) -> SubjectTotals:
        """Read the month's rows of the subject and of the whole tenant (one range read)."""
        with self._lock:
            # Another request may have loaded it while this one waited for the lock:
            # one read per key per cache period, however many checks arrive at once.
            entry = self.cached(tenant, subject, month)
            if entry is not None:
                return entry
            # Every offset is a multiple of 15 minutes, so each bucket lies inside
            # one local day: summing per local day is exact for day and month periods.
            rows = self.sink.query_rows(
                f"SELECT scope, toString(toDate(bucket, {quote(self.zone.key)})) AS day, "
                "feature, model, sum(cost_usd) AS cost_usd, "
                f"sum(price_usd) AS price_usd FROM {self.table} "
                f"WHERE tenant = {quote(tenant)} "
                f"AND ((scope = 0 AND subject = {quote(subject)}) OR (scope = 1 AND subject = '')) "
                f"AND bucket >= toDateTime({int(month.start.timestamp())}, 'UTC') "
                f"AND bucket < toDateTime({int(month.resets_at.timestamp())}, 'UTC') "
                "GROUP BY scope, day, feature, model"
            )
            entry = SubjectTotals(
                tuple(
                    _Row(
                        int(r["scope"]),
                        date.fromisoformat(r["day"]),
                        r["feature"],
                        r["model"],
                        r["cost_usd"],
                        r["price_usd"],
                    )
                    for r in rows
                ),
                month,
                time.monotonic() + self.cache_s,
            )
            self._cache[(tenant, subject)] = entry
            return entry
