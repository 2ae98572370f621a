"""Pricing micro-benchmark: µs per event on realistic mixed events.

Called by the benchmark command (docs/design.md#performance-targets: performance is measured there,
never asserted by timed tests). Events are built before the clock starts, so
the number is what ``PriceBook.price`` adds to the processor's hot path.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from pricing.base import PriceBook
from pricing.book import parse_book
from pricing.engine import BookPriceBook
from schemas.usage import (
    ChargeUsage,
    EventType,
    ImageUsage,
    TokenUsage,
    UnitsUsage,
    UsageData,
)

_U = TypeVar("_U", bound=BaseModel)


def _make(cls: type[_U], **fields: Any) -> _U:
    """Build usage data through validation (also keeps mypy happy without the pydantic plugin)."""
    return cls.model_validate(fields)


_START_MS = 1_750_000_000_000  # mid-June 2025
_SPAN_MS = 3 * 86_400_000  # three UTC days: effective-dated segments change during the run

_MODELS = [  # (provider, model, weight)
    ("openai", "gpt-4o-mini", 30),
    ("openai", "gpt-4o", 15),
    ("openai", "o3", 5),
    ("anthropic", "claude-sonnet-4-20250514", 15),
    ("anthropic", "claude-3-5-haiku-20241022", 5),
    ("google", "gemini-2.5-flash", 10),
    ("google", "gemini-2.5-pro", 5),  # context tiers
    ("mistral", "mistral-large-latest", 5),
    ("aws", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", 5),
    ("azure", "prod-gpt4o", 5),
]

_BOOK = {
    "azure_deployments": {"prod-gpt4o": "gpt-4o"},
    "units": [{"unit": "page", "cost_usd": "0.0015", "price_usd": "0.01"}],
    "images": [{"model": "gpt-image-1", "size": "1024x1024", "cost_usd": "0.042"}],
    "rate_cards": {
        "*": {"markup_pct": 20},
        "cust-1": {"markup_pct": 10, "discount_pct": 5, "request_fee_usd": "0.0001"},
        "cust-2": {"overrides": [{"model": "gpt-4o", "input_mtok": 3, "output_mtok": 12}]},
    },
}


def _token_event(rnd: random.Random) -> TokenUsage:
    provider, model, _ = rnd.choices(_MODELS, weights=[m[2] for m in _MODELS])[0]
    input_tokens = int(rnd.lognormvariate(7.5, 1.2)) + 1
    if model == "gemini-2.5-pro" and rnd.random() < 0.2:
        input_tokens += 200_000
    cache_read = rnd.randint(0, input_tokens) if rnd.random() < 0.4 else 0
    cache_write = rnd.randint(0, input_tokens - cache_read) if provider == "anthropic" else 0
    output_tokens = int(rnd.lognormvariate(5.5, 1.0)) + 1
    reasoning = rnd.randint(0, output_tokens) if model == "o3" else 0
    return _make(
        TokenUsage,
        provider=provider,
        model=model,
        input_tokens=min(input_tokens, 2_000_000),
        output_tokens=output_tokens,
        cache_read_tokens=min(cache_read, 2_000_000),
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        feature=rnd.choice(["chat", "search", "summaries"]),
        service_tier="batch" if rnd.random() < 0.05 else "",
    )


def mixed_events(n_events: int, seed: int = 7) -> list[tuple[str, UsageData, int, str]]:
    """``n_events`` (event_type, usage, time_ms, subject): 94% tokens, the rest images, units,
    charges; times in order over three days; 50 customers, a few with rate cards."""
    rnd = random.Random(seed)
    distinct = [_token_event(rnd) for _ in range(min(n_events, 5000))]
    events: list[tuple[str, UsageData, int, str]] = []
    for i in range(n_events):
        time_ms = _START_MS + i * _SPAN_MS // max(n_events, 1)
        subject = f"cust-{rnd.randint(0, 49)}"
        roll = rnd.random()
        usage: UsageData
        if roll < 0.94:
            event_type, usage = EventType.TOKENS.value, distinct[i % len(distinct)]
        elif roll < 0.96:
            event_type = EventType.IMAGE.value
            usage = _make(
                ImageUsage, provider="openai", model="gpt-image-1", images=1, size="1024x1024"
            )
        elif roll < 0.99:
            event_type = EventType.UNITS.value
            usage = _make(UnitsUsage, unit="page", quantity=Decimal(rnd.randint(1, 40)))
        else:
            event_type, usage = EventType.CHARGE.value, _make(ChargeUsage, amount=Decimal("0.50"))
        events.append((event_type, usage, time_ms, subject))
    return events


def bench_book() -> BookPriceBook:
    return BookPriceBook(parse_book(_BOOK, "bench book"), "bench")


def bench_pricing(n_events: int = 200_000) -> float:
    """µs per event for ``BookPriceBook.price`` over realistic mixed events (warm caches
    excluded from nothing: the first event of each model pays its resolution)."""
    events = mixed_events(n_events)
    book: PriceBook = bench_book()
    price = book.price
    started = time.perf_counter()
    for event_type, usage, time_ms, subject in events:
        price(event_type, usage, time_ms, subject)
    elapsed = time.perf_counter() - started
    return elapsed / max(n_events, 1) * 1e6


def bench_genai_calc_price(n_events: int = 20_000) -> float:
    """µs per event for genai-prices' own ``ModelPrice.calc_price`` on the same token events,
    with the model and its price already resolved (the reference the fast path replaces)."""
    from datetime import UTC, datetime

    from genai_prices import data_snapshot

    from pricing.fast import genai_usage

    snapshot = data_snapshot.get_snapshot()
    when = datetime.fromtimestamp(_START_MS / 1000, UTC)
    events = [e for e in mixed_events(n_events) if isinstance(e[1], TokenUsage)]
    resolved = {}
    for _, usage, _, _ in events:
        assert isinstance(usage, TokenUsage)
        key = (usage.provider, usage.model)
        if key not in resolved:
            model = "gpt-4o" if usage.model == "prod-gpt4o" else usage.model
            resolved[key] = snapshot.find_provider_model(model, None, usage.provider, None)[
                1
            ].get_prices(when)
    started = time.perf_counter()
    for _, usage, _, _ in events:
        assert isinstance(usage, TokenUsage)
        resolved[(usage.provider, usage.model)].calc_price(genai_usage(usage))
    elapsed = time.perf_counter() - started
    return elapsed / max(len(events), 1) * 1e6


if __name__ == "__main__":  # pragma: no cover - manual run
    print(f"meterline pricing: {bench_pricing():.2f} µs/event")
    print(f"genai-prices calc_price: {bench_genai_calc_price():.2f} µs/event")
