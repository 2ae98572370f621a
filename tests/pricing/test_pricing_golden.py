"""Golden prices: expected costs written out by hand from the providers' published price pages.

Each case states the published USD-per-million-token prices it uses, and the
arithmetic, so a reviewer can check it against the provider's page without
running anything. meterline semantics: input_tokens INCLUDES cache reads/writes
and audio; output_tokens INCLUDES reasoning.

Sources (per 1M tokens): openai.com/api/pricing, anthropic.com/pricing (and
docs.anthropic.com prompt caching: 5m write = 1.25x input, 1h write = 2x input,
read = 0.1x input), ai.google.dev/gemini-api/docs/pricing, mistral.ai/pricing,
aws.amazon.com/bedrock/pricing, cloud.google.com/vertex-ai/generative-ai/pricing,
azure.microsoft.com/pricing/details/cognitive-services/openai-service.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from pricing import CatalogPriceBook
from schemas.usage import EventType, TokenUsage

_U = TypeVar("_U", bound=BaseModel)


def _make(cls: type[_U], **fields: Any) -> _U:
    """Build usage data through validation (also keeps mypy happy without the pydantic plugin)."""
    return cls.model_validate(fields)


JULY_2025 = 1_751_328_000_000  # 2025-07-01T00:00:00Z, after the o3 price cut of 2025-06-10
M = D(1_000_000)

# (provider, model, usage fields, expected cost in USD)
CASES: list[tuple[str, str, dict[str, Any], D]] = [
    # --- OpenAI ----------------------------------------------------------------------------
    # gpt-4o: $2.50 in, $1.25 cached in, $10 out
    (
        "openai",
        "gpt-4o",
        {"input_tokens": 1000, "output_tokens": 500},
        (1000 * D("2.50") + 500 * 10) / M,
    ),
    (
        "openai",
        "gpt-4o",
        {"input_tokens": 10_000, "cache_read_tokens": 8000, "output_tokens": 200},
        (2000 * D("2.50") + 8000 * D("1.25") + 200 * 10) / M,
    ),
    # dated snapshot gpt-4o-2024-08-06 is the same price as gpt-4o
    (
        "openai",
        "gpt-4o-2024-08-06",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        D("2.50") + D(10),
    ),
    # gpt-4o-2024-05-13: $5 in, $15 out (exact match must win over gpt-4o)
    (
        "openai",
        "gpt-4o-2024-05-13",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        D(5) + D(15),
    ),
    ("openai", "gpt-4o-2024-05-13", {"input_tokens": 3, "output_tokens": 7}, (3 * 5 + 7 * 15) / M),
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out
    (
        "openai",
        "gpt-4o-mini",
        {"input_tokens": 1_234_567, "output_tokens": 89_012},
        (1_234_567 * D("0.15") + 89_012 * D("0.60")) / M,
    ),
    (
        "openai",
        "gpt-4o-mini",
        {"input_tokens": 4096, "cache_read_tokens": 1024, "output_tokens": 1},
        (3072 * D("0.15") + 1024 * D("0.075") + 1 * D("0.60")) / M,
    ),
    # o3 after 2025-06-10: $2 in, $0.50 cached, $8 out; reasoning is billed as output
    (
        "openai",
        "o3",
        {"input_tokens": 2000, "output_tokens": 1000, "reasoning_tokens": 800},
        (2000 * 2 + 1000 * 8) / M,
    ),
    (
        "openai",
        "o3",
        {
            "input_tokens": 50_000,
            "cache_read_tokens": 40_000,
            "output_tokens": 5000,
            "reasoning_tokens": 4000,
        },
        (10_000 * 2 + 40_000 * D("0.50") + 5000 * 8) / M,
    ),
    # o4-mini: $1.10 in, $0.275 cached, $4.40 out
    (
        "openai",
        "o4-mini",
        {"input_tokens": 100_000, "cache_read_tokens": 60_000, "output_tokens": 3000},
        (40_000 * D("1.10") + 60_000 * D("0.275") + 3000 * D("4.40")) / M,
    ),
    # gpt-4.1: $2 in, $0.50 cached, $8 out; mini $0.40/$0.10/$1.60; nano $0.10/$0.025/$0.40
    ("openai", "gpt-4.1", {"input_tokens": 1_000_000, "output_tokens": 250_000}, D(2) + D(8) / 4),
    (
        "openai",
        "gpt-4.1-mini",
        {"input_tokens": 10_000, "cache_read_tokens": 5000, "output_tokens": 1000},
        (5000 * D("0.40") + 5000 * D("0.10") + 1000 * D("1.60")) / M,
    ),
    (
        "openai",
        "gpt-4.1-nano",
        {"input_tokens": 1_000_000, "cache_read_tokens": 1_000_000, "output_tokens": 1_000_000},
        D("0.025") + D("0.40"),
    ),
    # gpt-5: $1.25 in, $0.125 cached, $10 out
    (
        "openai",
        "gpt-5",
        {
            "input_tokens": 20_000,
            "cache_read_tokens": 10_000,
            "output_tokens": 2000,
            "reasoning_tokens": 1500,
        },
        (10_000 * D("1.25") + 10_000 * D("0.125") + 2000 * 10) / M,
    ),
    # --- Anthropic -------------------------------------------------------------------------
    # claude-3-5-sonnet: $3 in, $15 out, 5m write $3.75, 1h write $6, read $0.30
    (
        "anthropic",
        "claude-3-5-sonnet-20241022",
        {"input_tokens": 1000, "output_tokens": 1000},
        (1000 * 3 + 1000 * 15) / M,
    ),
    (
        "anthropic",
        "claude-3-5-sonnet-20241022",
        {
            "input_tokens": 30_000,
            "cache_read_tokens": 20_000,
            "cache_write_tokens": 5000,
            "output_tokens": 700,
        },
        (5000 * 3 + 20_000 * D("0.30") + 5000 * D("3.75") + 700 * 15) / M,
    ),
    # claude-sonnet-4: same list prices; 1h cache writes at $6
    (
        "anthropic",
        "claude-sonnet-4-20250514",
        {"input_tokens": 12_000, "cache_write_1h_tokens": 10_000, "output_tokens": 300},
        (2000 * 3 + 10_000 * 6 + 300 * 15) / M,
    ),
    (
        "anthropic",
        "claude-sonnet-4-20250514",
        {
            "input_tokens": 10_000,
            "cache_write_tokens": 4000,
            "cache_write_1h_tokens": 4000,
            "cache_read_tokens": 1000,
            "output_tokens": 10,
        },
        (1000 * 3 + 4000 * D("3.75") + 4000 * 6 + 1000 * D("0.30") + 10 * 15) / M,
    ),
    # claude-sonnet-4-5 over 200k input tokens (long context): $6 in, $22.50 out, read $0.60
    (
        "anthropic",
        "claude-sonnet-4-5-20250929",
        {"input_tokens": 250_000, "cache_read_tokens": 50_000, "output_tokens": 1000},
        (200_000 * 6 + 50_000 * D("0.60") + 1000 * D("22.50")) / M,
    ),
    # ... and at or below 200k the base prices ($3 / $15)
    (
        "anthropic",
        "claude-sonnet-4-5-20250929",
        {"input_tokens": 200_000, "output_tokens": 1000},
        (200_000 * 3 + 1000 * 15) / M,
    ),
    # claude-opus-4-1: $15 in, $75 out, 5m write $18.75, 1h write $30, read $1.50
    (
        "anthropic",
        "claude-opus-4-1-20250805",
        {
            "input_tokens": 5000,
            "cache_read_tokens": 2000,
            "cache_write_tokens": 1000,
            "output_tokens": 400,
        },
        (2000 * 15 + 2000 * D("1.50") + 1000 * D("18.75") + 400 * 75) / M,
    ),
    # claude-3-5-haiku: $0.80 in, $4 out, write $1, read $0.08
    (
        "anthropic",
        "claude-3-5-haiku-20241022",
        {
            "input_tokens": 9000,
            "cache_read_tokens": 3000,
            "cache_write_tokens": 3000,
            "output_tokens": 900,
        },
        (3000 * D("0.80") + 3000 * D("0.08") + 3000 * 1 + 900 * 4) / M,
    ),
    # claude-3-haiku: $0.25 in, $1.25 out
    (
        "anthropic",
        "claude-3-haiku-20240307",
        {"input_tokens": 4_000_000, "output_tokens": 800_000},
        4 * D("0.25") + D("0.8") * D("1.25"),
    ),
    # --- Google (Gemini API) ---------------------------------------------------------------
    # gemini-2.5-pro <= 200k: $1.25 in, $10 out, cache $0.125; > 200k: $2.50, $15, $0.25
    (
        "google",
        "gemini-2.5-pro",
        {"input_tokens": 100_000, "output_tokens": 2000},
        (100_000 * D("1.25") + 2000 * 10) / M,
    ),
    (
        "google",
        "gemini-2.5-pro",
        {
            "input_tokens": 300_000,
            "cache_read_tokens": 100_000,
            "output_tokens": 2000,
            "reasoning_tokens": 1500,
        },
        (200_000 * D("2.50") + 100_000 * D("0.25") + 2000 * 15) / M,
    ),
    # gemini-2.5-flash: $0.30 text in, $1.00 audio in, $2.50 out (thinking included), cache $0.03
    (
        "google",
        "gemini-2.5-flash",
        {
            "input_tokens": 5000,
            "input_audio_tokens": 1000,
            "output_tokens": 600,
            "reasoning_tokens": 400,
        },
        (4000 * D("0.30") + 1000 * 1 + 600 * D("2.50")) / M,
    ),
    (
        "google",
        "gemini-2.5-flash",
        {"input_tokens": 10_000, "cache_read_tokens": 9000, "output_tokens": 10},
        (1000 * D("0.30") + 9000 * D("0.03") + 10 * D("2.50")) / M,
    ),
    # gemini-2.0-flash: $0.10 in, $0.70 audio in, $0.40 out
    (
        "google",
        "gemini-2.0-flash-001",
        {"input_tokens": 1_000_000, "input_audio_tokens": 500_000, "output_tokens": 1_000_000},
        D("0.5") * D("0.10") + D("0.5") * D("0.70") + D("0.40"),
    ),
    # gemini-1.5-pro: <= 128k $1.25 / $5; > 128k $2.50 / $10
    (
        "google",
        "gemini-1.5-pro-002",
        {"input_tokens": 128_001, "output_tokens": 1000},
        (128_001 * D("2.50") + 1000 * 10) / M,
    ),
    (
        "google",
        "gemini-1.5-pro-002",
        {"input_tokens": 128_000, "output_tokens": 1000},
        (128_000 * D("1.25") + 1000 * 5) / M,
    ),
    # gemini-2.5-flash-lite: $0.10 in, $0.40 out
    (
        "google",
        "gemini-2.5-flash-lite",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        D("0.10") + D("0.40"),
    ),
    # --- Mistral -------------------------------------------------------------------------
    # mistral-large: $2 in, $6 out
    (
        "mistral",
        "mistral-large-latest",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        D(2) + D(6),
    ),
    (
        "mistral",
        "mistral-large-2411",
        {"input_tokens": 1500, "output_tokens": 500},
        (1500 * 2 + 500 * 6) / M,
    ),
    # codestral: $0.30 in, $0.90 out
    (
        "mistral",
        "codestral-latest",
        {"input_tokens": 20_000, "output_tokens": 3000},
        (20_000 * D("0.30") + 3000 * D("0.90")) / M,
    ),
    # mistral-small-latest (before the 2026-03-16 change): $0.10 in, $0.30 out
    (
        "mistral",
        "mistral-small-latest",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        D("0.10") + D("0.30"),
    ),
    # mistral-nemo: $0.15 in and out
    (
        "mistral",
        "open-mistral-nemo",
        {"input_tokens": 700, "output_tokens": 300},
        1000 * D("0.15") / M,
    ),
    # --- Cloud name forms ----------------------------------------------------------------
    # Bedrock cross-region inference profile: Claude 3.5 Sonnet $3 / $15
    (
        "aws",
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        {"input_tokens": 2000, "output_tokens": 100},
        (2000 * 3 + 100 * 15) / M,
    ),
    # Bedrock Claude 3 Haiku: $0.25 / $1.25
    (
        "aws",
        "anthropic.claude-3-haiku-20240307-v1:0",
        {"input_tokens": 1_000_000, "output_tokens": 0},
        D("0.25"),
    ),
    # Vertex AI model@date: Claude 3.5 Sonnet v2 $3 / $15
    (
        "google",
        "claude-3-5-sonnet-v2@20241022",
        {"input_tokens": 10_000, "output_tokens": 1000},
        (10_000 * 3 + 1000 * 15) / M,
    ),
    # Azure OpenAI gpt-4o (global deployment): $2.50 / $10
    ("azure", "gpt-4o", {"input_tokens": 1_000_000, "output_tokens": 100_000}, D("2.50") + D(1)),
]


@pytest.fixture(scope="module")
def book() -> CatalogPriceBook:
    return CatalogPriceBook()


def test_golden_table_is_large_enough() -> None:
    providers = {case[0] for case in CASES}
    assert len(CASES) >= 30
    assert {"openai", "anthropic", "google", "mistral", "aws", "azure"} <= providers


@pytest.mark.parametrize(
    ("provider", "model", "fields", "expected"),
    CASES,
    ids=[f"{c[0]}/{c[1]}/{i}" for i, c in enumerate(CASES)],
)
def test_golden_cost(
    book: CatalogPriceBook, provider: str, model: str, fields: dict[str, Any], expected: D
) -> None:
    usage = _make(TokenUsage, provider=provider, model=model, **fields)
    priced = book.price(EventType.TOKENS, usage, JULY_2025, "someone")
    assert priced.priced, priced
    assert priced.cost_usd == expected
    assert priced.price_usd == expected  # no rate card: the customer pays list price
    assert isinstance(priced.cost_usd, D)
