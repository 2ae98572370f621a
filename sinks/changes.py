"""``MeterChanges``: which tenants' *past* meters changed, the signal an exact answer cache needs.

``GET /v1/usage`` keeps the answers of closed time (before the current UTC hour) in
memory (``query/sealed_answers.py``). Such an answer is exact only while no row it
summed changes, and the meters of closed time do change: a late event (event time in
an earlier hour), a re-sent batch after a crash, a repair, an operator's SQL. This is
where every such write leaves a mark, and the cache compares marks: an epoch per
tenant (bumped by an INSERT that carries an event of that tenant older than the
current hour) and a global epoch (bumped by any other statement that writes a meter
or event table).

Only an engine that sees every write can keep it honestly: chDB in this process
(one process owns the folder, and the processor writes through the same engine). A
ClickHouse server is written by other processes too, so its engine has no
``MeterChanges`` and nothing is cached there.

Why epochs and not per-range invalidation: they are compared under no lock on the
read path (two integers), and a tenant's late events are rare against its current
ones; a late event drops all the tenant's closed answers, and the next read of each
pays the engine once.
"""

from __future__ import annotations

import re
import threading
import time

HOUR_MS = 3_600_000
# Statements that cannot change a table: the engine runs them and nothing is marked.
_READS = ("SELECT", "WITH", "SHOW", "DESC", "EXPLAIN", "EXISTS", "SET", "USE", "CHECK")
# The tables a cached answer is read from, and the one that feeds them through views.
_METER_TABLES = re.compile(r"usage_(meters|events)", re.IGNORECASE)
_COMMENT = re.compile(r"(--[^\n]*\n|/\*.*?\*/|\s)+", re.DOTALL)


def sealed_before(now_ms: int) -> int:
    """The start of the current UTC hour: answers for time before it are cacheable."""
    return now_ms - now_ms % HOUR_MS


class MeterChanges:
    """Epochs of writes into closed time, per tenant and for everything."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._global = 0
        self._tenants: dict[str, int] = {}
        self._cut_ms = 0

    def cut_ms(self) -> int:
        """``sealed_before(now)``, never lower than it was: time before it is closed.

        The one clock both sides read. Exact only if it never goes back: an answer
        kept for ``[from, H)`` relies on every later write of an event older than ``H``
        being marked, i.e. on the writer's cut being >= ``H``. A wall clock stepped
        back (NTP) would break that; the maximum seen cannot.
        """
        with self._lock:
            self._cut_ms = max(self._cut_ms, sealed_before(now_ms()))
            return self._cut_ms

    def epoch(self, tenant: str) -> tuple[int, int]:
        """Read BEFORE the engine query whose answer is cached: a write that lands
        after this read bumps it, so that answer is never used (it may or may not
        hold the write). A write that landed before it is in the answer."""
        with self._lock:
            return self._global, self._tenants.get(tenant, 0)

    def tenants_wrote_late(self, tenants: set[str]) -> None:
        """Call AFTER an INSERT of events returns (or fails: a failed INSERT may have
        landed part of its rows) with the tenants it carried an event of older than
        ``cut_ms()``, read after the INSERT returned."""
        if not tenants:
            return
        with self._lock:
            for tenant in tenants:
                self._tenants[tenant] = self._tenants.get(tenant, 0) + 1

    def statement_ran(self, sql: str) -> None:
        """Any statement but the processor's INSERT: one that may write a meter or
        event table (repairs, backfills, an operator's SQL) drops every answer.
        Call after it ran (or failed)."""
        head = _COMMENT.sub(" ", sql[:200]).lstrip().upper()
        if head.startswith(_READS) or not _METER_TABLES.search(sql):
            return
        with self._lock:
            self._global += 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000
