"""The processor against real logs and the real chDB engine, in this process:
poison messages, late and too-late events, the store going away, and
partitions moving between consumer-group members mid-stream (real Kafka).
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.errors import StoreUnavailable
from core.log.base import INGESTED_AT_HEADER, TENANT_HEADER, LogConsumer, OutMessage
from core.log.embedded import EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.runner import Processor
from processor.verify import verify
from sinks.base import LIVE_EVENTS, EventTable, EventWriter
from sinks.chdb_sink import ChdbEngine, ChdbWriter
from sinks.migrations import migrate
from tests.support.events import ground_truth, make_events, stored_totals, totals_query

HEADERS = ((TENANT_HEADER, b"default"), (INGESTED_AT_HEADER, b"0"))


def message(event: dict[str, Any], headers: Any = HEADERS) -> OutMessage:
    return OutMessage(event["id"].encode(), orjson.dumps(event), headers)


class Worker:
    """One processor loop on a thread, as ``meterline processor`` runs it."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=processor.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        self.processor.close()


def rows(sink: ChdbEngine, sql: str) -> list[dict[str, Any]]:
    return [{k: str(v) for k, v in r.items()} for r in sink.sql.query_rows(sql)]


def wait(check: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(str(check))


# --- embedded log ------------------------------------------------------------------


def embedded_processor(log_path: Path, sink: ChdbEngine, **kwargs: Any) -> Processor:
    return Processor(
        EmbeddedConsumer(log_path, "events", "g"),
        sink,
        CatalogPriceBook(),
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        batch_max_wait_s=0.05,
        **kwargs,
    )


def test_poison_messages_go_to_the_dlq_and_never_block_the_partition(
    log_path: Path, sink: ChdbEngine
) -> None:
    events = make_events(20, seed=9)
    producer = EmbeddedProducer(log_path, "events")
    invalid = dict(events[0], id="bad-1", data={"provider": "openai"})  # no model
    # Same key as the valid events around them: same partition, in the middle.
    producer.publish_sync(
        [message(e) for e in events[:10]]
        + [
            OutMessage(events[0]["id"].encode(), b"{not json", HEADERS),
            OutMessage(events[0]["id"].encode(), orjson.dumps(invalid), HEADERS),
            OutMessage(events[0]["id"].encode(), orjson.dumps(events[19]), ()),  # no tenant
        ]
        + [message(e) for e in events[10:19]]
    )
    processor = embedded_processor(log_path, sink)
    worker = Worker(processor)
    wait(lambda: processor.totals.records == 22)
    worker.stop()
    assert processor.totals.stored == 19 and processor.totals.dead == 3
    letters = EmbeddedConsumer(log_path, "events.dlq", "inspect").poll(10, 1.0)
    reasons = sorted(dict(r.headers)["meterline-dlq-reason"].decode() for r in letters)
    assert reasons == ["invalid_event", "invalid_json", "missing_tenant"]
    for letter in letters:
        assert dict(letter.headers)["meterline-original-topic"] == b"events"
    stored = stored_totals(sink.sql.query_rows(totals_query("usage_events")))
    assert stored == ground_truth(events[:19])


def test_late_events_land_in_their_own_window_and_too_late_ones_in_the_dlq(
    log_path: Path, sink: ChdbEngine
) -> None:
    now = time.time()
    fresh, late, too_late = make_events(3, seed=2)
    late["time"] = time.strftime("%Y-%m-%dT%H:%M:30.250Z", time.gmtime(now - 2 * 86_400))
    too_late["time"] = time.strftime("%Y-%m-%dT%H:%M:00.000Z", time.gmtime(now - 40 * 86_400))
    EmbeddedProducer(log_path, "events").publish_sync(
        [message(fresh), message(late), message(too_late)]
    )
    processor = embedded_processor(log_path, sink, dedupe_horizon_days=35)
    worker = Worker(processor)
    wait(lambda: processor.totals.records == 3)
    worker.stop()
    windows = rows(
        sink,
        "SELECT toString(window_start) AS w, sum(events) AS n "
        "FROM usage_meters GROUP BY w ORDER BY w",
    )
    assert windows[0] == {"w": late["time"][:16].replace("T", " ") + ":00", "n": "1"}
    assert len(windows) == 2
    letters = EmbeddedConsumer(log_path, "events.dlq", "inspect").poll(10, 1.0)
    assert [dict(r.headers)["meterline-dlq-reason"] for r in letters] == [b"beyond_dedupe_horizon"]


class FlakySink(ChdbEngine):
    """The real chDB engine, unreachable for writes until ``heal()``."""

    down = True
    attempts = 0

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return FlakyWriter(self, table)

    def heal(self) -> None:
        self.down = False


class FlakyWriter(ChdbWriter):
    def __init__(self, engine: FlakySink, table: EventTable) -> None:
        super().__init__(engine, table)
        self.engine = engine

    def insert_encoded(self, rows: Any, dedup_token: str) -> None:
        self.engine.attempts += 1
        if self.engine.down:
            raise StoreUnavailable("ClickHouse is down (test)")
        super().insert_encoded(rows, dedup_token)


# --- real Kafka --------------------------------------------------------------------


def kafka_processor(
    bootstrap: str, topic: str, group: str, sink: ChdbEngine, **extra: Any
) -> Processor:
    from core.log.kafka import KafkaConsumer, KafkaProducer

    consumer: LogConsumer = KafkaConsumer(bootstrap, topic, group, extra)
    return Processor(
        consumer,
        sink,
        CatalogPriceBook(),
        LogDeadLetters(KafkaProducer(bootstrap, f"{topic}.dlq")),
        batch_max_events=200,
        batch_max_wait_s=0.05,
    )


def kafka_lag(bootstrap: str, topic: str, group: str) -> int:
    from core.log.kafka import KafkaAdmin

    admin = KafkaAdmin(bootstrap)
    ends, committed = admin.end_offsets(topic), admin.committed(topic, group)
    return sum(end - committed.get(p, 0) for p, end in ends.items())


def publish(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    from core.log.kafka import KafkaProducer

    producer = KafkaProducer(bootstrap, topic)
    producer.publish_sync([message(e) for e in events])
    producer.close()


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, unique_topic: str) -> str:
    from core.log.kafka import KafkaAdmin

    admin = KafkaAdmin(kafka_bootstrap)
    admin.ensure_topic(unique_topic, 6)
    admin.ensure_topic(f"{unique_topic}.dlq", 1)
    return unique_topic


@pytest.mark.kafka
def test_partitions_moving_between_members_mid_stream_keep_totals_exact(
    kafka_bootstrap: str, kafka_topic: str, sink: ChdbEngine
) -> None:
    group = f"g-{kafka_topic}"
    events = make_events(3000, seed=21)
    events += events[::20]  # client retries at later offsets
    a = Worker(kafka_processor(kafka_bootstrap, kafka_topic, group, sink))
    b = Worker(kafka_processor(kafka_bootstrap, kafka_topic, group, sink))
    members = (a.processor.consumer, b.processor.consumer)
    wait(lambda: all(len(m.assignment()) == 3 for m in members))  # 6 partitions split 3/3
    publish(kafka_bootstrap, kafka_topic, events[:1000])
    wait(lambda: a.processor.totals.records > 0 and b.processor.totals.records > 0)
    b.stop()  # B leaves: its partitions move to A mid-stream
    publish(kafka_bootstrap, kafka_topic, events[1000:2000])
    c = Worker(kafka_processor(kafka_bootstrap, kafka_topic, group, sink))  # and some move to C
    publish(kafka_bootstrap, kafka_topic, events[2000:])
    wait(lambda: kafka_lag(kafka_bootstrap, kafka_topic, group) == 0, 120)
    a.stop()
    c.stop()
    assert c.processor.totals.records > 0
    truth = ground_truth(events)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == truth
    assert stored_totals(sink.sql.query_rows(totals_query("usage_meters"))) == truth
    assert verify(sink.sql, 0, int(time.time() * 1000) + 60_000) == []


@pytest.mark.kafka
def test_store_outage_pauses_without_losing_or_leaving_the_group(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    flaky = FlakySink(tmp_path / "flaky", "mtest")
    migrate(flaky)
    group = f"g-{kafka_topic}"
    # Short poll interval: a member that stopped polling during the outage would be evicted.
    processor = kafka_processor(
        kafka_bootstrap,
        kafka_topic,
        group,
        flaky,
        **{"max.poll.interval.ms": 7000, "session.timeout.ms": 6000},
    )
    worker = Worker(processor)
    events = make_events(500, seed=4)
    publish(kafka_bootstrap, kafka_topic, events)
    wait(lambda: flaky.attempts >= 3)
    time.sleep(9)  # longer than max.poll.interval.ms
    assumed_partitions = sorted(processor.consumer.assignment())
    flaky.heal()
    wait(lambda: kafka_lag(kafka_bootstrap, kafka_topic, group) == 0, 60)
    worker.stop()
    assert assumed_partitions == list(range(6))
    assert stored_totals(flaky.sql.query_rows(totals_query("usage_events"))) == ground_truth(events)
    assert stored_totals(flaky.sql.query_rows(totals_query("usage_meters"))) == ground_truth(events)
    flaky.close()


def test_events_of_unknown_tenants_are_dead_lettered(log_path: Path, sink: ChdbEngine) -> None:
    known, ghost = make_events(2, seed=8)
    EmbeddedProducer(log_path, "events").publish_sync(
        [message(known), message(ghost, ((TENANT_HEADER, b"ghost"), (INGESTED_AT_HEADER, b"0")))]
    )
    processor = embedded_processor(log_path, sink, known_tenant=lambda t: t == "default")
    worker = Worker(processor)
    wait(lambda: processor.totals.records == 2)
    worker.stop()
    assert rows(sink, "SELECT tenant, id FROM usage_events") == [
        {"tenant": "default", "id": known["id"]}
    ]
    letters = EmbeddedConsumer(log_path, "events.dlq", "inspect").poll(10, 1.0)
    assert [(dict(r.headers)["meterline-dlq-reason"], r.key) for r in letters] == [
        (b"unknown_tenant", ghost["id"].encode())
    ]


def test_custom_event_types_are_priced_only_by_a_units_rule_for_their_type(
    log_path: Path, sink: ChdbEngine, tmp_path: Path
) -> None:
    from pricing import BookPriceBook

    book = tmp_path / "book.yaml"
    book.write_text(
        "format: 1\nname: custom\nunits:\n"
        "  - {type: com.acme.report, unit: page, cost_usd: '0.01', price_usd: '0.05'}\n"
    )
    base = {"specversion": "1.0", "source": "/acme", "subject": "acme"}
    priced = {
        **base,
        "id": "r1",
        "type": "com.acme.report",
        "data": {"unit": "page", "quantity": 3},
    }
    other_unit = {**base, "id": "r2", "type": "com.acme.report", "data": {"quantity": "2.5"}}
    unknown = {**base, "id": "r3", "type": "com.acme.other", "data": {"unit": "page"}}
    EmbeddedProducer(log_path, "events").publish_sync(
        [message(priced), message(other_unit), message(unknown)]
    )
    processor = Processor(
        EmbeddedConsumer(log_path, "events", "g"),
        sink,
        BookPriceBook.from_file(book),
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        batch_max_wait_s=0.05,
    )
    worker = Worker(processor)
    wait(lambda: processor.totals.records == 3)
    worker.stop()
    assert rows(
        sink,
        "SELECT id, unit, quantity, cost_usd, price_usd, priced FROM usage_events ORDER BY id",
    ) == [
        {
            "id": "r1",
            "unit": "page",
            "quantity": "3",
            "cost_usd": "0.03",
            "price_usd": "0.15",
            "priced": "1",
        },
        {
            "id": "r2",
            "unit": "event",
            "quantity": "2.5",
            "cost_usd": "0",
            "price_usd": "0",
            "priced": "0",
        },
        {
            "id": "r3",
            "unit": "page",
            "quantity": "1",
            "cost_usd": "0",
            "price_usd": "0",
            "priced": "0",
        },
    ]


class _GcWatchingPriceBook(CatalogPriceBook):
    """Records whether the cyclic collector was on while the batch was priced."""

    def __init__(self) -> None:
        super().__init__()
        self.collector_on: set[bool] = set()

    def price(self, *args: Any, **kwargs: Any) -> Any:
        self.collector_on.add(gc.isenabled())
        return super().price(*args, **kwargs)


def test_cyclic_gc_is_paused_during_a_batch_and_restored_after(
    log_path: Path, sink: ChdbEngine
) -> None:
    events = make_events(30, seed=4)
    EmbeddedProducer(log_path, "events").publish_sync([message(e) for e in events])
    book = _GcWatchingPriceBook()
    processor = Processor(
        EmbeddedConsumer(log_path, "events", "g"),
        sink,
        book,
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        batch_max_wait_s=0.05,
    )
    assert gc.isenabled()
    records = processor.consumer.poll(100, 1.0)
    processor.process_batch(records[:10])
    assert book.collector_on == {False} and gc.isenabled()

    gc.disable()  # someone else's choice is theirs: a batch does not turn it back on
    try:
        processor.process_batch(records[10:])
        assert not gc.isenabled()
    finally:
        gc.enable()
    processor.close()
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(events)


def test_overlapping_gc_pauses_turn_the_collector_back_on_only_when_the_last_ends() -> None:
    from core.gc_policy import GcPause

    pause = GcPause()
    first, second = pause.paused(), pause.paused()  # e.g. two --workers threads
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the other batch is still running
    second.__exit__(None, None, None)
    assert gc.isenabled()
