"""The fast path must equal genai-prices' own calculation, for every catalog model.

Two levels: every ``ModelPrice`` in the catalog (at several dates) through
``build_pricer`` against ``ModelPrice.calc_price``; and, for the popular
providers, the whole engine (matching, effective dating, service tiers)
against ``ModelInfo.calc_price`` with the same timestamp and request context.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, Provider
from pydantic import BaseModel

from pricing import CatalogPriceBook
from pricing.catalog import price_context
from pricing.fast import FastPricer, build_pricer, genai_usage
from schemas.usage import EventType, TokenUsage

_U = TypeVar("_U", bound=BaseModel)


def _make(cls: type[_U], **fields: Any) -> _U:
    """Build usage data through validation (also keeps mypy happy without the pydantic plugin)."""
    return cls.model_validate(fields)


DATES = [
    datetime(2024, 6, 1, tzinfo=UTC),
    datetime(2025, 7, 1, tzinfo=UTC),
    datetime(2026, 12, 1, tzinfo=UTC),
]
POPULAR = ("openai", "anthropic", "google", "mistral", "aws", "azure")


def _usages(seed: int, n: int) -> list[TokenUsage]:
    rnd = random.Random(seed)
    out = [_make(TokenUsage, provider="p", model="m")]  # all zero
    for _ in range(n):
        i = rnd.choice(
            [1, 999, 128_000, 128_001, 200_000, 200_001, 272_001, 1_500_000, rnd.randint(0, 10**6)]
        )
        cr = rnd.randint(0, i) if rnd.random() < 0.6 else 0
        cw = rnd.randint(0, i - cr) if rnd.random() < 0.5 else 0
        cw1 = rnd.randint(0, i - cr - cw) if rnd.random() < 0.3 else 0
        audio = rnd.randint(0, i - cr - cw - cw1) if rnd.random() < 0.3 else 0
        o = rnd.randint(0, 100_000)
        r = rnd.randint(0, o) if rnd.random() < 0.5 else 0
        ao = rnd.randint(0, o - r) if rnd.random() < 0.2 else 0
        out.append(
            _make(
                TokenUsage,
                provider="p",
                model="m",
                input_tokens=i,
                output_tokens=o,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                cache_write_1h_tokens=cw1,
                input_audio_tokens=audio,
                reasoning_tokens=r,
                output_audio_tokens=ao,
            )
        )
    return out


def _all_models() -> list[tuple[Provider, ModelInfo]]:
    return [(p, m) for p in data_snapshot.get_snapshot().providers for m in p.models]


def test_fast_path_equals_genai_prices_for_every_catalog_price() -> None:
    usages = _usages(1, 8)
    compared = fast = 0
    for provider, info in _all_models():
        for when in DATES:
            for context in (
                None,
                price_context("batch"),
                price_context("flex"),
                price_context("priority"),
            ):
                model_price = info.get_prices(when, context)
                pricer = build_pricer(model_price)
                fast += isinstance(pricer, FastPricer)
                for usage in usages:
                    try:
                        expected = model_price.calc_price(genai_usage(usage))["total_price"]
                    except ValueError:
                        with pytest.raises(ValueError):
                            pricer.cost(usage)
                        continue
                    assert pricer.cost(usage) == expected, (
                        provider.id,
                        info.id,
                        when,
                        context,
                        usage,
                    )
                    compared += 1
    assert compared > 50_000
    assert (
        fast > 0.9 * len(_all_models()) * len(DATES) * 4
    )  # the fast path is the norm, not the exception


@pytest.mark.parametrize("provider_id", POPULAR)
def test_engine_equals_genai_prices_for_popular_models(provider_id: str) -> None:
    book = CatalogPriceBook()
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == provider_id)
    usages = _usages(2, 4)
    checked = 0
    for info in provider.models:
        for when in DATES:
            time_ms = int(when.timestamp() * 1000)
            for tier in ("", "batch", "priority"):
                for usage in usages:
                    event = usage.model_copy(
                        update={"provider": provider_id, "model": info.id, "service_tier": tier}
                    )
                    priced = book.price(EventType.TOKENS, event, time_ms)
                    if priced.matched_model != f"{provider_id}/{info.id}":
                        break  # another catalog entry answers to this id first: not this model
                    expected = info.calc_price(
                        genai_usage(event),
                        provider,
                        genai_request_timestamp=when,
                        price_context=price_context(tier),
                    ).total_price
                    assert priced.cost_usd == expected, (info.id, when, tier, event)
                    assert isinstance(priced.cost_usd, Decimal)
                    checked += 1
    assert checked > 100
