"""The batch pipeline, ONE for the live processor and for replay.

decode -> dedupe -> price -> dead letters -> write, steps 1 to 5 of the checkpoint
order in processor/runner.py (the ``# Step N.`` markers below are those steps).
``Processor`` runs it on every polled batch and then commits offsets; ``replay``
runs it on ranges of the log. What differs is only what each is given:

- a ``Target``: ``LiveTables`` (``usage_events``) or ``BillingRun`` (rows of
  ``billing_run_events`` under a run name); dedupe, the INSERT and its token follow it;
- a ``DeadLetterSink``: the DLQ topic (live) or a collector (replay);
- admission checks (known tenants, the dedupe horizon): live only.

The processor never dies on data. Any exception while handling ONE record (decode,
pricing, row building; any type) makes that record a dead letter whose detail names
the exception, and the batch goes on. An INSERT the store refuses for a data reason
is bisected so that only the refused records are dead-lettered. Only a store that
cannot take writes (``StoreUnavailable``, or a refused batch while the target itself
does not answer) propagates: the caller keeps the batch and retries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from core.errors import StoreError, StoreUnavailable
from core.log.base import Record
from core.types import EventKey
from pricing.base import PriceBook
from pricing.columns import price_token_columns
from processor import metrics, token_columns
from processor.decode import DeadLetter, Decoded, decode
from processor.dedupe import Deduplicator
from processor.rows import EventColumns
from processor.token_columns import TokenRows
from schemas.mappings import EventMappings, builtin_mappings
from schemas.native_decode import AVAILABLE as NATIVE
from schemas.usage import EventType
from sinks.base import LIVE_EVENTS, Engine, EventTable, billing_run, quote
from sinks.reader import SqlReader

log = logging.getLogger(__name__)


class StepHooks(Protocol):
    """Called at the checkpoint steps; the chaos tests pass one that SIGKILLs the process.

    Passed in by whoever builds the processor (``meterline.runtime``), never read
    from the environment: production code has no crash switch.
    """

    def batch_started(self) -> None: ...
    def at(self, point: str) -> None: ...
    def around_insert(self, sql: SqlReader) -> AbstractContextManager[None]: ...
    def handling(self, record: Record) -> None: ...


class NoHooks:
    """Hooks that do nothing (production); test hooks subclass it and override one step."""

    def batch_started(self) -> None:
        pass

    def at(self, point: str) -> None:
        pass

    def around_insert(self, sql: SqlReader) -> AbstractContextManager[None]:
        return nullcontext()

    def handling(self, record: Record) -> None:
        pass


NO_HOOKS: StepHooks = NoHooks()


class DeadLetterSink(Protocol):
    """Where dead letters go: a log topic (Kafka DLQ topic or embedded DLQ topic).

    ``publish`` returns only once every letter is durable: offsets are
    committed right after, and a letter lost here would be lost for good.
    """

    def publish(self, letters: Sequence[DeadLetter]) -> None: ...


def offset_spans(records: Iterable[Record]) -> dict[int, list[int]]:
    """Partition -> [first, last] offset of these records, in whatever order they come.

    Per record, so written for the common case (offsets rising): one dict read and
    one compare. The form with a (min, max) tuple per record cost 0.33 µs a record,
    and its twin for the next offsets 0.18; this 0.07 (issue 17, round 3).
    """
    spans: dict[int, list[int]] = {}
    for record in records:
        offset = record.offset
        span = spans.get(record.partition)
        if span is None:
            spans[record.partition] = [offset, offset]
        elif offset > span[1]:
            span[1] = offset
        elif offset < span[0]:
            span[0] = offset
    return spans


class Target:
    """Where a batch's new events are written (its ``writer``) and where dedupe looks them up
    (its ``keys``): both bound to the same ``EventTable`` of one engine."""

    def __init__(self, engine: Engine, table: EventTable) -> None:
        self.table = table
        self.sql = engine.sql
        self.writer = engine.writer(table)
        self.keys = engine.key_lookup(table)

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def run(self) -> str | None:
        return self.table.run

    def token(self, records: Sequence[Record]) -> str:
        """insert_deduplication_token: the batch's offset range per partition.

        Deterministic for a given (partition, offset range), so a retry of the very
        same batch after a crash is absorbed by ClickHouse as well as by dedupe.
        """
        topic = records[0].topic if records else ""
        spans = offset_spans(records)
        return "-".join(f"{topic}:{p}:{a}-{b}" for p, (a, b) in sorted(spans.items()))

    def encode(self, columns: EventColumns) -> Any:
        """The rows in the writer's form (e.g. the Arrow table), built by the caller's thread."""
        return self.writer.encode(columns.columns)

    def probe(self) -> None:
        """Raise ``StoreError`` when the target cannot take rows at all (e.g. its table is gone)."""
        self.sql.query_raw(f"SELECT 1 FROM {self.sql.database}.{self.name} LIMIT 0", "CSV")


class LiveTables(Target):
    """``usage_events``: the materialized views fill the dedupe ids and the meters."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, LIVE_EVENTS)


