"""The processor loop: log -> decode -> dedupe -> price -> ClickHouse -> commit.

Checkpoint order for every batch (the ``# Step N.`` markers match; steps 2-6
are ``Pipeline.run`` in processor/pipeline.py, the one pipeline replay runs too):

1. Mark the attempt, per partition, in the attempts file (processor/attempts.py).
   Crash after this, up to step 8: the next start finds the mark and narrows the
   batch, so a record that kills the process is found and dead-lettered after
   ``attempts_limit`` deaths instead of wedging its partition.
2. Decode and validate every record. Records that cannot be events, or whose
   handling raises anything at all, become dead letters; they never block the
   partition.
3. Drop duplicates: inside the batch, against this process's recent keys, then
   against ``usage_event_ids`` in ClickHouse. Before that lookup, when an
   INSERT of ours failed or partitions were newly assigned to us, restore
   ``usage_event_ids`` from the events written recently: that INSERT (or the
   last one of the member that died holding those partitions) may have landed
   in ``usage_events`` only, and its ids must be found, or this batch stores
   them a second time. Crash during the repair: it is repeated, idempotently.
4. Price the new events (cached price resolution, Decimal arithmetic) and build
   their rows; a record whose pricing or row raises becomes a dead letter.
5. Publish dead letters to the DLQ and wait for its acknowledgement.
   Crash after this: the batch is read again and the DLQ gets a second copy
   (same original topic/partition/offset headers, so it is recognisable).
6. Insert the new events in ONE statement; the materialized views update the
   dedupe index and the meters from the same INSERT, each as its own part,
   after the usage_events part. If the store refuses the data, the insert is
   bisected: refused records are dead-lettered, the rest is written.
   Crash between the parts (a torn write): the start-up repair
   (``processor/verify.py`` repair_at_start) restores the index, then the
   meters, their rollups and the running totals, before anything is read; a
   new owner of the partitions repairs the index at step 3. An exception
   there: step 3 of the retry repairs first.
   Crash after this (or mid-bisection): the batch is read again, step 3 finds
   every stored id and inserts nothing twice; a retry of the identical batch is
   also absorbed by the insert_deduplication_token.
7. Commit the next offsets to the log (with any earlier batch's that failed).
   Crash before this: as above, nothing is lost or counted twice. A commit the
   broker refuses (ILLEGAL_GENERATION in a rebalance) is retried until it is
   accepted or the partition leaves us: this member's position is already past
   those records, so nobody would commit them otherwise, and the group would
   show lag forever for a partition that receives nothing more.
8. Clear the attempt's mark and remember the inserted keys in memory (a cache
   only, never the truth). Crash before this: a stale mark at an offset already
   committed is never read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.errors import MeterlineError, StoreError
from core.gc_policy import cyclic_gc_paused
from core.health import Liveness
from core.log.base import (
    DLQ_DETAIL_HEADER,
    DLQ_ORIGINAL_OFFSET_HEADER,
    DLQ_ORIGINAL_PARTITION_HEADER,
    DLQ_ORIGINAL_TOPIC_HEADER,
    DLQ_REASON_HEADER,
    LogConsumer,
    OutMessage,
    Record,
)
from pricing.base import PriceBook
from processor import metrics
from processor.attempts import Attempts, Plan
from processor.decode import DeadLetter
from processor.pipeline import (
    NO_HOOKS,
    BatchResult,
    DeadLetterSink,
    LiveTables,
    Pipeline,
    StepHooks,
)
from processor.verify import RECENT_MS, repair_dedupe_index
from schemas.mappings import EventMappings
from sinks.base import Engine

log = logging.getLogger(__name__)


def dead_letter_message(letter: DeadLetter) -> OutMessage:
    record = letter.record
    headers = (
        *record.headers,
        (DLQ_REASON_HEADER, letter.reason.encode()),
        (DLQ_DETAIL_HEADER, letter.detail[:1000].encode("utf-8", "replace")),
        (DLQ_ORIGINAL_TOPIC_HEADER, record.topic.encode()),
        (DLQ_ORIGINAL_PARTITION_HEADER, str(record.partition).encode()),
        (DLQ_ORIGINAL_OFFSET_HEADER, str(record.offset).encode()),
    )
    return OutMessage(record.key or b"", record.value, headers)


class Processor:
    def __init__(
        self,
        consumer: LogConsumer,
        engine: Engine,
        price_book: PriceBook,
        dead_letters: DeadLetterSink,
        *,
        batch_max_events: int = 20_000,
        batch_max_wait_s: float = 0.5,
        dedupe_cache_ids: int = 200_000,
        dedupe_horizon_days: int = 35,
        known_tenant: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        hooks: StepHooks | None = None,
        liveness: Liveness | None = None,
        attempts: Attempts | None = None,
        mappings: EventMappings | None = None,
    ) -> None:
        self._consumer = consumer
        self._sql = engine.sql  # for the dedupe-index repair (step 3's precondition)
        self._hooks = hooks or NO_HOOKS
        self._pipeline = Pipeline(
            LiveTables(engine),
            price_book,
            dead_letters,
            dedupe_cache_ids=dedupe_cache_ids,
            horizon_ms=dedupe_horizon_days * 86_400_000,
            known_tenant=known_tenant,
            clock=clock,
            hooks=self._hooks,
            mappings=mappings,
        )
        # In memory when none is given (tests, bench): counts deaths only durably
        # when built by meterline.runtime with a file in the data folder.
        self._attempts = attempts or Attempts()
        self._batch_max_events = batch_max_events
        self._batch_max_wait_s = batch_max_wait_s
        # Set when usage_event_ids may lack ids of events written since then
        # (processed_at, epoch ms): step 3 repairs it before its lookup.
        self._repair_since: int | None = None
        # Next offsets stored in ClickHouse whose commit the log refused (step 7),
        # per partition we still own, and when we last tried them.
        self._uncommitted: dict[int, int] = {}
        self._commit_tried = 0.0
        self.totals = BatchResult()
        # Busy from a poll or a batch's first attempt until it is done: a batch
        # retried past METERLINE_STUCK_AFTER_S makes the process exit (health.py).
        self.liveness = liveness or Liveness("processor")

    def run(self, stop: threading.Event) -> None:
        """Poll and process until ``stop`` is set; the current batch is finished first."""
        pending: list[Record] = []
        started = 0.0
        while not stop.is_set():
            # Polling builds the batch's records: the same reason to pause.
            with cyclic_gc_paused():
                budget = self._batch_max_events - len(pending)
                self.liveness.busy("polling the log")
                records = self._consumer.poll(min(budget, 10_000), 0.1)
                self.liveness.idle()
                if self._consumer.take_assigned():
                    # A member that died holding these may have torn its last INSERT.
                    self._needs_repair(int(time.time() * 1000) - RECENT_MS)
                revoked = self._consumer.take_revoked()
                if revoked:
                    # Not ours any more: the new owner reads them again from the
                    # committed offsets (and step 3 drops what we stored).
                    pending = [r for r in pending if r.partition not in revoked]
                    for partition in revoked:
                        self._uncommitted.pop(partition, None)
                if self._uncommitted and not pending and time.monotonic() - self._commit_tried >= 1:
                    self._commit({})  # idle: nothing else would commit them
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
        self.liveness.busy(f"writing a batch of {len(records)} records")
        try:
            while records:
                try:
                    self.process_batch(records)
                    return
                except (MeterlineError, OSError) as exc:
                    metrics.STORE_RETRIES.inc()
                    self.liveness.busy(
                        f"retrying a batch of {len(records)} records ({str(exc)[:300]})"
                    )
                    # Before keepalive() can hand partitions to another member:
                    # it would replay this batch against an index that may lack
                    # its ids. If the store is still away, step 3 repairs later.
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
            self.liveness.idle()
            if paused:
                self._consumer.resume()

    def process_batch(self, records: list[Record]) -> BatchResult:
        """Process a polled batch: in one piece, or in pieces while a killer is narrowed down."""
        with cyclic_gc_paused():
            total = BatchResult()
            remaining = records
            while remaining:
                plan = self._attempts.plan(remaining)
                total.add(self._process_batch(plan))
                remaining = plan.rest
            return total

    def _process_batch(self, plan: Plan) -> BatchResult:
        self._hooks.batch_started()
        self._hooks.at("after_poll")
        metrics.EVENTS_READ.inc(len(plan.records) + len(plan.condemned))
        metrics.BATCH_SIZE.observe(len(plan.records))

        # Step 1. Mark the attempt before anything that could kill the process.
        self._attempts.begin(plan)
        began_ms = int(time.time() * 1000)
        try:
            # Step 3's precondition: the stored ids include every stored event
            # (a torn INSERT of ours, or of a dead member, is mended first).
            self._repair_index()
            # Steps 2-6. Decode, dedupe, price, dead letters, insert (processor/pipeline.py).
            result = self._pipeline.run(plan.records, plan.condemned)
        except Exception:
            # Handled (the caller retries the batch): not a death, so it does not count.
            self._attempts.abandon(plan)
            # An INSERT may have failed after its usage_events part was stored.
            self._needs_repair(began_ms)
            raise

        self._hooks.at("after_insert")

        # Step 7. Commit: only now is the batch done as far as the log knows.
        self._commit(result.next_offsets)

        self._hooks.at("after_commit")

        # Step 8. Clear the attempt's mark; cache the keys we now know are stored.
        self._attempts.done(plan)
        self._pipeline.remember(result.stored_keys)
        metrics.EVENTS_STORED.inc(result.stored)
        if result.duplicates:
            metrics.EVENTS_DUPLICATE.labels("batch").inc(result.in_batch_duplicates)
            metrics.EVENTS_DUPLICATE.labels("stored").inc(
                result.duplicates - result.in_batch_duplicates
            )
        self._accumulate(result)
        for partition, behind in self._consumer.lag().items():
            metrics.LAG.labels(str(partition)).set(behind)
        return result

    def _commit(self, next_offsets: dict[int, int]) -> None:
        """Commit ``next_offsets`` and any refused earlier; keep them for a retry if refused.

        The rows are stored either way: a commit lost to a crash costs only
        re-reading (step 3 drops what is stored). A refused one must be retried,
        not dropped: our position is past those records, so we never commit them
        otherwise, and the group stays behind on a partition that gets no more.
        """
        offsets = {**self._uncommitted, **next_offsets}  # a later batch's offset wins
        self._commit_tried = time.monotonic()
        try:
            self._consumer.commit(offsets)
        except Exception as exc:
            self._uncommitted = offsets
            log.warning("offset commit failed (batch is stored; commit retried): %s", exc)
            return
        self._uncommitted = {}

    def _needs_repair(self, since_ms: int) -> None:
        if self._repair_since is None or since_ms < self._repair_since:
            self._repair_since = since_ms

    def _repair_index(self, quiet: bool = False) -> None:
        """Restore usage_event_ids if a torn INSERT may have left it short."""
        if self._repair_since is None:
            return
        try:
            restored = repair_dedupe_index(self._sql, self._repair_since)
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
        self._attempts.close()

    def _accumulate(self, result: BatchResult) -> None:
        t = self.totals
        t.records += result.records
        t.stored += result.stored
        t.duplicates += result.duplicates
        t.dead += result.dead
        t.unpriced += result.unpriced


__all__ = [
    "BatchResult",
    "DeadLetterSink",
    "Processor",
    "StepHooks",
    "StoreError",
    "dead_letter_message",
]
