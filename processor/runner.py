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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

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
    Prepared,
    StepHooks,
)
from processor.verify import RECENT_MS, repair_dedupe_index
from schemas import native_decode
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


@dataclass
class _InFlight:
    """A batch whose store part (``Pipeline.finish``) runs on the writer thread."""

    plan: Plan
    future: Future[BatchResult]
    began_ms: int
    # Partitions revoked since it was handed over: not committed, not retried by us.
    revoked: set[int] = field(default_factory=set)


class Processor:
    def __init__(
        self,
        consumer: LogConsumer,
        engine: Engine,
        price_book: PriceBook,
        dead_letters: DeadLetterSink,
        *,
        batch_max_events: int = 50_000,
        batch_max_wait_s: float = 0.5,
        dedupe_cache_ids: int = 200_000,
        dedupe_horizon_days: int = 35,
        known_tenant: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        hooks: StepHooks | None = None,
        liveness: Liveness | None = None,
        attempts: Attempts | None = None,
        mappings: EventMappings | None = None,
        pipelined: bool = False,
        native: bool = True,
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
            native=native,
        )
        if native and not self._pipeline.native:
            log.warning(
                "token events take the per-record path (same results, ~2x the CPU): %s",
                native_decode.WHY_UNAVAILABLE or "the store's writer does not take Arrow rows",
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
        # Pipelined: batch N's store part (stored-key lookup, dead letters, INSERT:
        # the engine and the log working with the GIL released) runs on this one
        # writer thread while this thread polls and prepares batch N+1 (decode,
        # pricing, rows: Python). One thread, so store parts never overlap each
        # other; N is committed (step 7) before N+1's store part starts.
        self._writer: ThreadPoolExecutor | None = None
        if pipelined and self._attempts.limit >= 2:
            # limit >= 2: a death while N+1 is marked counts once against N+1's
            # records too (processor/attempts.py); with a limit of 1 that one count
            # could condemn an innocent record, so that setting runs serially.
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="meterline-writer")
            consumer.before_revoke(self._await_in_flight)
        self._in_flight: _InFlight | None = None
        # Partitions revoked while a batch was held out of `pending` (see _hand_over).
        self._revoked_meanwhile: set[int] = set()

    @property
    def native(self) -> bool:
        """Whether token events take the column path (processor/token_columns.py)."""
        return self._pipeline.native

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
                revoked = self._take_revoked()
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
            flight = self._in_flight
            if flight is not None and (flight.future.done() or not pending):
                # Commit as soon as it landed; and with nothing polled, wait for
                # it here: a hung INSERT must show in liveness even without traffic.
                self._settle(stop)
            if due:
                # Each attempt pauses the collector itself; the backoff between
                # attempts (a store outage can last hours) does not.
                self._process_with_retry(pending, stop)
                pending = []
        if pending:
            self._process_with_retry(pending, stop)
        self._settle(stop)

    def _process_with_retry(self, records: list[Record], stop: threading.Event) -> None:
        """Hand the batch to the writer thread when it can be; else write it here, with retries."""
        if self._writer is not None and self._repair_since is None:
            plan = self._attempts.plan(records)
            # Only a batch no earlier attempt died on: narrowing a killer down stays
            # serial, one attempt at a time, as processor/attempts.py counts deaths.
            if not (plan.condemned or plan.rest or plan.hints or any(plan.before.values())):
                if self._hand_over(plan, stop):
                    return
                # The batch before it failed and was retried here: write this one
                # here too, minus partitions that left us meanwhile.
                records = [r for r in records if r.partition not in self._revoked_meanwhile]
                if stop.is_set() or not records:
                    return
        self._settle(stop)
        self._write_with_retry(records, stop)

    def _hand_over(self, plan: Plan, stop: threading.Event) -> bool:
        """Steps 1-4 here, then the batch in flight settled, then steps 5-6 on the writer.

        False when the batch in flight failed: it was retried here and this batch's
        prepared work is dropped (its mark cleared), for the caller to redo serially.
        """
        assert self._writer is not None
        self._hooks.batch_started()
        self._hooks.at("after_poll")
        metrics.EVENTS_READ.inc(len(plan.records))
        metrics.BATCH_SIZE.observe(len(plan.records))
        # Step 1. Mark the attempt before anything that could kill the process.
        self._attempts.begin(plan)
        began_ms = int(time.time() * 1000)
        try:
            # Steps 2-4 without the store, while the batch before runs its INSERT.
            with cyclic_gc_paused():
                prepared = self._pipeline.prepare(plan.records, plan.condemned)
        except Exception:
            self._attempts.abandon(plan)
            raise
        self._revoked_meanwhile = set()
        if not self._settle(stop):
            self._attempts.abandon(plan)
            return False
        # The batch before is committed; this one's lookup runs after its INSERT.
        self.liveness.busy(f"writing a batch of {len(plan.records)} records")
        future = self._writer.submit(self._finish, prepared)
        self._in_flight = _InFlight(plan, future, began_ms)
        return True

    def _finish(self, prepared: Prepared) -> BatchResult:
        """On the writer thread: the store part (its batch's objects are alive: no GC pass)."""
        with cyclic_gc_paused():
            return self._pipeline.finish(prepared)

    def _await_in_flight(self) -> None:
        """Before a revocation returns: the INSERT in flight has landed or failed."""
        flight = self._in_flight
        if flight is not None:
            wait([flight.future])  # its outcome is _settle's to handle

    def _settle(self, stop: threading.Event) -> bool:
        """Finish the batch in flight: steps 7-8 if its store part landed; else retry it here.

        True when nothing was in flight or it is now committed; False when it failed
        (it was retried here: written, or kept unwritten because we are stopping).
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        self.liveness.busy(f"writing a batch of {len(flight.plan.records)} records")
        try:
            result = flight.future.result()
        except Exception as exc:
            # As in _process_batch: an error is not a death; the INSERT may be torn.
            self._attempts.abandon(flight.plan)
            self._needs_repair(flight.began_ms)
            self.liveness.idle()
            if not isinstance(exc, (MeterlineError, OSError)):
                raise
            records = [r for r in flight.plan.records if r.partition not in flight.revoked]
            self._write_with_retry(records, stop, failed=exc)
            return False
        for partition in flight.revoked:
            result.next_offsets.pop(partition, None)
        self._complete(flight.plan, result)
        self.liveness.idle()
        return True

    def _take_revoked(self) -> set[int]:
        revoked = self._consumer.take_revoked()
        if revoked:
            self._revoked_meanwhile |= revoked
            if self._in_flight is not None:
                self._in_flight.revoked |= revoked
        return revoked

    def _write_with_retry(
        self,
        records: list[Record],
        stop: threading.Event,
        failed: MeterlineError | OSError | None = None,
    ) -> None:
        """Write the batch, retrying with backoff while the store is away.

        Between retries the consumer stays in its group with its partitions
        paused, so the batch is neither lost nor handed to another member
        while we still hold it. If a rebalance takes partitions away meanwhile,
        their records leave the batch uncommitted: the new owner reads them.
        ``failed``: its first attempt already failed so (on the writer thread);
        the backoff comes first, as after any failed attempt.
        """
        delay = 0.2
        paused = False
        self.liveness.busy(f"writing a batch of {len(records)} records")
        try:
            while records:
                try:
                    if failed is not None:
                        first, failed = failed, None
                        raise first
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
                        revoked = self._take_revoked()
                        if revoked:
                            records = [r for r in records if r.partition not in revoked]
                    delay = min(delay * 2, 30.0)
        finally:
            self.liveness.idle()
            if paused:
                self._consumer.resume()

    def process_batch(self, records: list[Record]) -> BatchResult:
        """Process a polled batch: in one piece, or in pieces while a killer is narrowed down."""
        self._settle(threading.Event())  # the batch in flight, if any, comes first
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

        self._complete(plan, result)
        return result

    def _complete(self, plan: Plan, result: BatchResult) -> None:
        """Steps 7-8 of a batch whose store part landed."""
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
        if self._writer is not None:
            # A store part still running finishes first (it is never cut in half by
            # us); its batch stays uncommitted and is read again, which dedupe absorbs.
            self._writer.shutdown(wait=True)
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