class BillingRun(Target):
    """Rows of ``billing_run_events`` under one run name (replay); live tables untouched."""

    def __init__(self, engine: Engine, run: str) -> None:
        super().__init__(engine, billing_run(run))
        self._run = run

    def token(self, records: Sequence[Record]) -> str:
        # One table holds every run: the run's name keeps their tokens apart.
        return f"replay:{self._run}:{super().token(records)}"

    def probe(self) -> None:
        self.sql.query_raw(
            f"SELECT 1 FROM {self.sql.database}.{self.name} WHERE run = {quote(self._run)} LIMIT 0",
            "CSV",
        )


@dataclass
class BatchResult:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    in_batch_duplicates: int = 0
    dead: int = 0
    unpriced: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)
    stored_keys: list[EventKey] = field(default_factory=list)
    dead_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        self.records += other.records
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.in_batch_duplicates += other.in_batch_duplicates
        self.dead += other.dead
        self.unpriced += other.unpriced
        for p, o in other.next_offsets.items():
            self.next_offsets[p] = max(self.next_offsets.get(p, -1), o)
        self.stored_keys.extend(other.stored_keys)
        for reason, n in other.dead_reasons.items():
            self.dead_reasons[reason] = self.dead_reasons.get(reason, 0) + n


@dataclass
class _TokenPart:
    """The token rows of a batch, priced, as the writer's Arrow table (with their keys)."""

    table: Any
    keys: list[EventKey]
    records: list[Record]
    unpriced: list[int]  # rows priced 0 for want of a price


@dataclass
class Prepared:
    """A batch after ``Pipeline.prepare``: everything but the store's part.

    ``rows`` are the candidates' rows in the writer's form (``Target.encode``: an
    Arrow table for chDB), ``row_keys``/``row_records`` their dedupe keys and
    records in the same order, ``unpriced`` row -> event type. ``lookup`` holds the
    keys of every candidate (rows and pricing/row failures) for the store lookup,
    ``failed`` those failures with their keys.
    """

    records: Sequence[Record]
    result: BatchResult
    dead: list[DeadLetter]
    lookup: list[EventKey] = field(default_factory=list)
    rows: Any = None
    row_keys: list[EventKey] = field(default_factory=list)
    row_records: list[Record] = field(default_factory=list)
    unpriced: dict[int, str] = field(default_factory=dict)
    failed: list[tuple[EventKey, DeadLetter]] = field(default_factory=list)
    token: str = ""


def failure(record: Record, reason: str, exc: BaseException) -> DeadLetter:
    """A dead letter for an unexpected exception: its class and message in the detail."""
    return DeadLetter(record, reason, f"{type(exc).__name__}: {exc}")


