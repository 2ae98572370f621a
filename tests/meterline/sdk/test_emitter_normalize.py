"""Provider usage -> meterline token semantics, on real response shapes, as SDK
objects and as raw JSON. A wrong mapping bills the wrong amount silently."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from google.genai import types as gtypes
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import TypeAdapter

from meterline.sdk import normalize
from schemas.usage import TokenUsage
from tests.meterline.sdk.fakes.emitter_payloads import (
    anthropic_message,
    gemini_response,
    openai_chat,
    openai_response,
)

ZERO = dict.fromkeys(normalize.TOKEN_FIELDS, 0)


def tokens(**values: int) -> dict[str, int]:
    return {**ZERO, **values}


def valid(fields: dict[str, int]) -> dict[str, int]:
    """Every normalised vector must pass the schema the gateway enforces."""
    TokenUsage.model_validate({"provider": "p", "model": "m", **fields})
    return fields


OPENAI_CHAT = tokens(
    input_tokens=1200, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=128
)


def test_openai_chat_cached_tokens_stay_inside_prompt_tokens() -> None:
    raw = openai_chat()
    assert valid(normalize.openai_chat(raw["usage"])) == OPENAI_CHAT
    sdk = ChatCompletion.model_validate(raw)
    assert normalize.openai_chat(sdk.usage) == OPENAI_CHAT


def test_openai_chat_audio_and_cache_writes() -> None:
    usage = {
        "prompt_tokens": 900,
        "completion_tokens": 400,
        "prompt_tokens_details": {
            "cached_tokens": 100,
            "cache_write_tokens": 500,
            "audio_tokens": 200,
        },
        "completion_tokens_details": {"audio_tokens": 350, "reasoning_tokens": 0},
    }
    assert valid(normalize.openai_chat(usage)) == tokens(
        input_tokens=900,
        output_tokens=400,
        cache_read_tokens=100,
        cache_write_tokens=500,
        input_audio_tokens=200,
        output_audio_tokens=350,
    )


def test_openai_responses_reasoning_and_cache() -> None:
    raw = openai_response()
    expected = tokens(
        input_tokens=2000, output_tokens=900, cache_read_tokens=1536, reasoning_tokens=832
    )
    assert valid(normalize.openai_responses(raw["usage"])) == expected
    assert normalize.openai_responses(Response.model_validate(raw).usage) == expected


ANTHROPIC = tokens(
    input_tokens=50 + 10000 + 3000,
    output_tokens=420,
    cache_read_tokens=10000,
    cache_write_tokens=1000,
    cache_write_1h_tokens=2000,
)


def test_anthropic_input_adds_cache_reads_and_writes_split_by_ttl() -> None:
    raw = anthropic_message()
    assert valid(normalize.anthropic(raw["usage"])) == ANTHROPIC
    assert normalize.anthropic(Message.model_validate(raw).usage) == ANTHROPIC


def test_anthropic_without_ttl_breakdown_counts_writes_as_5_minutes() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 700,
        "cache_read_input_tokens": 0,
        "output_tokens": 5,
    }
    assert valid(normalize.anthropic(usage)) == tokens(
        input_tokens=710, output_tokens=5, cache_write_tokens=700
    )


def test_anthropic_inconsistent_breakdown_falls_back_to_the_billed_total() -> None:
    usage = {
        "input_tokens": 1,
        "cache_creation_input_tokens": 100,
        "output_tokens": 1,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 10},
    }
    assert normalize.anthropic(usage) == tokens(
        input_tokens=101, output_tokens=1, cache_write_tokens=100
    )


def _events(*raw: dict[str, Any]) -> list[Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    return [adapter.validate_python(event) for event in raw]


START = {
    "type": "message_start",
    "message": {
        "id": "msg_S",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_read_input_tokens": 2048,
            "cache_creation_input_tokens": 0,
            "output_tokens": 1,
        },
    },
}


@pytest.mark.parametrize("as_sdk", [False, True])
def test_anthropic_stream_usage_is_cumulative_last_value_wins(as_sdk: bool) -> None:
    raw = [
        START,
        {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": 10},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15, "input_tokens": 25},
        },
    ]
    acc = normalize.AnthropicStreamUsage()
    for event in _events(*raw) if as_sdk else raw:
        acc.feed(event)
    assert (acc.id, acc.model, acc.complete) == ("msg_S", "claude-x", True)
    assert valid(acc.tokens()) == tokens(
        input_tokens=25 + 2048, output_tokens=15, cache_read_tokens=2048
    )


def test_anthropic_cut_stream_is_incomplete() -> None:
    acc = normalize.AnthropicStreamUsage()
    acc.feed(START)
    assert acc.complete is False
    assert acc.tokens()["output_tokens"] == 1


GEMINI = tokens(
    input_tokens=500, output_tokens=80 + 220, cache_read_tokens=256, reasoning_tokens=220
)


def test_gemini_thoughts_are_output_and_reasoning_cached_is_inside_prompt() -> None:
    raw = gemini_response()
    assert valid(normalize.gemini(raw["usageMetadata"])) == GEMINI
    sdk = gtypes.GenerateContentResponse.model_validate(raw)
    assert normalize.gemini(sdk.usage_metadata) == GEMINI


def test_gemini_tool_use_prompt_and_audio_modalities() -> None:
    usage = {
        "promptTokenCount": 100,
        "toolUsePromptTokenCount": 40,
        "candidatesTokenCount": 60,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 70},
            {"modality": "AUDIO", "tokenCount": 30},
        ],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 60}],
    }
    expected = tokens(
        input_tokens=140, output_tokens=60, input_audio_tokens=30, output_audio_tokens=60
    )
    assert valid(normalize.gemini(usage)) == expected
    sdk = gtypes.GenerateContentResponseUsageMetadata.model_validate(usage)
    assert normalize.gemini(sdk) == expected


def test_parts_larger_than_totals_keep_totals_and_drop_the_breakdown() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 50},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    assert valid(normalize.openai_chat(usage)) == tokens(input_tokens=10, output_tokens=5)


def test_missing_or_malformed_usage_counts_zero_not_garbage() -> None:
    assert normalize.openai_chat({}) == ZERO
    assert normalize.openai_chat({"prompt_tokens": True, "completion_tokens": -3}) == ZERO
    assert normalize.gemini(None) == ZERO
