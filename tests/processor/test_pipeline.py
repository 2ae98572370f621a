"""The one batch pipeline, live and on replay: it never dies on data.

Real chDB and the embedded log; the live processor is driven batch by batch
(``process_batch``) so each test sees exactly one pass of the checkpoint order.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.errors import StoreError
from core.log.base import INGESTED_AT_HEADER, TENANT_HEADER, OutMessage, Record
from core.log.embedded import EmbeddedAdmin, EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.attempts import Attempts
from processor.pipeline import NoHooks
from processor.replay import replay
from processor.runner import Processor
from sinks.base import LIVE_EVENTS, EventTable, EventWriter
from sinks.chdb_sink import ChdbEngine, ChdbWriter
from sinks.migrations import migrate
from tests.support.events import ground_truth, make_events, stored_totals, totals_query

HEADERS = ((TENANT_HEADER, b"default"), (INGESTED_AT_HEADER, b"0"))
CUSTOM = {"specversion": "1.0", "source": "/acme", "type": "com.acme.report", "subject": "acme"}


def publish(log_path: Path, events: list[dict[str, Any]]) -> None:
    """All on one key: one partition, in this order."""
    EmbeddedProducer(log_path, "events").publish_sync(
        [OutMessage(b"one-partition", orjson.dumps(e), HEADERS) for e in events]
    )


def dead_letters(log_path: Path) -> dict[str, tuple[str, str]]:
    """Event id -> (reason, detail) of every letter in the DLQ."""
    out = {}
    for letter in EmbeddedConsumer(log_path, "events.dlq", "inspect").poll(100, 1.0):
        headers = dict(letter.headers)
        out[orjson.loads(letter.value)["id"]] = (
            headers["meterline-dlq-reason"].decode(),
            headers["meterline-dlq-detail"].decode(),
        )
    return out


class ExplodingBook(CatalogPriceBook):
    """The real catalog with two bugs: it raises on one event, and prices another
    beyond what a Decimal(38, 12) column holds (its row cannot be built)."""

    def price(self, *args: Any, **kwargs: Any) -> Any:
        feature = args[1].feature
        if feature == "explodes":
            raise RuntimeError("price book bug (test)")
        priced = super().price(*args, **kwargs)
        if feature == "priced-beyond-the-column":
            return replace(priced, cost_usd=Decimal("1e40"))
        return priced


def poisoned_log(log_path: Path) -> list[dict[str, Any]]:
    """Good events around four records that must not be billed; returns the good ones.

    The two quantities stopped the processor (issue 11); the schemas refuse them
    now, and the other two are failures no schema can see.
    """
    good = make_events(20, seed=31)
    explodes = dict(
        good[5], id="explodes-in-pricing", data={**good[5]["data"], "feature": "explodes"}
    )
    too_dear = dict(
        good[6],
        id="row-cannot-be-built",
        data={**good[6]["data"], "feature": "priced-beyond-the-column"},
    )
    publish(
        log_path,
        [
            *good[:10],
            {**CUSTOM, "id": "huge-quantity", "data": {"quantity": 10000000000000000}},
            {**CUSTOM, "id": "overflowing-quantity", "data": {"quantity": "1e400"}},
            explodes,
            too_dear,
            *good[10:],
        ],
    )
    return good


def live_processor(log_path: Path, sink: ChdbEngine, **kwargs: Any) -> Processor:
    kwargs.setdefault("price_book", CatalogPriceBook())
    return Processor(
        EmbeddedConsumer(log_path, "events", "g"),
        sink,
        dead_letters=LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        **kwargs,
    )


def drain(processor: Processor) -> None:
    while records := processor.consumer.poll(1000, 0.2):
        processor.process_batch(records)


def test_records_whose_handling_raises_are_dead_lettered_with_the_exception_and_the_rest_stored(
    log_path: Path, sink: ChdbEngine
) -> None:
    good = poisoned_log(log_path)
    processor = live_processor(log_path, sink, price_book=ExplodingBook())
    drain(processor)
    processor.close()

    letters = dead_letters(log_path)
    assert {k: reason for k, (reason, _) in letters.items()} == {
        "huge-quantity": "invalid_event",
        "overflowing-quantity": "invalid_event",
        "explodes-in-pricing": "pricing_failed",
        "row-cannot-be-built": "row_failed",
    }
    assert letters["explodes-in-pricing"][1] == "RuntimeError: price book bug (test)"
    assert letters["row-cannot-be-built"][1].startswith("InvalidOperation")
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(good)
    # Committed: a new member of the group finds nothing left to read.
    assert EmbeddedConsumer(log_path, "events", "g").poll(100, 0.2) == []


def test_replay_runs_the_same_pipeline_poison_counted_by_reason_and_the_rest_in_the_run(
    log_path: Path, sink: ChdbEngine
) -> None:
    good = poisoned_log(log_path)
    result = replay(
        EmbeddedAdmin(log_path),
        sink,
        ExplodingBook(),
        topic="events",
        run="fix-1",
        from_ms=0,
        to_ms=int(time.time() * 1000) + 60_000,
    )
    assert result.dead == {"invalid_event": 2, "pricing_failed": 1, "row_failed": 1}
    assert (result.records, result.stored, result.invalid) == (24, 20, 4)
    assert {e.record.offset for e in result.examples} == {10, 11, 12, 13}
    in_run = totals_query("usage_events").replace(
        "FROM usage_events", "FROM billing_run_events WHERE run = 'fix-1'"
    )
    assert stored_totals(sink.sql.query_rows(in_run)) == ground_truth(good)
    assert sink.sql.scalar("SELECT count() FROM usage_events") == 0  # live tables untouched


class RefusingSink(ChdbEngine):
    """The real chDB engine, refusing (as for bad data) any INSERT holding one marked id."""

    refused_id = "refused-by-the-store"
    inserts = 0

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return RefusingWriter(self, table)


class RefusingWriter(ChdbWriter):
    def __init__(self, engine: RefusingSink, table: EventTable) -> None:
        super().__init__(engine, table)
        self.engine = engine

    def insert_encoded(self, rows: Any, dedup_token: str) -> None:
        self.engine.inserts += 1
        if self.engine.refused_id in rows.column("id").to_pylist():
            raise StoreError("Code: 53. Type mismatch in a column (test)")
        super().insert_encoded(rows, dedup_token)


def test_a_record_the_store_refuses_is_found_by_bisecting_and_dead_lettered_the_rest_stored(
    log_path: Path, tmp_path: Path
) -> None:
    sink = RefusingSink(tmp_path / "refusing", "mtest")
    migrate(sink)
    good = make_events(40, seed=32)
    publish(log_path, [*good[:23], dict(good[0], id=RefusingSink.refused_id), *good[23:]])
    processor = live_processor(log_path, sink)
    drain(processor)
    processor.close()

    assert dead_letters(log_path) == {
        RefusingSink.refused_id: (
            "rejected_by_store",
            "StoreError: Code: 53. Type mismatch in a column (test)",
        )
    }
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(good)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_meters"))) == ground_truth(good)
    # One refused record among 41 costs two inserts per halving, not one per record.
    assert sink.inserts <= 1 + 2 * math.ceil(math.log2(41))
    sink.close()


def test_a_store_that_refuses_the_table_is_retried_and_nothing_is_dead_lettered(
    log_path: Path, sink: ChdbEngine
) -> None:
    good = make_events(10, seed=33)
    publish(log_path, good)
    processor = live_processor(log_path, sink)
    records = processor.consumer.poll(100, 1.0)
    # Every insert now fails as if the table were gone (DETACH, not DROP: versioned
    # migrations do not re-create a table they already applied).
    sink.sql.query_raw("DETACH TABLE mtest.usage_events", "CSV")
    with pytest.raises(StoreError):
        processor.process_batch(records)
    assert dead_letters(log_path) == {}

    sink.sql.query_raw("ATTACH TABLE mtest.usage_events", "CSV")  # the store is back
    # The very same batch is written, whole.
    result = processor.process_batch(records)
    processor.close()
    assert (result.stored, result.dead) == (10, 0)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(good)


class Died(BaseException):
    """The process dying while it handles a record: nothing in the processor catches it."""


class KillOn(NoHooks):
    """Step hooks that 'kill the process' whenever it handles a record with ``marker``."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker

    def handling(self, record: Record) -> None:
        if self.marker in record.value:
            raise Died


def test_a_record_that_kills_the_process_each_time_is_dead_lettered_after_the_limit(
    log_path: Path, sink: ChdbEngine, tmp_path: Path
) -> None:
    good = make_events(40, seed=34)
    good += good[::7]  # client retries: still counted once
    publish(log_path, [*good[:25], dict(good[0], id="kills-the-process"), *good[25:]])
    attempts_file = tmp_path / "attempts.sqlite3"
    deaths = 0
    while True:  # each pass is one process lifetime, on the same files
        processor = live_processor(
            log_path, sink, hooks=KillOn(b"kills-the-process"), attempts=Attempts(attempts_file)
        )
        try:
            drain(processor)
            break
        except Died:
            deaths += 1
        finally:
            processor.close()

    limit = Attempts(attempts_file).limit
    assert limit == 3
    # Halving finds it in log2(batch) deaths, then it dies `limit` times alone.
    assert limit <= deaths <= math.ceil(math.log2(len(good) + 1)) + limit
    letters = dead_letters(log_path)
    assert list(letters) == ["kills-the-process"]
    assert letters["kills-the-process"][0] == "crashed_processor"
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(good)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_meters"))) == ground_truth(good)
