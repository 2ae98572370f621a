"""The pipelined processor: batch N written on the writer thread while N+1 is prepared.

Real chDB and the embedded log, the processor's own ``run`` loop on a thread. What
the pipelining must never change: N is committed before N+1's stored-key lookup and
INSERT start; an INSERT that fails in flight is retried before anything after it is
written; a revocation returns only once the INSERT in flight has landed; and the
order of pricing and the stored-key lookup does not turn a duplicate into a dead letter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.errors import StoreUnavailable
from core.log.base import INGESTED_AT_HEADER, TENANT_HEADER, OutMessage
from core.log.embedded import EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.pipeline import LiveTables, NoHooks, Pipeline
from processor.runner import Processor
from sinks.base import LIVE_EVENTS, EventTable, EventWriter
from sinks.chdb_sink import ChdbEngine, ChdbWriter
from sinks.migrations import migrate
from tests.support.events import ground_truth, make_events, stored_totals, totals_query

HEADERS = ((TENANT_HEADER, b"default"), (INGESTED_AT_HEADER, b"0"))


def publish(log_path: Path, events: list[dict[str, Any]]) -> None:
    EmbeddedProducer(log_path, "events").publish_sync(
        [OutMessage(b"one-partition", orjson.dumps(e), HEADERS) for e in events]
    )


class Journal:
    """What happened, in order, across the processor's two threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, Any]] = []

    def add(self, what: str, detail: Any = None) -> None:
        with self.lock:
            self.entries.append((what, detail))


class JournalEngine(ChdbEngine):
    """The real chDB engine; INSERTs journaled, optionally held or failing."""

    journal: Journal
    fail_first = 0  # this many INSERTs fail as an outage
    hold: Callable[[], None] | None = None  # called inside each INSERT

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return JournalWriter(self, table)


class JournalWriter(ChdbWriter):
    def __init__(self, engine: JournalEngine, table: EventTable) -> None:
        super().__init__(engine, table)
        self.engine = engine

    def insert_encoded(self, rows: Any, dedup_token: str) -> None:
        engine = self.engine
        engine.journal.add("insert", dedup_token)
        if engine.hold is not None:
            engine.hold()
        if engine.fail_first > 0:
            engine.fail_first -= 1
            raise StoreUnavailable("ClickHouse is down (test)")
        super().insert_encoded(rows, dedup_token)
        engine.journal.add("inserted", dedup_token)


class JournalConsumer(EmbeddedConsumer):
    journal: Journal
    barrier: Callable[[], None] | None = None

    def commit(self, next_offsets: Any) -> None:
        # A slow commit: were the next batch's store part started before this one
        # returns, its INSERT would be journaled first.
        time.sleep(0.1)
        super().commit(next_offsets)
        self.journal.add("commit", dict(next_offsets))

    def before_revoke(self, barrier: Callable[[], None]) -> None:
        self.barrier = barrier


class StartHooks(NoHooks):
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.started = threading.Semaphore(0)

    def batch_started(self) -> None:
        self.journal.add("batch_started")
        self.started.release()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournalEngine]:
    store = JournalEngine(tmp_path / "chdb", "mtest")
    store.journal = Journal()
    migrate(store)
    yield store
    store.close()


def processor(log_path: Path, store: ChdbEngine, journal: Journal, **kwargs: Any) -> Processor:
    consumer = JournalConsumer(log_path, "events", "g")
    consumer.journal = journal
    return Processor(
        consumer,
        store,
        CatalogPriceBook(),
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        batch_max_events=10,
        batch_max_wait_s=0.05,
        pipelined=True,
        **kwargs,
    )


def run_until(worker: Processor, done: Callable[[], bool], timeout_s: float = 60) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(30)
    worker.close()
    assert done(), "the processor did not finish in time"


def stored(store: ChdbEngine) -> Any:
    return stored_totals(store.sql.query_rows(totals_query("usage_events")))


def test_the_next_batch_is_prepared_while_one_is_inserted_and_written_only_after_its_commit(
    log_path: Path, store: JournalEngine
) -> None:
    journal = store.journal
    events = make_events(30, seed=71)
    publish(log_path, events)
    hooks = StartHooks(journal)
    # The first INSERT waits (bounded) for the next batch to start being prepared: it
    # only can while the INSERT is in flight if the processor is pipelined.
    first = [True]

    def hold() -> None:
        if first[0]:
            first[0] = False
            hooks.started.acquire(timeout=10)  # the first batch's own start
            assert hooks.started.acquire(timeout=10), "batch 2 was not prepared meanwhile"

    store.hold = hold
    worker = processor(log_path, store, journal, hooks=hooks)
    run_until(worker, lambda: worker.totals.stored == 30)

    assert stored(store) == ground_truth(events)
    entries = journal.entries
    # The second batch started (was polled, marked and prepared) before the first
    # batch's INSERT returned ...
    assert entries.index(("batch_started", None), 1) < entries.index(
        next(e for e in entries if e[0] == "inserted")
    )
    # ... and yet every INSERT starts only after the commit of the batch before it.
    inserts = [i for i, (what, _) in enumerate(entries) if what == "insert"]
    commits = [i for i, (what, _) in enumerate(entries) if what == "commit"]
    assert len(inserts) == len(commits) == 3
    for before, after in zip(commits, inserts[1:], strict=False):
        assert before < after
    offsets = [detail for what, detail in entries if what == "commit"]
    assert [max(o.values()) for o in offsets] == sorted(max(o.values()) for o in offsets)


