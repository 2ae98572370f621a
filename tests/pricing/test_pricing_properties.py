"""Properties: cost never negative and monotone (non-decreasing) in every token count.

Monotone per field means: adding tokens of one kind, keeping the usage valid,
never lowers the cost. For a part (cache read, reasoning...) we add it together
with its total, as a real response would (input_tokens counts cached tokens too).
Context tiers are cliffs (above 200k ALL tokens pay more), which keeps them monotone.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pricing import BookPriceBook
from pricing.book import parse_book
from schemas.usage import EventType, TokenUsage

_U = TypeVar("_U", bound=BaseModel)


def _make(cls: type[_U], **fields: Any) -> _U:
    """Build usage data through validation (also keeps mypy happy without the pydantic plugin)."""
    return cls.model_validate(fields)


JULY_2025 = 1_751_328_000_000
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "o3"),
    ("openai", "gpt-4o-audio-preview"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("mistral", "mistral-large-latest"),
    ("aws", "us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("selfhosted", "tiered"),
]
BOOK = BookPriceBook(
    parse_book(
        {
            "models": [
                {
                    "provider": "selfhosted",
                    "model": "tiered",
                    "prices": [
                        {
                            "input_mtok": {"base": "0.5", "tiers": [{"start": 1000, "price": "1"}]},
                            "output_mtok": "2",
                            "cache_read_mtok": "0.05",
                        }
                    ],
                }
            ],
            "rate_cards": {"*": {"markup_pct": 15, "discount_pct": 10}},
        }
    ),
    "prop",
)

counts = st.integers(min_value=0, max_value=400_000)
# Each token kind, as the fields that grow together when one more such token is reported.
KINDS = {
    "input": ("input_tokens",),
    "cache_read": ("input_tokens", "cache_read_tokens"),
    "cache_write": ("input_tokens", "cache_write_tokens"),
    "cache_write_1h": ("input_tokens", "cache_write_1h_tokens"),
    "input_audio": ("input_tokens", "input_audio_tokens"),
    "output": ("output_tokens",),
    "reasoning": ("output_tokens", "reasoning_tokens"),
    "output_audio": ("output_tokens", "output_audio_tokens"),
}


@st.composite
def usages(draw: Any) -> dict[str, int]:
    parts = {
        "cache_read_tokens": draw(counts),
        "cache_write_tokens": draw(counts),
        "cache_write_1h_tokens": draw(counts),
        "input_audio_tokens": draw(counts),
        "reasoning_tokens": draw(counts),
        "output_audio_tokens": draw(counts),
    }
    fresh_input = draw(counts)
    text_output = draw(counts)
    input_parts = sum(
        v for k, v in parts.items() if k not in ("reasoning_tokens", "output_audio_tokens")
    )
    return {
        **parts,
        "input_tokens": input_parts + fresh_input,
        "output_tokens": parts["reasoning_tokens"] + parts["output_audio_tokens"] + text_output,
    }


def _price(provider: str, model: str, fields: dict[str, int]) -> tuple[Decimal, Decimal]:
    usage = _make(TokenUsage, provider=provider, model=model, **fields)
    priced = BOOK.price(EventType.TOKENS, usage, JULY_2025, "anyone")
    assert priced.priced
    return priced.cost_usd, priced.price_usd


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODELS), usages(), st.sampled_from(sorted(KINDS)), st.integers(1, 300_000))
def test_cost_is_monotone_in_every_token_count(
    model: tuple[str, str], fields: dict[str, int], kind: str, extra: int
) -> None:
    more = dict(fields)
    for name in KINDS[kind]:
        more[name] += extra
    cost, price = _price(*model, fields)
    more_cost, more_price = _price(*model, more)
    assert more_cost >= cost
    assert more_price >= price


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODELS), usages())
def test_cost_is_never_negative(model: tuple[str, str], fields: dict[str, int]) -> None:
    cost, price = _price(*model, fields)
    assert cost >= 0
    assert price >= 0
    assert isinstance(cost, Decimal)
