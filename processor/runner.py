"""The processor loop: log -> decode -> dedupe -> price -> ClickHouse -> commit.

Checkpoint order for every batch (the ``# Step N.`` markers below match):

1. Decode and validate every record. Records that cannot be events become dead
   letters; they never block the partition.
2. Drop duplicates: inside the batch, against this process's recent keys, then
   against ``usage_event_ids`` in ClickHouse. Before that lookup, when an
   INSERT of ours failed or partitions were newly assigned to us, restore
   ``usage_event_ids`` from the events written recently: that INSERT (or the
   last one of the member that died holding those partitions) may have landed
   in ``usage_events`` only, and its ids must be found, or this batch stores
   them a second time. Crash during the repair: it is repeated, idempotently.
3. Price the new events (cached price resolution, Decimal arithmetic).
4. Publish dead letters to the DLQ and wait for its acknowledgement.
   Crash after this: the batch is read again and the DLQ gets a second copy
   (same original topic/partition/offset headers, so it is recognisable).
5. Insert the new events in ONE statement; the materialized views update the
   dedupe index and the meters from the same INSERT, each as its own part,
   after the usage_events part.
   Crash between those parts (a torn write): the start-up repair
   (``processor/verify.py`` repair_at_start) restores the index, then the
   meters, before anything is read; a new owner of the partitions repairs the
   index at step 2. An exception there: step 2 of the retry repairs first.
   Crash after this: the batch is read again, step 2 finds every id stored and
   inserts nothing; a retry of the identical batch is also absorbed by the
   insert_deduplication_token.
6. Commit the next offsets to the log.
   Crash before this: as above, nothing is lost or counted twice.
7. Remember the inserted keys in memory (a cache only, never the truth).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from meterline.errors import MeterlineError, StoreError
from meterline.log.base import (
    DLQ_REASON_HEADER,
    LogConsumer,
    OutMessage,
    Record,
)
from processor import metrics
from processor.chaos import Chaos
from processor.decode import DeadLetter, Decoded, decode
from processor.dedupe import Deduplicator
from processor.pricing.base import PriceBook
from processor.rows import EventColumns
from processor.verify import RECENT_MS, repair_dedupe_index
from sinks.base import EventKey, Sink

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Call once, after start-up, in a process that runs processors or a gateway.

    The hot loop allocates millions of short-lived objects (decoded JSON, row
    values) that reference counting frees; with the default thresholds the
    cyclic collector ran constantly over the long-lived start-up objects (~40%
    of processor time in the benchmark's profile). Freeze what start-up built
    and collect cycles far less often: 13.8k -> 19.3k events/s in the benchmark.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class _GcPause:
    """No cyclic garbage collection while batches are processed (``paused()``).

    A batch keeps ~10 live objects per event (records, decoded JSON, models,
    rows) until it is written, and every young collection walked all of them
    again: 22% of the processor's time even with ``tune_gc``'s thresholds
    (isolated batch loop: 28.2 -> 22.0 µs per event). The hot path makes no
    reference cycles and a batch's memory is bounded by its size.

    The collector is process-wide, so pauses are counted: nested ones and
    ``--workers`` threads share one pause, and the collector comes back on
    when the last one ends (never if someone else had turned it off). Cycles
    made meanwhile (a gateway in the same process, exception tracebacks) are
    still reclaimed: whenever a pause ends, the young generation is collected
    if the last such collection is a second old, everything if it is a minute
    old, even while other workers' pauses go on. Not at every pause's end:
    each poll's 10k fresh records made that 6% of the processor's time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._turned_off = False  # we disabled the collector (it was on)
        self._young_at = 0.0
        self._full_at = time.monotonic()

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0 and gc.isenabled():
                gc.disable()
                self._turned_off = True
            self._depth += 1
        try:
            yield
        finally:
            generation = None
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._turned_off:
                    self._turned_off = False
                    gc.enable()
                now = time.monotonic()
                if now - self._full_at >= 60.0:
                    self._full_at = self._young_at = now
                    generation = 2
                elif now - self._young_at >= 1.0:
                    self._young_at = now
                    generation = 0
            if generation is not None:  # outside the lock: other workers' batches go on
                gc.collect(generation)


_cyclic_gc_paused = _GcPause().paused


class DeadLetterSink(Protocol):
    """Where dead letters go: a log topic (Kafka DLQ topic or embedded DLQ topic).

    ``publish`` returns only once every letter is durable: offsets are
    committed right after, and a letter lost here would be lost for good.
    """

    def publish(self, letters: Sequence[DeadLetter]) -> None: ...


@dataclass
class BatchResult:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    unpriced: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)


def dead_letter_message(letter: DeadLetter) -> OutMessage:
    record = letter.record
    headers = (
        *record.headers,
        (DLQ_REASON_HEADER, letter.reason.encode()),
        ("meterline-dlq-detail", letter.detail[:1000].encode("utf-8", "replace")),
        ("meterline-original-topic", record.topic.encode()),
        ("meterline-original-partition", str(record.partition).encode()),
        ("meterline-original-offset", str(record.offset).encode()),
    )
    return OutMessage(record.key or b"", record.value, headers)


