"""Answers of closed time kept in memory, exact: GET /v1/usage reads the engine for the open hour.

Why: a month of one tenant costs the engine 30-70 ms a request at the bench's scale
(three tables read and summed again, ~5-15 ms each however few rows they hold,
docs/benchmarks.md), and all but the last hour of that month is the same answer
every time. So a query ``[from, to)`` is cut at ``H``, the start of the current UTC
hour: ``[from, H)`` (closed) is answered from memory when this process already read
it and nothing it summed has changed since; ``[H, to)`` (open) is always read. The
two answers are added up key by key (``merge``).

Exact by construction, not by expiry:

- The cut is a partition of the meter rows (a row's window depends on its own
  ``window_start`` only, never on the range), so closed + open = the whole, for
  every window, timezone, grouping and filter (tests/query/test_sealed_answers.py
  holds it to the uncut answer over random queries with writes in between).
- A closed answer is used only while its tenant's epoch and the global one
  (``sinks/changes.py``) are what they were *before* its engine read began: a late
  event, a torn-INSERT repair or any statement writing the meters bumps them after it
  lands, so an answer that might lack a write is never served again.
- Only where this process sees every write (chDB in this process: ``SqlReader.changes``
  is set). Against a ClickHouse server other processes write, and nothing is kept.

Memory: at most ``max_bytes`` of the engine's JSON (the bench's month by day and
subject is ~600 KB), least recently used dropped first.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sinks.changes import MeterChanges

if TYPE_CHECKING:
    from query.meters import MeterQuery


@dataclass(frozen=True)
class Answer:
    """An answer of build_sql in two parts: rows already shaped (JSON), rows still to shape.

    ``head``: the JSON objects of ``head_rows`` answer rows, comma-joined, final (their
    windows closed before the cut); ``tail``: the engine's JSONCompact rows of the
    window the cut falls in (every row with window=none), which the open part may add
    to. Kept in ``SealedAnswers`` and shared by requests: never mutated.
    """

    head: bytes
    head_rows: int
    tail: list[list[Any]]

    @property
    def rows(self) -> int:
        return self.head_rows + len(self.tail)

    def size(self) -> int:
        # A JSONCompact row of the meters is ~250 bytes; its Python lists about twice that.
        return len(self.head) + 500 * len(self.tail)


class SealedAnswers:
    """Answers of closed ranges by their SQL, each with the epoch read before its engine read."""

    def __init__(self, changes: MeterChanges, max_bytes: int) -> None:
        self.changes = changes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[tuple[int, int], Answer]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, sql: str, epoch: tuple[int, int]) -> Answer | None:
        with self._lock:
            kept = self._answers.get(sql)
            if kept is None or kept[0] != epoch:
                self.misses += 1
                return None
            self._answers.move_to_end(sql)
            self.hits += 1
            return kept[1]

    def put(self, sql: str, epoch: tuple[int, int], answer: Answer) -> None:
        size = answer.size()
        if size > self.max_bytes // 4:
            return  # one answer never pushes out most of the others
        with self._lock:
            old = self._answers.pop(sql, None)
            if old is not None:
                self._bytes -= old[1].size()
            self._answers[sql] = (epoch, answer)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._answers.popitem(last=False)
                self._bytes -= dropped.size()


def split(query: MeterQuery, cut: datetime) -> tuple[MeterQuery, MeterQuery | None] | None:
    """(closed part, open part or None), or None when nothing of the range is before ``cut``."""
    if query.end is not None and query.end <= cut:
        return query, None
    if query.start is not None and query.start >= cut:
        return None
    return replace(query, end=cut), replace(query, start=cut)


def closed_cut(changes: MeterChanges) -> datetime:
    """``H``: the start of the current UTC hour (what ``split`` is given), from the
    clock the writers mark against (``MeterChanges.cut_ms``)."""
    return datetime.fromtimestamp(changes.cut_ms() // 1000, UTC)


def merge(
    closed: list[list[Any]], fresh: list[list[Any]], n: int, money: set[int], *, windowed: bool
) -> list[list[Any]]:
    """Two answers of build_sql (JSONCompact rows, sorted by key) over disjoint ranges -> one.

    ``n``: the key columns at the start of each row (the window first if ``windowed``,
    then the groups); ``money``: the indexes of the Decimal columns (text).

    Rows with the same key (the window in progress at the cut, or every group with
    window=none) are added column by column: counts as ints, money as Decimal (the
    engine's text in, exact text out; ``answer_rows`` writes it in plain notation).
    The result is sorted by key as the engine's ORDER BY sorts it (UTF-8 byte order is
    code point order, which is Python's).
    """
    if not fresh:
        return closed
    if not closed:
        return fresh
    # The closed rows are sorted by window first: those before the first window of
    # the fresh rows cannot share a key with them (kept as they are, in order).
    head = bisect_left(closed, fresh[0][0], key=lambda r: r[0]) if windowed else 0
    by_key = {tuple(r[:n]): r for r in fresh}
    tail: list[list[Any]] = []
    for row in closed[head:]:
        other = by_key.pop(tuple(row[:n]), None)
        if other is None:
            tail.append(row)
            continue
        tail.append(
            [
                *row[:n],
                *(
                    str(Decimal(a) + Decimal(b)) if i in money else a + b
                    for i, (a, b) in enumerate(zip(row[n:], other[n:], strict=True), n)
                ),
            ]
        )
    tail.extend(by_key.values())
    tail.sort(key=lambda r: r[:n])
    return closed[:head] + tail
