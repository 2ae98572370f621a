"""Spend so far in the current budget periods: one in-memory snapshot per tenant (docs/budgets.md).

The entitlement check is the call an app makes before each model call (1,000/s,
p99 < 5 ms), so it must not wait on the engine. ``TotalsSnapshots`` keeps, per
tenant, one ``Snapshot``: the tenant's live budgets and the running totals they
need, read together by ONE job (two statements, budgets then totals). A check
is then dict lookups and a few Decimal additions.

Refresh (stale-while-revalidate, single flight):

1. A check finds the tenant's snapshot usable (current budget generation, its
   read began less than ``max_stale_s`` ago, it covers the check's local day):
   it answers from it. If the snapshot is older than ``refresh_s``, the check
   also starts a refresh in the background, unless one is already in flight for
   the tenant (single flight: never a second concurrent read of one tenant).
2. No usable snapshot (first check, a budget changed in this process, older
   than ``max_stale_s``, or past the day after its read): the check waits for
   the in-flight read (starting it if none). A failed read is then a
   ``StoreError``: the check answers 503 rather than from totals older than
   ``max_stale_s`` (docs/budgets.md, "When the store cannot be read").

What a snapshot holds: ``usage_running_totals`` (schemas/sql/070_budgets.sql)
summed in the engine per (scope, subject, feature, model, day class) where the
day classes are "earlier this month" (kept as the month's first day), today,
tomorrow and "after tomorrow", all local days of the billing timezone; only for
subjects that have a budget (and the tenant-wide rows if a budget covers every
subject). Tomorrow is read too so that, at local midnight or a month start, a
snapshot read just before the boundary answers the new day (or month) with the
new period's own rows, never yesterday's total (``Snapshot.covers``). Every
timezone offset is a multiple of 15 minutes, so each bucket lies inside one
local day and the per-day sums are exact.

Correctness bound: a snapshot contains every event of every batch the processor
committed before its read began (the running totals are filled by the same
INSERT as ``usage_events``, deduplicated with it), and nothing else. A check
therefore lags the truth by the batch in flight (at most one processor batch per
partition) plus the snapshot's age: at most ``refresh_s`` + the duration of the
read in flight, and never more than ``max_stale_s``.

Memory: one row per (subject with a budget, feature, model, day class) seen this
month, plus the tenant's own; at the bench's scale (200 subjects, 4 features, 7
models) about 11,000 rows, a few MB per tenant (docs/budgets.md, "Measured").
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson

from core.errors import StoreError
from query.budget_store import Budget, Budgets
from sinks.base import quote

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # a snapshot older than this is refreshed (in the background)
MAX_STALE_S = 10.0  # never answer from a snapshot whose read began longer ago than this


@dataclass(frozen=True, slots=True)
class Period:
    """The budget period containing now (billing-timezone days), as UTC instants."""

    first: date  # local day the period starts
    start: datetime  # UTC: local midnight of ``first``
    resets_at: datetime  # UTC: local midnight after the period's last day
    after: date  # the local day after the period's last day (that of ``resets_at``)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def period_of(kind: str, now: datetime, zone: ZoneInfo) -> Period:
    today = now.astimezone(zone).date()
    if kind == "day":
        first, after = today, today + timedelta(days=1)
    else:
        first, after = today.replace(day=1), _next_month(today)
    return Period(first, _midnight(first, zone), _midnight(after, zone), after)


# One row of a snapshot, as the engine wrote it: [feature, model, day, cost_usd,
# price_usd]; day is a day class's ISO date (module docstring), money the engine's
# exact decimal text. Kept as text: a refresh then costs one orjson parse, not a
# Python object and two Decimals per row (84 ms of the GIL per refresh at the
# bench's scale, taken from the checks on the event loop); ``Snapshot.used``
# converts only the rows a budget sums, once per snapshot.
_Row = list[str]


def _key(budget: Budget) -> tuple[int, str]:
    """(scope, subject) of the rows a budget sums: its subject, or the tenant's own rows."""
    return (0, budget.subject) if budget.subject else (1, "")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One tenant's budgets and the running totals they need, as read at ``read_at``."""

    tenant: str
    budgets: tuple[Budget, ...]
    read_at: datetime  # UTC wall clock when the read began
    started: float  # monotonic clock when the read began (its age counts from here)
    generation: int  # the tenant's budget generation the read began under
    today: date  # local day of ``read_at``
    rows: dict[tuple[int, str], list[_Row]]
    by_subject: dict[str, tuple[Budget, ...]]  # "" -> budgets of every subject together
    zone: ZoneInfo  # the billing timezone the day classes are in
    _used: dict[tuple[str, int, date], Decimal] = field(default_factory=dict)
    # The check's answers, memoized by query/entitlements.py for this snapshot's life.
    answers: dict[tuple[str, str, str | None, date], bytes] = field(default_factory=dict)

    def covers(self, now: datetime, zone: ZoneInfo | None = None) -> bool:
        """Whether every period containing ``now`` can be answered from these rows.

        Read on day D, the rows hold D's and D+1's days apart from the rest of the
        month, and D+1's month if it starts a new one: a check on D or D+1 gets
        its own day's (and month's) rows. Later, the snapshot is stale anyway.
        """
        local = now.astimezone(zone or self.zone).date()
        return self.today <= local <= self.today + timedelta(days=1)

    def applying(self, subject: str, feature: str, model: str | None) -> list[Budget]:
        """The budgets a check of ``subject``/``feature`` (and ``model``) falls under."""
        own = self.by_subject.get(subject, ())
        every = self.by_subject.get("", ()) if subject else ()
        return [b for b in (*own, *every) if b.applies_to(subject, feature, model)]

    def used(self, budget: Budget, period: Period) -> Decimal:
        """The budget's metric summed over ``period`` (must be covered, see ``covers``)."""
        memo = (budget.id, budget.version, period.first)
        found = self._used.get(memo)
        if found is not None:
            return found
        total = Decimal(0)
        column = 3 if budget.metric == "cost_usd" else 4
        first, after = period.first.isoformat(), period.after.isoformat()  # ISO sorts as dates
        for row in self.rows.get(_key(budget), ()):
            if (
                first <= row[2] < after
                and (not budget.feature or row[0] == budget.feature)
                and (not budget.model or row[1] == budget.model)
            ):
                total += Decimal(row[column])
        # Several checks race to fill the same entry with the same value: harmless.
        self._used[memo] = total
        return total


