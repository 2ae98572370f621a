"""A durable local log in one SQLite file (WAL mode), shaped like Kafka.

Why our own: the embedded default must run with no servers, and no maintained
Python package offers a partitioned, offset-addressed, group-committed log.
SQLite in WAL mode with ``synchronous=FULL`` gives us durable, atomic appends
(a commit is fsynced before we acknowledge) and safe concurrent readers, also
from other processes.

Model: topics have partitions; a record's partition is ``murmur2(key) % n`` as in
Kafka; offsets are dense per partition; consumer groups commit the next offset
per partition; ``offsets_for_time`` seeks by the append (ingest) timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

import orjson

from core.errors import LogUnavailable
from core.health import Liveness, PartProblem
from core.log._murmur2 import partition_for
from core.log.base import LogAdmin, LogConsumer, LogProducer, OutMessage, Record
from core.types import Headers

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_ends (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (topic, partition, timestamp_ms);
CREATE TABLE IF NOT EXISTS committed (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, partition)
);
"""

log = logging.getLogger(__name__)

# Readers in this process wake up as soon as a writer commits, instead of
# sleeping out their poll interval (other processes fall back to polling).
_appended = threading.Condition()


def connect(path: Path) -> sqlite3.Connection:
    """Open the log database with the durability settings every connection needs."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Every tenant's raw events: the owner's alone, whatever the umask. SQLite
    # gives the -wal and -shm files the mode of this one.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged append
    # survives power loss. NORMAL would only survive a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


def topic_partitions(conn: sqlite3.Connection, topic: str) -> int:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None:
        raise LookupError(f"topic {topic!r} does not exist in the embedded log")
    return int(row[0])


def committed_offsets(conn: sqlite3.Connection, topic: str, group: str) -> dict[int, int]:
    rows = conn.execute(
        "SELECT partition, next_offset FROM committed WHERE topic = ? AND grp = ?",
        (topic, group),
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def partition_ends(conn: sqlite3.Connection, topic: str) -> dict[int, int]:
    """Per partition, the offset the next appended record gets."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM partition_ends WHERE topic = ?", (topic,)
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def read_records(
    conn: sqlite3.Connection,
    topic: str,
    partition: int,
    start: int,
    limit: int,
    end: int | None = None,
) -> list[Record]:
    """Up to ``limit`` records from ``start`` on (before ``end`` when given), in offset order."""
    rows = conn.execute(
        "SELECT offset, key, value, headers, timestamp_ms FROM records "
        "WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ? "
        "ORDER BY offset LIMIT ?",
        (topic, partition, start, end if end is not None else 2**63 - 1, limit),
    ).fetchall()
    return [
        Record(topic, partition, offset, key, value, _decode_headers(headers), ts)
        for offset, key, value, headers, ts in rows
    ]


def _encode_headers(headers: Headers) -> bytes:
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _decode_headers(blob: bytes) -> Headers:
    return tuple((k, v.encode("latin-1")) for k, v in orjson.loads(blob))


