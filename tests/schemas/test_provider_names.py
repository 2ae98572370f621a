"""Provider names are normalised once, by the models both the gateway and the processor use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.usage_api import UsageIn
from schemas.envelope import ValidEvent, parse_event
from schemas.providers import canonical_provider
from schemas.usage import TokenUsage, UnitsUsage


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("openai", "openai"),
        ("OPENAI", "openai"),
        (" OpenAI ", "openai"),
        ("Gemini", "google"),
        ("vertex_ai", "google"),
        ("xai", "x-ai"),
        ("together_ai", "together"),
        ("my-Own-Gateway", "my-own-gateway"),  # unknown providers keep their (folded) name
    ],
)
def test_provider_names_map_to_one_lower_case_canonical_id(sent: str, stored: str) -> None:
    assert canonical_provider(sent) == stored


def test_token_and_units_usage_store_the_canonical_provider() -> None:
    tokens = TokenUsage.model_validate({"provider": "ANTHROPIC", "model": "claude-3-5-haiku"})
    units = UnitsUsage.model_validate({"unit": "page", "provider": "Gemini"})
    assert (tokens.provider, units.provider) == ("anthropic", "google")


def test_a_blank_provider_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError) as caught:
        TokenUsage.model_validate({"provider": "   ", "model": "m"})
    assert caught.value.errors()[0]["loc"] == ("provider",)


def test_seed_usage_api_normalises_before_hashing_so_a_retry_in_other_case_is_one_request() -> None:
    body = {"project_id": "p", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}
    upper = UsageIn.model_validate({**body, "provider": "OpenAI"})
    lower = UsageIn.model_validate({**body, "provider": "openai"})
    assert upper == lower


def test_parse_event_keeps_the_raw_event_and_meters_the_canonical_provider() -> None:
    event = {
        "specversion": "1.0", "id": "1", "source": "/a", "type": "io.meterline.usage.tokens",
        "subject": "c", "data": {"provider": "OPENAI", "model": "gpt-4o", "input_tokens": 3},
    }  # fmt: skip
    parsed = parse_event(event)
    assert isinstance(parsed, ValidEvent)
    assert parsed.usage.provider == "openai"  # type: ignore[attr-defined]
    assert parsed.raw["data"]["provider"] == "OPENAI"  # the raw column keeps what was sent