class TotalsSnapshots:
    """Per-process snapshots of each tenant's budgets and running totals (module docstring)."""

    def __init__(
        self,
        budgets: Budgets,
        timezone: str,
        *,
        refresh_s: float = REFRESH_S,
        max_stale_s: float = MAX_STALE_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = budgets
        self.sink = budgets.sink
        self.zone = ZoneInfo(timezone)
        self.refresh_s = refresh_s
        self.max_stale_s = max_stale_s
        self._clock = clock
        self._monotonic = monotonic
        self._snapshots: dict[str, Snapshot] = {}
        self._generation: dict[str, int] = {}
        self._inflight: dict[str, Future[Snapshot]] = {}
        self._failed_at: dict[str, float] = {}
        # Guards the three dicts above; held for microseconds, never across a read.
        self._lock = threading.Lock()
        # Reads run here, not on the event loop's default executor: a slow read
        # must not take the threads other routes' blocking calls need.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="running-totals")

    @property
    def table(self) -> str:
        return f"{self.sink.database}.usage_running_totals"

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def invalidate(self, tenant: str) -> None:
        """A budget of ``tenant`` changed in this process: no check answers from older reads."""
        with self._lock:
            self._generation[tenant] = self._generation.get(tenant, 0) + 1

    def usable(self, tenant: str, now: datetime) -> Snapshot | None:
        """The snapshot to answer from without I/O, or None (then ``await fresh``).

        Starts a background refresh when the snapshot is older than ``refresh_s``.
        """
        snapshot = self._snapshots.get(tenant)
        if snapshot is None or snapshot.generation != self._generation.get(tenant, 0):
            return None
        age = self._monotonic() - snapshot.started
        if age >= self.max_stale_s or not snapshot.covers(now, self.zone):
            return None
        if age >= self.refresh_s:
            with self._lock:
                # After a failed read, wait ``refresh_s`` before the next background
                # attempt: a store that is down is not hit at the check rate.
                failed = self._failed_at.get(tenant)
                retry = failed is None or self._monotonic() - failed >= self.refresh_s
            if retry:
                self.refresh(tenant)
        return snapshot

    def refresh(self, tenant: str) -> Future[Snapshot]:
        """The tenant's read in flight, started here if there is none (single flight)."""
        with self._lock:
            running = self._inflight.get(tenant)
            if running is not None:
                return running
            future: Future[Snapshot] = Future()
            self._inflight[tenant] = future
            generation = self._generation.get(tenant, 0)
        self._pool.submit(self._refresh, tenant, generation, future)
        return future

    def read_now(self, tenant: str) -> Snapshot:
        """Blocking: a snapshot whose read began after this call (tests, tools)."""
        called = self._monotonic()
        snapshot = self.refresh(tenant).result()
        return snapshot if snapshot.started >= called else self.refresh(tenant).result()

    async def fresh(self, tenant: str, now: datetime) -> Snapshot:
        """Wait for the tenant's read in flight (``usable`` found nothing to answer from).

        Raises ``StoreError`` when the read fails or takes longer than ``max_stale_s``.
        """
        snapshot = await self._wait(tenant)
        if snapshot.generation != self._generation.get(tenant, 0) or not snapshot.covers(
            now, self.zone
        ):
            # The read in flight began before a budget change (or before the
            # clock passed the day after it): wait for one begun after.
            snapshot = await self._wait(tenant)
        return snapshot

    async def _wait(self, tenant: str) -> Snapshot:
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(self.refresh(tenant)), self.max_stale_s
            )
        except TimeoutError:
            # The read goes on and lands for later checks; this one gives up
            # rather than hold the app's call for an unbounded time.
            raise StoreError(
                f"the running totals of tenant {tenant!r} took over {self.max_stale_s:g} s to read"
            ) from None

    def _refresh(self, tenant: str, generation: int, future: Future[Snapshot]) -> None:
        try:
            snapshot = self.read(tenant, generation)
        except Exception as exc:
            with self._lock:
                self._inflight.pop(tenant, None)
                self._failed_at[tenant] = self._monotonic()
            log.warning("running totals of tenant %r not refreshed: %s", tenant, exc)
            future.set_exception(exc)
            return
        with self._lock:
            self._inflight.pop(tenant, None)
            self._failed_at.pop(tenant, None)
            current = self._snapshots.get(tenant)
            if current is None or current.started <= snapshot.started:
                self._snapshots[tenant] = snapshot
        future.set_result(snapshot)

    def read(self, tenant: str, generation: int = 0) -> Snapshot:
        """Read the tenant's budgets, then the running totals they need (the one job)."""
        started = self._monotonic()
        read_at = self.now()
        budgets = tuple(b for b in self.budgets.latest(tenant) if not b.deleted)
        by_subject: dict[str, list[Budget]] = {}
        for budget in budgets:
            by_subject.setdefault(budget.subject, []).append(budget)
        today = read_at.astimezone(self.zone).date()
        rows = self._read_rows(tenant, today, by_subject) if budgets else {}
        return Snapshot(
            tenant,
            budgets,
            read_at,
            started,
            generation,
            today,
            rows,
            {subject: tuple(found) for subject, found in by_subject.items()},
            self.zone,
        )

    def _read_rows(
        self, tenant: str, today: date, by_subject: dict[str, list[Budget]]
    ) -> dict[tuple[int, str], list[_Row]]:
        tomorrow = today + timedelta(days=1)
        first = today.replace(day=1)
        # From this month's start to the end of tomorrow's month: every day of
        # every period a check on today or tomorrow can fall in.
        start, end = _midnight(first, self.zone), _midnight(_next_month(tomorrow), self.zone)
        scopes = []
        subjects = sorted(s for s in by_subject if s)
        if subjects:
            scopes.append(f"(scope = 0 AND subject IN ({', '.join(map(quote, subjects))}))")
        if "" in by_subject:
            scopes.append("(scope = 1 AND subject = '')")
        after = tomorrow + timedelta(days=1)

        def before(day: date) -> str:
            return f"bucket < toDateTime({int(_midnight(day, self.zone).timestamp())}, 'UTC')"

        # Day classes: earlier days of this month fold into its first day (no
        # period starts between them and today); today and tomorrow stay apart;
        # later days fold into the day after tomorrow (same month as tomorrow
        # whenever such days are in the range). Compared as UTC instants of the
        # local midnights, not converted per row: the read scans every bucket of
        # the month. One row per (scope, subject) carrying its rows as an array:
        # the Python side is one parse.
        day = (
            f"multiIf({before(today)}, '{first}', {before(tomorrow)}, '{today}', "
            f"{before(after)}, '{tomorrow}', '{after}')"
        )
        raw = self.sink.query_raw(
            "SELECT scope, subject, groupArray([feature, model, day, "
            "toString(cost_usd), toString(price_usd)]) FROM ("
            f"SELECT scope, subject, feature, model, {day} AS day, "
            "sum(cost_usd) AS cost_usd, sum(price_usd) AS price_usd "
            f"FROM {self.table} WHERE tenant = {quote(tenant)} AND ({' OR '.join(scopes)}) "
            f"AND bucket >= toDateTime({int(start.timestamp())}, 'UTC') "
            f"AND bucket < toDateTime({int(end.timestamp())}, 'UTC') "
            "GROUP BY scope, subject, feature, model, day) GROUP BY scope, subject "
            # One engine thread: the read is background work, and on a small
            # machine its other threads would take the cores the checks run on.
            "SETTINGS max_threads = 1",
            "JSONCompact",
        )
        return {(int(scope), subject): rows for scope, subject, rows in orjson.loads(raw)["data"]}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