class EmbeddedAdmin(LogAdmin):
    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._lock = threading.Lock()

    def ensure_topic(self, topic: str, partitions: int, replication: int = 1) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                    (topic, partitions),
                )
                self._conn.executemany(
                    "INSERT OR IGNORE INTO partition_ends VALUES (?, ?, 0)",
                    [(topic, p) for p in range(self.partitions(topic))],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def partitions(self, topic: str) -> int:
        return topic_partitions(self._conn, topic)

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        ends = self.end_offsets(topic)
        out = {}
        for partition, end in ends.items():
            row = self._conn.execute(
                "SELECT min(offset) FROM records WHERE topic = ? AND partition = ? "
                "AND timestamp_ms >= ?",
                (topic, partition, timestamp_ms),
            ).fetchone()
            out[partition] = end if row[0] is None else int(row[0])
        return out

    def read_range(
        self, topic: str, partition: int, start: int, end: int, batch: int = 10_000
    ) -> Iterator[list[Record]]:
        position = start
        while position < end:
            records = read_records(self._conn, topic, partition, position, batch, end)
            if not records:
                return
            yield records
            position = records[-1].offset + 1

    def end_offsets(self, topic: str) -> dict[int, int]:
        return partition_ends(self._conn, topic)

    def committed(self, topic: str, group: str) -> dict[int, int]:
        return committed_offsets(self._conn, topic, group)

    def close(self) -> None:
        self._conn.close()


class EmbeddedProducer(LogProducer):
    """Appends with group commit: one writer thread, one fsync for many requests.

    Each request's messages go into the same SQLite transaction as whatever
    other requests are waiting, so under load many requests share one fsync
    while each is still acknowledged only after its commit returned.
    """

    def __init__(self, path: Path, topic: str, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self._path = path
        self._timeout_s = timeout_s
        self._pending: queue.Queue[tuple[Sequence[OutMessage], Future[None]] | None] = queue.Queue()
        self._conn = connect(path)
        self._partitions = topic_partitions(self._conn, topic)
        self._liveness = Liveness(f"embedded-log-writer[{topic}]")
        self._died = "thread ended"
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="embedded-log-writer", daemon=True)
        self._writer.start()

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        done = self._submit(messages)
        try:
            # On timeout wait_for cancels the wrapper, which cancels `done`
            # only if the writer has not taken it yet (see _run).
            await asyncio.wait_for(asyncio.wrap_future(done), self._timeout_s)
        except TimeoutError:
            raise LogUnavailable("embedded log did not commit in time", retry_after=1.0) from None
        except sqlite3.Error as exc:
            raise LogUnavailable(f"embedded log write failed: {exc}", retry_after=1.0) from exc

    def publish_sync(self, messages: Sequence[OutMessage]) -> None:
        """Blocking variant for tools and tests (same durability guarantee)."""
        done = self._submit(messages)
        try:
            done.result(timeout=self._timeout_s)
        except TimeoutError:
            done.cancel()  # not taken yet: it will never be written
            raise LogUnavailable("embedded log did not commit in time", retry_after=1.0) from None
        except sqlite3.Error as exc:
            raise LogUnavailable(f"embedded log write failed: {exc}", retry_after=1.0) from exc

    def _submit(self, messages: Sequence[OutMessage]) -> Future[None]:
        if not self._writer.is_alive():
            # Queued work would never be written: refuse now, not after the timeout.
            raise LogUnavailable(f"embedded log writer stopped: {self._died}", retry_after=1.0)
        done: Future[None] = Future()
        self._pending.put((messages, done))
        return done

    def _run(self) -> None:
        try:
            self._write_until_closed()
        except BaseException as exc:
            # A bug: every later request would time out (503) until restart.
            # Say so; the watchdog sees the dead thread and the process exits.
            self._died = f"{type(exc).__name__}: {exc}"
            log.critical("embedded log writer died", exc_info=True)

    def _write_until_closed(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            jobs = [first]
            with contextlib.suppress(queue.Empty):
                while len(jobs) < 1000:
                    job = self._pending.get_nowait()
                    if job is None:
                        self._pending.put(None)
                        break
                    jobs.append(job)
            # Take each job: from here on its request can no longer cancel it,
            # so whatever the request saw (202 or 503), the batch is written
            # whole or not at all, and setting its result cannot fail. A job
            # whose request already gave up (503) is dropped unwritten: its
            # client retries. Setting a result on such a cancelled future
            # raised InvalidStateError here and killed this thread (issue 11).
            jobs = [job for job in jobs if job[1].set_running_or_notify_cancel()]
            if not jobs:
                continue
            self._liveness.busy(f"appending {len(jobs)} request(s) to the log")
            try:
                self._append([m for messages, _ in jobs for m in messages])
            except Exception as exc:  # the futures carry the failure to each request
                for _, done in jobs:
                    done.set_exception(exc)
                continue
            finally:
                self._liveness.idle()
            for _, done in jobs:
                done.set_result(None)
            with _appended:
                _appended.notify_all()

    def _append(self, messages: Sequence[OutMessage]) -> None:
        now_ms = int(time.time() * 1000)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            ends = partition_ends(conn, self.topic)
            rows = []
            for message in messages:
                partition = partition_for(message.key, self._partitions)
                offset = ends[partition]
                ends[partition] = offset + 1
                rows.append(
                    (
                        self.topic,
                        partition,
                        offset,
                        message.key,
                        message.value,
                        _encode_headers(message.headers),
                        now_ms,
                    )
                )
            conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "UPDATE partition_ends SET next_offset = ? WHERE topic = ? AND partition = ?",
                [(offset, self.topic, p) for p, offset in ends.items()],
            )
            # The commit is the durability point: only after it returns is any
            # request acknowledged. A crash before it loses the whole group and
            # every request in it gets an error (or no answer) and retries.
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def ready(self) -> bool:
        return self._writer.is_alive()

    def problem(self, stuck_after_s: float) -> PartProblem | None:
        if not self._writer.is_alive() and not self._closed:
            self._liveness.dead(self._died)
        return self._liveness.problem(stuck_after_s)

    def close(self) -> None:
        self._closed = True
        self._pending.put(None)
        self._writer.join(timeout=self._timeout_s)
        self._conn.close()


class EmbeddedConsumer(LogConsumer):
    """A group member that owns the given partitions (all of them by default).

    The embedded log has no group coordinator: several workers in one process
    split the partitions between them explicitly.
    """

    def __init__(
        self,
        path: Path,
        topic: str,
        group: str,
        partitions: Sequence[int] | None = None,
        poll_interval_s: float = 0.05,
    ) -> None:
        self.topic = topic
        self.group = group
        self._conn = connect(path)
        count = topic_partitions(self._conn, topic)
        self._assigned = list(partitions) if partitions is not None else list(range(count))
        committed = committed_offsets(self._conn, topic, group)
        self._positions = {p: committed.get(p, 0) for p in self._assigned}
        self._poll_interval_s = poll_interval_s
        self._next = 0  # round-robin start, so no partition starves

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while True:
            records = self._read(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            with _appended:
                _appended.wait(min(remaining, self._poll_interval_s))

    def _read(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        order = self._assigned[self._next :] + self._assigned[: self._next]
        self._next = (self._next + 1) % max(1, len(self._assigned))
        # Fill from the partitions in turn; the start rotates each call, so no
        # partition starves behind a busy one.
        for partition in order:
            budget = max_records - len(out)
            if budget <= 0:
                break
            records = read_records(
                self._conn, self.topic, partition, self._positions[partition], budget
            )
            if records:
                out.extend(records)
                self._positions[partition] = records[-1].offset + 1
        return out

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO committed VALUES (?, ?, ?, ?) ON CONFLICT (topic, grp, partition) "
                "DO UPDATE SET next_offset = excluded.next_offset",
                [(self.topic, self.group, p, o) for p, o in next_offsets.items()],
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def seek(self, next_offsets: Mapping[int, int]) -> None:
        for partition, offset in next_offsets.items():
            if partition in self._positions:
                self._positions[partition] = offset

    def assignment(self) -> list[int]:
        return list(self._assigned)

    def lag(self) -> dict[int, int]:
        ends = partition_ends(self._conn, self.topic)
        return {p: max(0, ends.get(p, 0) - pos) for p, pos in self._positions.items()}

    def close(self) -> None:
        self._conn.close()
