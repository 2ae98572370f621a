"""µs per token event: pricing over Arrow columns against the per-event path (issue 17).

    .venv/bin/python -m bench.columns_pricing [events]   # default 20000 token events

Both sides priced with the bench's book (the catalog) and with a rate-card book
(every subject on the "*" card), the caches warm, GC paused, min of 5 runs. The
per-event side is ``book.price`` + ``per_call.adjust`` (and, on its own line, the
two roundings processor/rows.py adds); the column side is
``price_token_columns`` on columns built beforehand (the decoder's job).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa

from bench.data import EventStream
from pricing import BookPriceBook, CatalogPriceBook
from pricing._yaml import load_yaml
from pricing.book import parse_book
from pricing.columns import price_token_columns
from processor.rows import COLUMN_CONTEXT, SCALE
from schemas.usage import TOKEN_FIELDS, EventType, TokenUsage

TOKENS = EventType.TOKENS.value
NOW_MS = 1_795_737_900_000  # 2026-11-27T00:05Z: ~1% late events reach back 7 days


def _events(n: int) -> list[tuple[TokenUsage, int, str]]:
    out: list[tuple[TokenUsage, int, str]] = []
    stream = EventStream(seed=12, now_ms=NOW_MS)
    while len(out) < n:
        for event in stream.take(1000):
            if event["type"] == TOKENS and len(out) < n:
                when = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
                usage = TokenUsage.model_validate(event["data"])
                out.append((usage, int(when.timestamp() * 1000), event.get("subject") or ""))
    return out


def _columns(events: list[tuple[TokenUsage, int, str]]) -> dict[str, pa.Array]:
    columns = {
        name: pa.array([getattr(u, name) for u, _, _ in events], pa.string())
        for name in ("provider", "model", "service_tier", "status", "feature")
    }
    columns["subject"] = pa.array([s for _, _, s in events], pa.string())
    columns["time"] = pa.array([t for _, t, _ in events], pa.int64())
    for name in TOKEN_FIELDS:
        columns[name] = pa.array([getattr(u, name) for u, _, _ in events], pa.int64())
    return columns


def _best(fn: Callable[[], Any], runs: int = 5) -> float:
    fn()  # warm: matches, segments and pricers cached, as in a running processor
    best = float("inf")
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def main(n: int) -> None:
    events = _events(n)
    columns = _columns(events)
    card_book = BookPriceBook(parse_book(load_yaml('rate_cards: {"*": {markup_pct: 20}}')), "b")
    for label, book in (("catalog", CatalogPriceBook()), ("rate card", card_book)):

        def per_event(book: BookPriceBook = book) -> None:
            for usage, when, subject in events:
                book.per_call.adjust("t", usage, book.price(TOKENS, usage, when, subject))

        def per_event_rounded(book: BookPriceBook = book) -> None:
            for usage, when, subject in events:
                p = book.per_call.adjust("t", usage, book.price(TOKENS, usage, when, subject))
                p.cost_usd.quantize(SCALE, context=COLUMN_CONTEXT)
                if p.price_usd is not p.cost_usd:
                    p.price_usd.quantize(SCALE, context=COLUMN_CONTEXT)

        def columnar(book: BookPriceBook = book) -> None:
            price_token_columns(book, columns)

        covered = price_token_columns(book, columns).covered
        share = sum(covered.to_pylist()) / n
        for name, fn in (
            ("book.price + adjust", per_event),
            ("book.price + adjust + rows.py rounding", per_event_rounded),
            ("price_token_columns", columnar),
        ):
            print(f"{label:9} {name:40} {_best(fn) / n * 1e6:6.3f} µs/event")
        print(f"{label:9} covered: {share:.2%} of {n} token events")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
