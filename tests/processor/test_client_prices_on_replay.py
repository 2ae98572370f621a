"""Client prices live and on replay: the same setting reproduces the live money; a changed
setting re-bills. Real chDB and the embedded log, the live processor and ``replay``."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from core.log.base import INGESTED_AT_HEADER, TENANT_HEADER, OutMessage
from core.log.embedded import EmbeddedAdmin, EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.replay import replay
from processor.runner import Processor
from sinks.chdb_sink import ChdbEngine

PER_TOKEN = {"input_token": "0.00001", "output_token": "0.00003"}
GPT_4O_1000_IN_500_OUT = Decimal("0.0075")


def _event(id: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id,
        "source": "/agent",
        "type": "io.meterline.usage.tokens",
        "subject": "acme",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60)),
        "data": {
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 500,
            **data,
        },
    }


def _publish(log_path: Path) -> None:
    messages = []
    for tenant in ("pricer", "plain"):
        headers = ((TENANT_HEADER, tenant.encode()), (INGESTED_AT_HEADER, b"0"))
        for event in (
            _event(f"{tenant}-stated", unit_prices=PER_TOKEN),
            _event(f"{tenant}-failed", input_tokens=0, output_tokens=0, status="error"),
        ):
            messages.append(OutMessage(event["id"].encode(), orjson.dumps(event), headers))
    EmbeddedProducer(log_path, "events").publish_sync(messages)


def _book(*tenants: str) -> CatalogPriceBook:
    book = CatalogPriceBook()
    book.allow_client_prices(tenants)
    return book


def _money(sink: ChdbEngine, table: str, where: str = "") -> dict[str, tuple[str, Decimal]]:
    rows = sink.sql.query_rows(
        f"SELECT id, price_source, toString(price_usd) AS price FROM {table} {where}"
    )
    return {r["id"]: (r["price_source"], Decimal(r["price"])) for r in rows}


def test_a_replay_with_the_same_setting_reproduces_live_and_a_revoked_tenant_is_rebilled(
    log_path: Path, sink: ChdbEngine
) -> None:
    _publish(log_path)
    book = _book("pricer")
    live = Processor(
        EmbeddedConsumer(log_path, "events", "g"),
        sink,
        book,
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
    )
    while records := live.consumer.poll(1000, 0.2):
        live.process_batch(records)
    expected = {
        "pricer-stated": ("client", Decimal("0.025")),  # 1,000 x 0.00001 + 500 x 0.00003
        "plain-stated": ("book", GPT_4O_1000_IN_500_OUT),  # not allowed: the book
        "pricer-failed": ("book", Decimal(0)),  # a failed call: never charged
        "plain-failed": ("book", Decimal(0)),
    }
    assert _money(sink, "usage_events") == expected

    admin = EmbeddedAdmin(log_path)
    until = int(time.time() * 1000) + 60_000
    for run, rebook in (("same", _book("pricer")), ("revoked", _book())):
        replay(admin, sink, rebook, topic="events", run=run, from_ms=0, to_ms=until)
    assert _money(sink, "billing_run_events", "WHERE run = 'same'") == expected
    assert _money(sink, "billing_run_events", "WHERE run = 'revoked'") == {
        **expected,
        "pricer-stated": ("book", GPT_4O_1000_IN_500_OUT),
    }