class Processor:
    def __init__(
        self,
        consumer: LogConsumer,
        sink: Sink,
        price_book: PriceBook,
        dead_letters: DeadLetterSink,
        *,
        batch_max_events: int = 20_000,
        batch_max_wait_s: float = 0.5,
        dedupe_cache_ids: int = 200_000,
        dedupe_horizon_days: int = 35,
        known_tenant: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        chaos: Chaos | None = None,
    ) -> None:
        self._consumer = consumer
        self._sink = sink
        self._price_book = price_book
        self._dead_letters = dead_letters
        self._dedupe = Deduplicator(sink, dedupe_cache_ids)
        self._batch_max_events = batch_max_events
        self._batch_max_wait_s = batch_max_wait_s
        self._horizon_ms = dedupe_horizon_days * 86_400_000
        self._known_tenant = known_tenant
        self._chaos = chaos or Chaos.from_env()
        self._clock = clock
        # Set when usage_event_ids may lack ids of events written since then
        # (processed_at, epoch ms): step 2 repairs it before its lookup.
        self._repair_since: int | None = None
        self.totals = BatchResult()

    def run(self, stop: threading.Event) -> None:
        """Poll and process until ``stop`` is set; the current batch is finished first."""
        pending: list[Record] = []
        started = 0.0
        while not stop.is_set():
            # Polling builds the batch's records: the same reason to pause.
            with _cyclic_gc_paused():
                budget = self._batch_max_events - len(pending)
                records = self._consumer.poll(min(budget, 10_000), 0.1)
                if self._consumer.take_assigned():
                    # A member that died holding these may have torn its last INSERT.
                    self._needs_repair(int(time.time() * 1000) - RECENT_MS)
                revoked = self._consumer.take_revoked()
                if revoked and pending:
                    # Not ours any more: drop uncommitted, the new owner reads them again.
                    pending = [r for r in pending if r.partition not in revoked]
                if records:
                    if not pending:
                        started = time.monotonic()
                    pending.extend(records)
                due = pending and (
                    len(pending) >= self._batch_max_events
                    or time.monotonic() - started >= self._batch_max_wait_s
                )
            if due:
                # Each attempt pauses the collector itself; the backoff between
                # attempts (a store outage can last hours) does not.
                self._process_with_retry(pending, stop)
                pending = []
        if pending:
            self._process_with_retry(pending, stop)

    def _process_with_retry(self, records: list[Record], stop: threading.Event) -> None:
        """Write the batch, retrying with backoff while the store is away.

        Between retries the consumer stays in its group with its partitions
        paused, so the batch is neither lost nor handed to another member
        while we still hold it. If a rebalance takes partitions away meanwhile,
        their records leave the batch uncommitted: the new owner reads them.
        """
        delay = 0.2
        paused = False
        try:
            while records:
                try:
                    self.process_batch(records)
                    return
                except (MeterlineError, OSError) as exc:
                    metrics.STORE_RETRIES.inc()
                    # Before keepalive() can hand partitions to another member:
                    # it would replay this batch against an index that may lack
                    # its ids. If the store is still away, step 2 repairs later.
                    self._repair_index(quiet=True)
                    if stop.is_set():
                        # Not committed: the next start reads this batch again.
                        log.warning("stopping with an unwritten batch (will be re-read): %s", exc)
                        return
                    log.error(
                        "batch of %d records failed, retrying in %.1fs: %s",
                        len(records),
                        delay,
                        exc,
                    )
                    deadline = time.monotonic() + delay
                    while time.monotonic() < deadline and not stop.is_set():
                        self._consumer.keepalive()
                        paused = True
                        revoked = self._consumer.take_revoked()
                        if revoked:
                            records = [r for r in records if r.partition not in revoked]
                    delay = min(delay * 2, 30.0)
        finally:
            if paused:
                self._consumer.resume()

    def process_batch(self, records: list[Record]) -> BatchResult:
        with _cyclic_gc_paused():
            return self._process_batch(records)

    def _process_batch(self, records: list[Record]) -> BatchResult:
        self._chaos.batch_started()
        self._chaos.at("after_poll")
        result = BatchResult(records=len(records))
        metrics.EVENTS_READ.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        for record in records:
            end = result.next_offsets.get(record.partition, -1)
            result.next_offsets[record.partition] = max(end, record.offset + 1)

        # Step 1. Decode and validate; invalid records become dead letters, and
        # so do events older than the dedupe horizon: we could no longer prove
        # they are not duplicates, and a billing system must not guess.
        good: list[Decoded] = []
        dead: list[DeadLetter] = []
        oldest_ms = int(self._clock() * 1000) - self._horizon_ms
        for record in records:
            item = decode(record)
            if isinstance(item, DeadLetter):
                dead.append(item)
            elif self._known_tenant is not None and not self._known_tenant(item.tenant):
                dead.append(DeadLetter(record, "unknown_tenant", f"no API key for {item.tenant!r}"))
            elif item.time_ms < oldest_ms:
                dead.append(
                    DeadLetter(
                        record,
                        "beyond_dedupe_horizon",
                        f"event time is older than the {self._horizon_ms // 86_400_000}-day "
                        "dedupe horizon",
                    )
                )
            else:
                good.append(item)

        # Step 2. Drop duplicates (in batch, recent, stored), once the stored
        # ids are known to include every stored event (see the docstring).
        self._repair_index()
        keys: list[EventKey] = [d.key for d in good]
        new_indexes, in_batch, stored_dupes = self._dedupe.new_indexes(keys)
        result.duplicates = in_batch + stored_dupes

        # Step 3. Price the new events.
        now_ms = int(time.time() * 1000)
        columns = EventColumns()
        price_book = self._price_book
        version = price_book.version
        for index in new_indexes:
            item = good[index]
            priced = price_book.price(
                item.event.envelope.type,
                item.usage,
                item.time_ms,
                item.event.envelope.subject or "",
            )
            if not priced.priced:
                result.unpriced += 1
                metrics.EVENTS_UNPRICED.labels(item.event.envelope.type).inc()
            columns.add(item, priced, version, now_ms)

        # Step 4. Dead letters first: once offsets are committed they must be in the DLQ.
        if dead:
            self._dead_letters.publish(dead)
            result.dead = len(dead)
            reasons: dict[str, list[DeadLetter]] = {}
            for letter in dead:
                reasons.setdefault(letter.reason, []).append(letter)
            for reason, letters in reasons.items():
                metrics.EVENTS_DEAD.labels(reason).inc(len(letters))
                first = letters[0].record
                log.warning(
                    "%d record(s) dead-lettered: %s, e.g. %s/%d/%d: %s",
                    len(letters),
                    reason,
                    first.topic,
                    first.partition,
                    first.offset,
                    letters[0].detail[:200],
                )

        # Step 5. One INSERT; the views derive ids and meters from it.
        if len(columns):
            token = (
                "-".join(
                    f"{records[0].topic}:{p}:{o}" for p, o in sorted(result.next_offsets.items())
                )
                + f"-n{len(records)}"
            )
            began = time.perf_counter()
            try:
                with self._chaos.around_insert(self._sink):
                    self._sink.insert_events(columns.columns, token)
            except Exception:
                # The usage_events part may be stored without its ids.
                self._needs_repair(now_ms)
                raise
            metrics.INSERT_SECONDS.observe(time.perf_counter() - began)
            result.stored = len(columns)
            # A sample of ~100 per batch keeps the delay distribution; one
            # observe() per event cost 5% of the processor's time.
            now_s = time.time()
            ingested_at = columns.columns["ingested_at"]
            for ingested in ingested_at[:: max(1, len(ingested_at) // 100)]:
                metrics.END_TO_END_SECONDS.observe(max(0.0, now_s - ingested / 1000))

        self._chaos.at("after_insert")

        # Step 6. Commit: only now is the batch done as far as the log knows.
        try:
            self._consumer.commit(result.next_offsets)
        except Exception as exc:
            # The rows are stored; whoever reads these offsets again is
            # stopped by step 2. Losing the commit costs only re-reading.
            log.warning("offset commit failed (batch is stored, will be re-read): %s", exc)

        self._chaos.at("after_commit")

        # Step 7. Cache the keys we now know are stored.
        self._dedupe.remember(keys[i] for i in new_indexes)
        metrics.EVENTS_STORED.inc(result.stored)
        if result.duplicates:
            metrics.EVENTS_DUPLICATE.labels("batch").inc(in_batch)
            metrics.EVENTS_DUPLICATE.labels("stored").inc(stored_dupes)
        self._accumulate(result)
        for partition, behind in self._consumer.lag().items():
            metrics.LAG.labels(str(partition)).set(behind)
        return result

    def _needs_repair(self, since_ms: int) -> None:
        if self._repair_since is None or since_ms < self._repair_since:
            self._repair_since = since_ms

    def _repair_index(self, quiet: bool = False) -> None:
        """Restore usage_event_ids if a torn INSERT may have left it short."""
        if self._repair_since is None:
            return
        try:
            restored = repair_dedupe_index(self._sink, self._repair_since)
        except (MeterlineError, OSError) as exc:
            if not quiet:
                raise
            log.warning("dedupe index repair failed, retried before the next lookup: %s", exc)
            return
        self._repair_since = None
        if restored:
            metrics.IDS_RESTORED.inc(restored)
            log.warning(
                "dedupe index: %d stored event(s) had no id in usage_event_ids; restored",
                restored,
            )

    @property
    def consumer(self) -> LogConsumer:
        return self._consumer

    def close(self) -> None:
        """Leave the group without committing anything more."""
        self._consumer.close()

    def _accumulate(self, result: BatchResult) -> None:
        t = self.totals
        t.records += result.records
        t.stored += result.stored
        t.duplicates += result.duplicates
        t.dead += result.dead
        t.unpriced += result.unpriced


__all__ = ["BatchResult", "DeadLetterSink", "Processor", "StoreError", "dead_letter_message"]