def test_an_insert_that_fails_in_flight_is_retried_before_any_later_batch_is_written(
    log_path: Path, store: JournalEngine
) -> None:
    journal = store.journal
    store.fail_first = 2  # the first batch's INSERT fails twice, in flight then retried
    events = make_events(30, seed=72)
    publish(log_path, events)
    worker = processor(log_path, store, journal)
    run_until(worker, lambda: worker.totals.stored == 30)

    assert stored(store) == ground_truth(events)
    assert store.sql.scalar("SELECT count() FROM usage_events") == 30  # nothing twice
    tokens = [detail for what, detail in journal.entries if what == "insert"]
    landed = [detail for what, detail in journal.entries if what == "inserted"]
    # The failed batch's token is tried three times and lands before any other.
    assert tokens[:3] == [tokens[0]] * 3
    assert landed[0] == tokens[0]
    assert len(set(landed)) == len(landed) == 3


def test_a_revocation_returns_only_once_the_insert_in_flight_has_landed(
    log_path: Path, store: JournalEngine
) -> None:
    journal = store.journal
    events = make_events(5, seed=73)
    publish(log_path, events)
    release = threading.Event()
    inside = threading.Event()

    def hold() -> None:
        inside.set()
        release.wait(10)

    store.hold = hold
    worker = processor(log_path, store, journal)
    consumer = worker.consumer
    assert isinstance(consumer, JournalConsumer) and consumer.barrier is not None
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert inside.wait(10), "the INSERT never started"
    # What the Kafka consumer's on_revoke does before letting partitions go.
    returned = threading.Event()
    barrier = consumer.barrier

    def revoke() -> None:
        barrier()
        returned.set()

    revoker = threading.Thread(target=revoke)
    revoker.start()
    time.sleep(0.3)
    assert not returned.is_set(), "the revocation did not wait for the INSERT in flight"
    release.set()
    assert returned.wait(10)
    assert ("inserted", next(d for w, d in journal.entries if w == "insert")) in journal.entries
    stop.set()
    thread.join(30)
    worker.close()
    assert stored(store) == ground_truth(events)


class FailsForSubject(CatalogPriceBook):
    """The real catalog, raising for one subject (a price-book bug, as in test_pipeline)."""

    subject = "globex"

    def price(self, *args: Any, **kwargs: Any) -> Any:
        if args[3] == self.subject:
            raise RuntimeError("price book bug (test)")
        return super().price(*args, **kwargs)


def test_a_stored_duplicate_is_counted_a_duplicate_even_when_its_pricing_now_fails(
    log_path: Path, sink: ChdbEngine
) -> None:
    # prepare() prices before finish() asks the store; a candidate found stored must
    # drop its pricing failure with it, as when duplicates were dropped before pricing.
    events = [dict(e, subject="globex") for e in make_events(4, seed=74)]
    publish(log_path, events)
    records = EmbeddedConsumer(log_path, "events", "r").poll(10, 1.0)
    letters: list[Any] = []

    class Collect:
        def publish(self, dead: Any) -> None:
            letters.extend(dead)

    first = Pipeline(LiveTables(sink), CatalogPriceBook(), Collect(), dedupe_cache_ids=0)
    assert first.run(records[:3]).stored == 3
    again = Pipeline(LiveTables(sink), FailsForSubject(), Collect(), dedupe_cache_ids=0)
    result = again.run(records)

    assert (result.stored, result.duplicates, result.dead) == (0, 3, 1)
    assert [(d.record.offset, d.reason) for d in letters] == [(records[3].offset, "pricing_failed")]


def test_dead_letters_are_published_from_the_writer_thread_before_the_commit(
    log_path: Path, store: JournalEngine
) -> None:
    events = make_events(25, seed=75)
    producer = EmbeddedProducer(log_path, "events")
    producer.publish_sync(
        [OutMessage(b"one-partition", orjson.dumps(e), HEADERS) for e in events[:12]]
        + [OutMessage(b"one-partition", b"{not json", HEADERS)]
        + [OutMessage(b"one-partition", orjson.dumps(e), HEADERS) for e in events[12:]]
    )
    worker = processor(log_path, store, store.journal)
    run_until(worker, lambda: worker.totals.records == 26)

    assert stored(store) == ground_truth(events)
    letters = EmbeddedConsumer(log_path, "events.dlq", "inspect").poll(10, 1.0)
    assert [dict(r.headers)["meterline-dlq-reason"] for r in letters] == [b"invalid_json"]
    assert (worker.totals.stored, worker.totals.dead) == (25, 1)