class Pipeline:
    def __init__(
        self,
        target: Target,
        price_book: PriceBook,
        dead_letters: DeadLetterSink,
        *,
        dedupe_cache_ids: int = 200_000,
        horizon_ms: int | None = None,
        known_tenant: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        hooks: StepHooks = NO_HOOKS,
        mappings: EventMappings | None = None,
        native: bool = True,
    ) -> None:
        self._target = target
        # The gateway's event mappings (schemas/mappings.py); the built-ins when none given.
        self._mappings = mappings if mappings is not None else builtin_mappings()
        self._price_book = price_book
        self._dead_letters = dead_letters
        self._dedupe = Deduplicator(target.keys, dedupe_cache_ids)
        self._horizon_ms = horizon_ms
        self._known_tenant = known_tenant
        self._clock = clock
        self._hooks = hooks
        # Token events as columns (processor/token_columns.py): only where the
        # decoder was built and the writer takes Arrow rows; else every record
        # takes the per-record path, with the same results.
        self._arrow_schema = target.writer.arrow_schema if native and NATIVE else None
        self._hooked = type(hooks).handling is not NoHooks.handling
        # pyarrow imports pandas (when installed: chDB depends on it) at its first
        # conversion from Python objects, ~1 s on this box. Paid here, at start-up,
        # not inside the first batch, whose records would wait that long behind it
        # (seen in py-spy: 27% of prepare's samples over a 500k-event run).
        pa.array([0], pa.int64())

    @property
    def native(self) -> bool:
        """Whether token events take the column path (processor/token_columns.py)."""
        return self._arrow_schema is not None

    def run(self, records: Sequence[Record], condemned: Sequence[DeadLetter] = ()) -> BatchResult:
        """Steps 1-5 for one batch; ``condemned`` are dead letters decided beforehand."""
        return self.finish(self.prepare(records, condemned))

    def prepare(self, records: Sequence[Record], condemned: Sequence[DeadLetter] = ()) -> Prepared:
        """The batch's work that needs no store: decode, the in-memory dedupe, pricing, rows.

        Pure Python on the caller's thread, with no engine query and nothing
        published: the live processor runs it while the previous batch's
        ``finish`` is still writing (processor/runner.py), so nothing here may
        depend on that batch having landed. Candidates are priced BEFORE the
        store is asked whether they are stored (the store's answer is only known
        in ``finish``); a candidate found stored there is counted a duplicate and
        its row and any pricing failure are dropped, exactly as if it had never
        been priced.
        """
        result = BatchResult(records=len(records) + len(condemned))
        spans = offset_spans((*records, *(c.record for c in condemned)))
        result.next_offsets = {partition: last + 1 for partition, (_, last) in spans.items()}
        batch = Prepared(records, result, list(condemned))
        dead = batch.dead

        # Step 1. Decode and validate; invalid records become dead letters, and
        # so do (live only) events older than the dedupe horizon: we could no
        # longer prove they are not duplicates, and a billing system must not guess.
        # The horizon's edge once per batch, not per event (a clock call each): a
        # batch is decoded in well under a second, against a horizon of days.
        horizon = self._horizon_ms
        oldest_ms = None if horizon is None else int(self._clock() * 1000) - horizon
        tokens: TokenRows | None = None
        per_record: Sequence[int] = range(len(records))
        hooked = self._hooked
        if self._arrow_schema is not None and records:
            if hooked:  # before the decoder: a hook that raises condemns its record
                per_record = self._handled(records, dead)
                hooked = False
                records_in = [records[i] for i in per_record]
            else:
                records_in = list(records)
            tokens, back = token_columns.split(records_in, self._known_tenant, oldest_ms)
            if isinstance(per_record, list):  # back to indexes of ``records``
                back = [per_record[i] for i in back]
                if tokens is not None:
                    tokens.at = [per_record[i] for i in tokens.at]
            per_record = back
        good: list[tuple[int, Decoded]] = []
        for index in per_record:
            record = records[index]
            try:
                if hooked:
                    self._hooks.handling(record)
                item = self._admit(decode(record, self._mappings), oldest_ms)
            except Exception as exc:  # the record is the problem, not the process
                item = failure(record, "decode_failed", exc)
            if isinstance(item, DeadLetter):
                dead.append(item)
            else:
                good.append((index, item))

        # Step 2, its memory half: duplicates inside the batch and keys this
        # process stored itself, in batch order (the first occurrence wins). The
        # store is asked in finish().
        if tokens is None:
            owner: list[int] = list(range(len(good)))
            keys: list[EventKey] = [d.key for _, d in good]
        else:
            # Each candidate's owner: j >= 0 is good[j], ~r a token row r.
            slots: list[int | None] = [None] * len(records)
            for j, (index, _) in enumerate(good):
                slots[index] = j
            for r, index in enumerate(tokens.at):
                slots[index] = ~r
            owner = [s for s in slots if s is not None]
            token_keys = tokens.keys
            keys = [good[s][1].key if s >= 0 else token_keys[~s] for s in owner]
        unseen, in_batch, cached = self._dedupe.unseen_indexes(keys)
        result.duplicates = in_batch + cached
        result.in_batch_duplicates = in_batch
        items = [good[owner[u]][1] for u in unseen if owner[u] >= 0]
        now_ms = int(time.time() * 1000)  # processed_at, one for the whole batch
        token_part: _TokenPart | None = None
        if tokens is not None:
            picked = tokens.take([~owner[u] for u in unseen if owner[u] < 0])
            token_part, handed_back = self._token_part(picked, records, now_ms)
            # Rows whose price the column path does not cover: priced one by one.
            for index in handed_back:
                try:
                    item = self._admit(decode(records[index], self._mappings), oldest_ms)
                except Exception as exc:  # as in step 1: the record, not the process
                    item = failure(records[index], "decode_failed", exc)
                if isinstance(item, DeadLetter):  # only if the two paths disagree
                    dead.append(item)
                else:
                    items.append(item)

        # Step 3. Price the candidates and build their rows; a record whose
        # pricing or row raises is a dead letter unless finish() finds it stored.
        columns = EventColumns()
        book = self._price_book
        version = book.version
        per_call = book.per_call
        row_items: list[Decoded] = []
        for item in items:
            key = item.key
            batch.lookup.append(key)
            try:
                priced = book.price(
                    item.envelope.type, item.usage, item.time_ms, item.envelope.subject or ""
                )
                priced = per_call.adjust(item.tenant, item.usage, priced)  # pricing/per_call.py
            except Exception as exc:
                batch.failed.append((key, failure(item.record, "pricing_failed", exc)))
                continue
            try:
                columns.add(item, priced, version, now_ms)  # appends only a complete row
            except Exception as exc:
                batch.failed.append((key, failure(item.record, "row_failed", exc)))
                continue
            if not priced.priced:
                batch.unpriced[len(row_items)] = item.envelope.type
            row_items.append(item)
        batch.row_keys = [i.key for i in row_items]
        batch.row_records = [i.record for i in row_items]
        if row_items:
            # The writer's form (an Arrow table) here, not in finish(): building it
            # holds the GIL, and finish() may run beside the next batch's prepare().
            batch.rows = self._target.encode(columns)
        if token_part is not None:  # after the per-record rows, in batch.rows too
            first = len(batch.row_keys)
            batch.lookup.extend(token_part.keys)
            batch.row_keys.extend(token_part.keys)
            batch.row_records.extend(token_part.records)
            for r in token_part.unpriced:
                batch.unpriced[first + r] = EventType.TOKENS.value
            table = token_part.table
            batch.rows = (
                table if batch.rows is None else self._target.writer.concat([batch.rows, table])
            )
        batch.token = self._target.token(records)
        return batch

    def _handled(self, records: Sequence[Record], dead: list[DeadLetter]) -> list[int]:
        """Indexes of the records the test hook let through; the others are dead letters."""
        kept = []
        for index, record in enumerate(records):
            try:
                self._hooks.handling(record)
            except Exception as exc:
                dead.append(failure(record, "decode_failed", exc))
                continue
            kept.append(index)
        return kept

    def _token_part(
        self, rows: TokenRows, records: Sequence[Record], now_ms: int
    ) -> tuple[_TokenPart | None, list[int]]:
        """The token rows priced over their columns, as the writer's Arrow table, and the
        record indexes of rows whose pricing the column path does not cover."""
        if not len(rows):
            return None, []
        assert self._arrow_schema is not None
        try:
            prices = price_token_columns(self._price_book, rows.columns)
        except Exception:  # a bug there must not stop the pipeline: price them one by one
            log.exception("pricing over columns failed: these token events are priced one by one")
            return None, list(rows.at)
        covered = prices.covered
        handed_back: list[int] = []
        if not pc.all(covered).as_py():
            handed_back = [rows.at[r] for r in pc.indices_nonzero(pc.invert(covered)).to_pylist()]
            inside = pc.indices_nonzero(covered).to_pylist()
            if not inside:
                return None, handed_back
            rows = rows.take(inside)
            prices = prices.take(pa.array(inside, pa.int64()))
        try:
            table = token_columns.table(
                rows, prices, records, self._price_book.version, now_ms, self._arrow_schema
            )
        except Exception:  # as above: a bug here costs the fast path, not the batch
            log.exception("token rows as Arrow failed: these token events take the per-record path")
            return None, [*handed_back, *rows.at]
        unpriced = pc.indices_nonzero(pc.equal(prices.priced, 0)).to_pylist()
        return _TokenPart(table, rows.keys, [records[i] for i in rows.at], unpriced), handed_back

    def finish(self, batch: Prepared) -> BatchResult:
        """The store's part: the stored-key lookup, dead letters, the INSERT (steps 2-5).

        Mostly waits on the engine and the log with the GIL released, so it can
        run on a writer thread. The caller commits offsets only after it returns.
        """
        result = batch.result
        writer = self._target.writer

        # Step 2, its store half: keys the target holds (written by a crashed
        # attempt, another member, or a batch this process finished since prepare()).
        stored = self._dedupe.stored(batch.lookup)
        result.duplicates += len(stored)
        rows, keys, records, unpriced = (
            batch.rows,
            batch.row_keys,
            batch.row_records,
            batch.unpriced,
        )
        failed = batch.failed
        if stored:
            kept = [r for r, key in enumerate(keys) if key not in stored]
            if len(kept) < len(keys):
                # Rare (re-sends, replays after a crash): these rows are left out.
                rows = writer.pick(rows, kept) if kept else None
                keys = [keys[r] for r in kept]
                records = [records[r] for r in kept]
                unpriced = {new: unpriced[old] for new, old in enumerate(kept) if old in unpriced}
            failed = [(key, letter) for key, letter in failed if key not in stored]
        dead = batch.dead + [letter for _, letter in failed]
        for kind in unpriced.values():
            result.unpriced += 1
            metrics.EVENTS_UNPRICED.labels(kind).inc()

        # Step 4. Dead letters first: once offsets are committed they must be in the DLQ.
        self._publish(dead, result)

        # Step 5. One INSERT; the views derive ids and meters from it. Records the
        # store refuses are found by bisecting and dead-lettered (still before the
        # commit); the rest is written.
        if keys:
            began = time.perf_counter()
            with self._hooks.around_insert(self._target.sql):
                refused = self._write(rows, records, keys, batch.token, top=True)
            metrics.INSERT_SECONDS.observe(time.perf_counter() - began)
            self._publish(refused, result)
            stored_records = records
            result.stored_keys = keys
            if refused:  # rare (a bisected insert): leave the refused records out
                refused_at = {(r.record.partition, r.record.offset) for r in refused}
                kept_pairs = [
                    (rec, key)
                    for rec, key in zip(records, keys, strict=True)
                    if (rec.partition, rec.offset) not in refused_at
                ]
                stored_records = [rec for rec, _ in kept_pairs]
                result.stored_keys = [key for _, key in kept_pairs]
            result.stored = len(stored_records)
            # A sample of ~100 per batch keeps the delay distribution; one
            # observe() per event cost 5% of the processor's time.
            now_s = time.time()
            for record in stored_records[:: max(1, len(stored_records) // 100)]:
                metrics.END_TO_END_SECONDS.observe(max(0.0, now_s - record.timestamp_ms / 1000))
        return result

    def remember(self, keys: list[EventKey]) -> None:
        """Cache keys as stored: only once their insert returned (live: and offsets committed)."""
        self._dedupe.remember(keys)

    def _admit(self, item: Decoded | DeadLetter, oldest_ms: int | None) -> Decoded | DeadLetter:
        if isinstance(item, DeadLetter):
            return item
        if self._known_tenant is not None and not self._known_tenant(item.tenant):
            return DeadLetter(item.record, "unknown_tenant", f"no API key for {item.tenant!r}")
        if oldest_ms is not None and item.time_ms < oldest_ms:
            horizon = self._horizon_ms or 0
            return DeadLetter(
                item.record,
                "beyond_dedupe_horizon",
                f"event time is older than the {horizon // 86_400_000}-day dedupe horizon",
            )
        return item

    def _write(
        self,
        rows: Any,
        records: list[Record],
        keys: list[EventKey],
        token: str,
        *,
        top: bool = False,
    ) -> list[DeadLetter]:
        """Insert; when the store refuses the data, bisect and return the refused records.

        A crash in the middle of a bisection costs nothing: the batch is read again
        and step 2 drops every half already stored (dedupe by (tenant, source, id)
        against the stored ids), so no row is inserted twice. The halves' tokens
        extend the batch's and stay deterministic for the same batch.
        """
        writer = self._target.writer
        try:
            writer.insert_encoded(rows, token)
            return []
        except StoreUnavailable:
            raise  # an outage, not the data: the caller keeps the batch and retries
        except StoreError as exc:
            if top:
                # A target that does not answer (e.g. its table was dropped) refuses
                # every record: retry the batch rather than dead-letter good events.
                try:
                    self._target.probe()
                except StoreError:
                    raise exc from None
            if len(records) == 1:
                log.warning("the store refused %s: %s", keys[0], exc)
                return [failure(records[0], "rejected_by_store", exc)]
            error = exc
        half = len(records) // 2
        end = len(records)
        refused = self._write(
            writer.slice(rows, 0, half), records[:half], keys[:half], f"{token}/a"
        )
        refused += self._write(
            writer.slice(rows, half, end), records[half:], keys[half:], f"{token}/b"
        )
        if top and len(refused) == len(records):
            # Every record refused one by one: the store refuses the table, not the
            # data (e.g. a schema change); dead-lettering the stream would be worse.
            raise error
        return refused

    def _publish(self, dead: list[DeadLetter], result: BatchResult) -> None:
        if not dead:
            return
        self._dead_letters.publish(dead)
        result.dead += len(dead)
        reasons: dict[str, list[DeadLetter]] = {}
        for letter in dead:
            reasons.setdefault(letter.reason, []).append(letter)
        for reason, letters in reasons.items():
            result.dead_reasons[reason] = result.dead_reasons.get(reason, 0) + len(letters)
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


__all__ = [
    "NO_HOOKS",
    "BatchResult",
    "BillingRun",
    "DeadLetterSink",
    "LiveTables",
    "NoHooks",
    "Pipeline",
    "Prepared",
    "StepHooks",
    "Target",
]
