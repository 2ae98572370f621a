"""Records that kill the process: attempts counted durably, narrowed, then dead-lettered.

An exception is caught and dead-letters its record (processor/pipeline.py), but
some failures kill the process itself: a native crash in a library, the OOM
killer, a SIGKILL. Such a record is never committed, so without this every
restart would read it again and die again, and its partition would be wedged.

Before the risky steps of a batch the processor marks, per partition, "an
attempt of the first W records from offset O is under way" (one small SQLite
transaction per batch, never per record), and clears the mark after the offset
commit. A mark still there at the next start means that attempt died. Then:

1. the next attempt at O takes only the first half (W // 2) of those records,
   and that partition alone, so a record of another partition is never blamed;
2. when that half succeeds, the other half holds the killer: it is marked at
   the next offset as a window that died, and halved in turn;
3. a single record whose attempt has died ``limit`` times is dead-lettered
   (reason ``crashed_processor``) without being handled again; the partition
   moves on.

A killer is found after about log2(batch size) + ``limit`` restarts. Only deaths
count: an error the processor handles (a store outage it retries) restores the
marks as they were. The file is per host: with Kafka, a partition that moves to
another member starts counting there afresh.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.log.base import Record
from processor.decode import DeadLetter

DEFAULT_LIMIT = 3
# Marks of partitions this host no longer reads would stay for ever: drop old ones.
_FORGET_AFTER_S = 30 * 86_400

_Key = tuple[str, int, int]  # (topic, partition, first offset of the window)
_Mark = tuple[int, int]  # (window: records from the first offset, deaths)


@dataclass
class Plan:
    """What to handle now, what to dead-letter unhandled, and what is left for later."""

    records: list[Record]
    condemned: list[DeadLetter] = field(default_factory=list)
    rest: list[Record] = field(default_factory=list)
    begin: dict[_Key, _Mark] = field(default_factory=dict)
    before: dict[_Key, _Mark | None] = field(default_factory=dict)
    hints: dict[_Key, _Mark] = field(default_factory=dict)


class Attempts:
    def __init__(self, path: Path | None = None, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"attempts limit must be at least 1, got {limit}")
        self.limit = limit
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per processor loop; it is created on the building thread
        # and used on the loop's thread, never both at once.
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            timeout=30,
            isolation_level=None,
            check_same_thread=False,
        )
        self._lock = threading.Lock()
        # WAL + NORMAL: a mark survives the death of the process (what it counts);
        # a power loss may lose one, which costs one more attempt, nothing else.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS attempts (topic TEXT, partition INTEGER, start INTEGER, "
            "window INTEGER, deaths INTEGER, updated REAL, PRIMARY KEY (topic, partition, start))"
        )
        self._db.execute("DELETE FROM attempts WHERE updated < ?", (time.time() - _FORGET_AFTER_S,))

    def plan(self, records: Sequence[Record]) -> Plan:
        """Split a polled batch by the marks left by attempts that died."""
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        topic = records[0].topic if records else ""
        marks = {p: self._get((topic, p, rs[0].offset)) for p, rs in by_partition.items()}
        narrowed = [p for p, mark in marks.items() if mark is not None]
        if not narrowed:
            plan = Plan(list(records))
            for p, rs in by_partition.items():
                key = (topic, p, rs[0].offset)
                plan.begin[key], plan.before[key] = (len(rs), 1), None
            return plan
        # A partition under suspicion is handled alone.
        p = narrowed[0]
        rs, (window, deaths) = by_partition[p], marks[p] or (1, 1)
        key = (topic, p, rs[0].offset)
        plan = Plan([])
        plan.before[key] = (window, deaths)
        if window <= 1 and deaths >= self.limit:
            plan.condemned.append(
                DeadLetter(
                    rs[0],
                    "crashed_processor",
                    f"handling this record killed the process {deaths} times "
                    f"(limit {self.limit}); it is not handled again",
                )
            )
            taken = 0
        elif window <= 1:
            taken = 1
            plan.begin[key] = (1, deaths + 1)
        else:
            taken = window // 2
            plan.begin[key] = (taken, 1)
            # If this half survives, the killer is in the other half.
            after = rs[taken].offset if len(rs) > taken else rs[-1].offset + 1
            plan.hints[(topic, p, after)] = (window - taken, 1)
        plan.records = rs[:taken]
        handled = {r.offset for r in rs[: max(taken, 1)]}
        plan.rest = [r for r in records if r.partition != p or r.offset not in handled]
        return plan

    def begin(self, plan: Plan) -> None:
        """Mark the attempt: done BEFORE anything in the batch could kill the process."""
        now = time.time()
        self._write([(*k, *m, now) for k, m in plan.begin.items()], [])

    def abandon(self, plan: Plan) -> None:
        """The attempt ended in an error we handle: it did not die, so it does not count."""
        now = time.time()
        restore = [(*k, *m, now) for k, m in plan.before.items() if m is not None]
        gone = [k for k, m in plan.before.items() if m is None]
        self._write(restore, gone)

    def done(self, plan: Plan) -> None:
        """The attempt's offsets are committed: clear its marks, keep the narrowing hints."""
        now = time.time()
        self._write([(*k, *m, now) for k, m in plan.hints.items()], list(plan.before))

    def close(self) -> None:
        self._db.close()

    def _get(self, key: _Key) -> _Mark | None:
        with self._lock:
            row = self._db.execute(
                "SELECT window, deaths FROM attempts WHERE topic = ? AND partition = ? "
                "AND start = ?",
                key,
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _write(
        self, upserts: Sequence[tuple[str, int, int, int, int, float]], deletes: Sequence[_Key]
    ) -> None:
        if not upserts and not deletes:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM attempts WHERE topic = ? AND partition = ? AND start = ?",
                    deletes,
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?)", upserts
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


__all__ = ["DEFAULT_LIMIT", "Attempts", "Plan"]
