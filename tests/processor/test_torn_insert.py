"""A crash between the parts of one INSERT (a torn write), then the batch replayed.

One INSERT writes the usage_events part first, then each materialized view's
part (usage_event_ids, usage_meters). A SIGKILL in between leaves stored events
the dedupe index does not know. These tests produce exactly that state with the
real engine (the views are detached for the one INSERT, then the "process" dies
before committing offsets), restart as ``meterline`` does (start-up repair,
fresh consumer in the same group) and replay the log through the real processor.
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
from core.log.base import INGESTED_AT_HEADER, TENANT_HEADER, OutMessage, Record
from core.log.embedded import EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.runner import Processor
from processor.verify import check_identities, repair_at_start, verify, verify_running_totals
from sinks.base import LIVE_EVENTS, EventTable, EventWriter
from sinks.chdb_sink import ChdbEngine, ChdbWriter
from sinks.migrations import migrate
from tests.support.events import ground_truth, make_events, stored_totals, totals_query

HEADERS = ((TENANT_HEADER, b"default"), (INGESTED_AT_HEADER, b"0"))
TOTALS_VIEWS = ("usage_running_totals_subject_mv", "usage_running_totals_tenant_mv")
VIEWS = {
    "ids": ("usage_event_ids_mv",),
    "ids+meters": ("usage_event_ids_mv", "usage_meters_mv"),
    # Every part after usage_events: the budgets' running totals too (schemas/sql/070).
    "ids+meters+totals": ("usage_event_ids_mv", "usage_meters_mv", *TOTALS_VIEWS),
}


class Killed(BaseException):
    """Stands for the SIGKILL: nothing after it runs, offsets stay uncommitted."""


class TornSink(ChdbEngine):
    """The real chDB engine whose next INSERT lands in usage_events only, then fails."""

    tear: tuple[str, ...] = ()
    failure: type[BaseException] = Killed
    on_failure: Callable[[], None] = staticmethod(lambda: None)

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return TornWriter(self, table)


class TornWriter(ChdbWriter):
    def __init__(self, engine: TornSink, table: EventTable) -> None:
        super().__init__(engine, table)
        self.engine = engine

    def insert_encoded(self, rows: Any, dedup_token: str) -> None:
        engine = self.engine
        views, engine.tear = engine.tear, ()
        if not views:
            super().insert_encoded(rows, dedup_token)
            return
        for view in views:
            engine.sql.query_raw(f"DETACH TABLE {view}", "CSV")
        try:
            super().insert_encoded(rows, dedup_token)
        finally:
            for view in views:
                engine.sql.query_raw(f"ATTACH TABLE {view}", "CSV")
        engine.on_failure()
        raise engine.failure("the engine failed after the usage_events part (test)")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[TornSink]:  # overrides conftest's: the torn double
    sink = TornSink(tmp_path / "chdb", "mtorn")
    migrate(sink)
    yield sink
    sink.close()


class RevokingConsumer(EmbeddedConsumer):
    """The embedded consumer, told that a group coordinator took ``revoke`` away."""

    revoke: frozenset[int] = frozenset()

    def take_revoked(self) -> set[int]:
        revoked, self.revoke = self.revoke, frozenset()
        return set(revoked)


def processor(
    log_path: Path, sink: ChdbEngine, consumer: EmbeddedConsumer | None = None
) -> Processor:
    return Processor(
        consumer or EmbeddedConsumer(log_path, "events", "g"),
        sink,
        CatalogPriceBook(),
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
    )


def publish(log_path: Path, events: list[dict[str, Any]]) -> None:
    EmbeddedProducer(log_path, "events").publish_sync(
        [OutMessage(e["id"].encode(), orjson.dumps(e), HEADERS) for e in events]
    )


def read_all(p: Processor, expected: int) -> list[Record]:
    records: list[Record] = []
    while len(records) < expected:
        records += p.consumer.poll(expected - len(records), 1.0)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def assert_each_event_stored_once(sink: ChdbEngine, events: list[dict[str, Any]]) -> None:
    unique = {(e["source"], e["id"]) for e in events}
    assert sink.sql.scalar("SELECT count() FROM usage_events") == len(unique)
    now_ms = int(time.time() * 1000)
    assert not check_identities(sink.sql, 0, now_ms + 60_000)
    truth = ground_truth(events)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == truth
    assert stored_totals(sink.sql.query_rows(totals_query("usage_meters"))) == truth
    assert verify(sink.sql, 0, now_ms + 60_000) == []
    assert verify_running_totals(sink.sql, 0, now_ms + 60_000) == []


@pytest.mark.parametrize("torn", list(VIEWS))
@pytest.mark.parametrize("replay_cut", [150, 200])  # 200 = the torn batch's own cut (same token)
def test_a_batch_replayed_after_a_torn_insert_is_stored_exactly_once(
    log_path: Path, sink: TornSink, torn: str, replay_cut: int
) -> None:
    events = make_events(300, seed=31)
    events += events[::10]  # client re-sends at later offsets
    publish(log_path, events)
    first = processor(log_path, sink)
    records = read_all(first, len(events))
    first.process_batch(records[:100])
    sink.tear = VIEWS[torn]
    with pytest.raises(Killed):
        first.process_batch(records[100:200])
    first.close()  # uncommitted: the restart reads offsets 100.. again
    assert sink.sql.scalar("SELECT count() FROM usage_events") > sink.sql.scalar(
        "SELECT count() FROM usage_event_ids FINAL"
    ), "the INSERT was meant to be torn"

    repaired = repair_at_start(sink.sql)  # what `meterline processor` does before reading
    assert repaired.ids_restored > 0 and repaired.refused == []
    second = processor(log_path, sink)
    again = read_all(second, len(events) - 100)
    cut = replay_cut - 100
    second.process_batch(again[:cut])
    second.process_batch(again[cut:])
    second.close()

    assert_each_event_stored_once(sink, events)


def test_a_failed_insert_that_tore_repairs_the_index_before_partitions_move(
    log_path: Path, sink: TornSink
) -> None:
    """No restart: the INSERT raised after its usage_events part. While the
    processor backs off, partition 1 moves to another member: the retry (now
    partition 0 only, so another dedup token) and the new owner must both find
    the ids the failed INSERT stored."""
    events = make_events(300, seed=32)
    events += events[::10]
    publish(log_path, events)
    consumer = RevokingConsumer(log_path, "events", "g", partitions=[0, 1])
    sink.tear, sink.failure = VIEWS["ids"], StoreUnavailable

    def move_partition_1() -> None:  # the retry loop's keepalive() serves it
        consumer.revoke = frozenset({1})

    sink.on_failure = move_partition_1
    first = processor(log_path, sink, consumer)
    stop = threading.Event()
    worker = threading.Thread(target=first.run, args=(stop,), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while first.totals.records == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(30)
    first.close()
    assert 0 < first.totals.records < len(events), "partition 1 was meant to move"

    second = processor(log_path, sink, EmbeddedConsumer(log_path, "events", "g", [1]))
    second.process_batch(read_all(second, len(events) - first.totals.records))
    second.close()

    assert_each_event_stored_once(sink, events)
