"""EventColumns builds, column by column, exactly the rows the row-by-row builder did.

Issue 17 round 2 replaced one 38-value tuple per event (and a transpose) with
columns filled in one pass each, and constant columns for all-token batches.
A column shifted or a value taken from the wrong event would store wrong money
or wrong labels silently, so the reference below is the old builder, one row
per event, kept here only to compare against: every column of every event of
token-only and mixed batches (every usage type, metadata, call outcomes,
estimated usage), and of the halves a bisected insert takes, must be equal.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bench.data import EventStream, encode
from core.log.base import TENANT_HEADER, Record
from core.settings import load_settings
from meterline.runtime import build_price_book
from pricing.base import PriceBook, Priced
from processor.decode import Decoded, decode
from processor.rows import COLUMN_CONTEXT, SCALE, EventColumns, _call_outcome, _other_head
from schemas.usage import TokenUsage
from sinks.base import EVENT_COLUMNS
from tests.support.unstorable import custom_event

BOOK_TIME = 1_767_225_600_000


def reference_row(item: Decoded, priced: Priced, book: str, now_ms: int) -> dict[str, Any]:
    """The row-by-row builder of issue 17's first round (processor/rows.py before round 2)."""
    env, usage, record = item.envelope, item.usage, item.record
    if type(usage) is TokenUsage:
        head: tuple[Any, ...] = (
            usage.provider,
            usage.model,
            usage.feature,
            usage.user,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
            usage.reasoning_tokens,
            usage.input_audio_tokens,
            usage.output_audio_tokens,
            0,
            "",
            "",
            "token",
            Decimal(1),
            Decimal(0),
            "",
        )
        estimated = 1 if usage.estimated else 0
        call: tuple[Any, ...] = (
            usage.status,
            usage.error_type,
            usage.http_status,
            usage.latency_ms,
        )
    else:
        head, estimated, call = _other_head(item), 0, _call_outcome(usage)
    row = (
        item.tenant,
        env.id,
        env.source,
        env.type,
        env.subject or "",
        item.time_ms,
        *head,
        priced.cost_usd.quantize(SCALE, context=COLUMN_CONTEXT),
        priced.price_usd.quantize(SCALE, context=COLUMN_CONTEXT),
        1 if priced.priced else 0,
        estimated,
        priced.matched_model,
        book,
        record.topic,
        record.partition,
        record.offset,
        record.timestamp_ms,
        now_ms,
        dict(usage.metadata),
        record.value,
        priced.source,
        *call,
    )
    return dict(zip(EVENT_COLUMNS, row, strict=True))


@pytest.fixture(scope="module")
def price_book() -> PriceBook:
    return build_price_book(load_settings())


def _record(offset: int, value: bytes, tenant: bytes = b"t") -> Record:
    return Record(
        "events", offset % 3, offset, b"k", value, ((TENANT_HEADER, tenant),), 1000 + offset
    )


def _token_events(n: int) -> list[bytes]:
    now = int(time.time() * 1000)
    return [v for _, v in encode(EventStream(seed=5, now_ms=now).take(n))]


def _other_events() -> list[bytes]:
    """One of every other kind: each takes the general (non-token) path of the builder."""
    events = [
        custom_event(
            {"provider": "openai", "model": "dall-e-3", "images": 2, "size": "1024x1024"},
            type="io.meterline.usage.image",
            id="img",
        ),
        custom_event({"unit": "page", "quantity": "12.5"}, type="io.meterline.usage.units", id="u"),
        custom_event(
            {"amount": "3.10", "currency": "EUR"}, type="io.meterline.usage.charge", id="c"
        ),
        custom_event({"unit": "seat", "quantity": "2"}, id="custom"),
        custom_event(None, id="custom-empty", subject=None),
        custom_event(
            {
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 10,
                "output_tokens": 5,
                "metadata": {"team": "a", "run": "b"},
                "estimated": True,
                "status": "error",
                "error_type": "timeout",
                "http_status": 504,
                "latency_ms": 1200,
            },
            type="io.meterline.usage.tokens",
            id="tok-meta",
        ),
    ]
    return [orjson.dumps({k: v for k, v in e.items() if v is not None}) for e in events]


def _decoded(values: list[bytes]) -> list[Decoded]:
    items = [decode(_record(i, v)) for i, v in enumerate(values)]
    assert all(isinstance(d, Decoded) for d in items), [
        d for d in items if not isinstance(d, Decoded)
    ]
    return [d for d in items if isinstance(d, Decoded)]


def _compare(price_book: PriceBook, items: list[Decoded]) -> EventColumns:
    columns = EventColumns()
    expected = []
    for item in items:
        priced = price_book.price(item.envelope.type, item.usage, item.time_ms, "c")
        columns.add(item, priced, price_book.version, BOOK_TIME)
        expected.append(reference_row(item, priced, price_book.version, BOOK_TIME))
    assert len(columns) == len(items)
    built = columns.columns
    assert list(built) == list(EVENT_COLUMNS)
    for name, values in built.items():
        assert values == [row[name] for row in expected], name
        # Equal and of the same type: 1 == True == Decimal(1) would hide a wrong value kind.
        assert [type(v) for v in values] == [type(row[name]) for row in expected], name
    return columns


def test_a_token_only_batch_has_the_row_by_row_columns(price_book: PriceBook) -> None:
    items = [d for d in _decoded(_token_events(300)) if type(d.usage) is TokenUsage]
    assert len(items) > 250  # the bench data is ~94% token events: the all-token fast path
    _compare(price_book, items)


def test_a_mixed_batch_has_the_row_by_row_columns(price_book: PriceBook) -> None:
    tokens = _token_events(40)  # bench data: token events and some of the other types
    values = [*tokens[:20], *_other_events(), *tokens[20:]]
    items = _decoded(values)
    assert {type(d.usage).__name__ for d in items} >= {"TokenUsage", "ImageUsage", "ChargeUsage"}
    _compare(price_book, items)


def test_a_metadata_token_event_keeps_its_labels_and_call_outcome(price_book: PriceBook) -> None:
    items = _decoded(_other_events()[-1:])
    built = _compare(price_book, items).columns
    assert built["metadata"] == [{"team": "a", "run": "b"}]
    assert (built["estimated"], built["status"], built["http_status"]) == ([1], ["error"], [504])


def test_an_empty_batch_has_every_column_empty() -> None:
    assert EventColumns().columns == {name: [] for name in EVENT_COLUMNS}


def test_a_row_that_cannot_be_rounded_leaves_no_partial_row(price_book: PriceBook) -> None:
    items = _decoded(_token_events(3))
    columns = EventColumns()
    columns.add(items[0], price_book.price(items[0].envelope.type, items[0].usage, 0, "c"), "b", 0)
    too_big = Decimal(10) ** 27  # beyond Decimal(38, 12): quantize raises
    with pytest.raises(ArithmeticError):
        columns.add(items[1], Priced(too_big, too_big, True), "b", 0)
    columns.add(items[2], price_book.price(items[2].envelope.type, items[2].usage, 0, "c"), "b", 0)
    assert columns.columns["id"] == [items[0].envelope.id, items[2].envelope.id]
    assert len(columns) == 2
