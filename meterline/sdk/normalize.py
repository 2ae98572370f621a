"""Provider usage -> meterline token semantics (``schemas.usage.TokenUsage``).

Each function takes the provider's usage object either as the SDK's pydantic
model or as the raw JSON dict (camelCase for Gemini's REST shape) and returns
the token fields of a ``TokenUsage``. Semantics (docs/design.md#provider-usage-semantics):

- OpenAI ``prompt_tokens`` / ``input_tokens`` already INCLUDE cached tokens;
  reasoning and audio are parts of the totals.
- Anthropic ``input_tokens`` EXCLUDES cache reads and writes: meterline input =
  input + cache_read + cache_creation. Cache writes split by TTL when the
  ``cache_creation`` breakdown is present (else all count as 5-minute writes).
- Gemini ``promptTokenCount`` includes cached tokens; ``thoughtsTokenCount`` is
  separate from ``candidatesTokenCount``: output = candidates + thoughts,
  reasoning = thoughts. Tool-use prompt tokens are billed as input, so they
  are added to input.

A wrong mapping bills the wrong amount silently, so every function is tested
against real response shapes (tests/meterline/sdk/test_emitter_normalize.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from schemas import usage as _usage

log = logging.getLogger(__name__)

TokenFields = dict[str, int]
TOKEN_FIELDS = _usage.TOKEN_FIELDS  # re-exported: the emitter builds events with it


def field(obj: Any, *names: str) -> Any:
    """The first present, non-None attribute or key among ``names`` (None if none)."""
    if obj is None:
        return None
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _int(obj: Any, *names: str) -> int:
    value = field(obj, *names)
    # bool is an int subclass; a provider never sends one here, but refusing it
    # keeps a malformed payload from billing one token.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _fit_parts(tokens: TokenFields, provider: str) -> TokenFields:
    """Keep the schema invariants (parts within totals) without inventing usage.

    A provider that reports parts larger than the total would make the gateway
    reject the event and lose the whole usage; dropping the offending
    breakdown (the totals stay) loses only the detail, and we log it.
    """
    cached = tokens["cache_read_tokens"] + tokens["cache_write_tokens"]
    cached += tokens["cache_write_1h_tokens"]
    if cached + tokens["input_audio_tokens"] > tokens["input_tokens"]:
        log.warning(
            "%s usage: input parts exceed input_tokens, breakdown dropped: %s", provider, tokens
        )
        for name in (
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "input_audio_tokens",
        ):
            tokens[name] = 0
    if tokens["reasoning_tokens"] + tokens["output_audio_tokens"] > tokens["output_tokens"]:
        log.warning(
            "%s usage: output parts exceed output_tokens, breakdown dropped: %s", provider, tokens
        )
        tokens["reasoning_tokens"] = tokens["output_audio_tokens"] = 0
    return tokens


def _fields(**values: int) -> TokenFields:
    out = dict.fromkeys(TOKEN_FIELDS, 0)
    out.update(values)
    return out


def openai_chat(usage: Any) -> TokenFields:
    """Chat Completions ``usage`` (``CompletionUsage``)."""
    prompt = field(usage, "prompt_tokens_details")
    completion = field(usage, "completion_tokens_details")
    return _fit_parts(
        _fields(
            input_tokens=_int(usage, "prompt_tokens"),
            output_tokens=_int(usage, "completion_tokens"),
            cache_read_tokens=_int(prompt, "cached_tokens"),
            cache_write_tokens=_int(prompt, "cache_write_tokens"),
            input_audio_tokens=_int(prompt, "audio_tokens"),
            reasoning_tokens=_int(completion, "reasoning_tokens"),
            output_audio_tokens=_int(completion, "audio_tokens"),
        ),
        "openai",
    )


def openai_responses(usage: Any) -> TokenFields:
    """Responses API ``usage`` (``ResponseUsage``)."""
    details_in = field(usage, "input_tokens_details")
    details_out = field(usage, "output_tokens_details")
    return _fit_parts(
        _fields(
            input_tokens=_int(usage, "input_tokens"),
            output_tokens=_int(usage, "output_tokens"),
            cache_read_tokens=_int(details_in, "cached_tokens"),
            cache_write_tokens=_int(details_in, "cache_write_tokens"),
            reasoning_tokens=_int(details_out, "reasoning_tokens"),
        ),
        "openai",
    )


def anthropic(usage: Any) -> TokenFields:
    """Messages ``usage`` (final, or the cumulative one a stream ends with)."""
    uncached = _int(usage, "input_tokens")
    read = _int(usage, "cache_read_input_tokens")
    written = _int(usage, "cache_creation_input_tokens")
    breakdown = field(usage, "cache_creation")
    write_1h = _int(breakdown, "ephemeral_1h_input_tokens")
    write_5m = _int(breakdown, "ephemeral_5m_input_tokens")
    if breakdown is None or write_5m + write_1h != written:
        # No (or an inconsistent) TTL split: the total is what is billed; the
        # 5-minute price is the default TTL.
        write_5m, write_1h = written, 0
    return _fit_parts(
        _fields(
            input_tokens=uncached + read + written,
            output_tokens=_int(usage, "output_tokens"),
            cache_read_tokens=read,
            cache_write_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
        ),
        "anthropic",
    )


def _modality(details: Any, modality: str) -> int:
    total = 0
    for item in details or ():
        kind = field(item, "modality")
        name = str(getattr(kind, "value", kind) or "")
        if name.upper() == modality:
            total += _int(item, "token_count", "tokenCount")
    return total


def gemini(usage: Any) -> TokenFields:
    """``usage_metadata`` / ``usageMetadata`` of a GenerateContentResponse."""
    thoughts = _int(usage, "thoughts_token_count", "thoughtsTokenCount")
    return _fit_parts(
        _fields(
            input_tokens=_int(usage, "prompt_token_count", "promptTokenCount")
            + _int(usage, "tool_use_prompt_token_count", "toolUsePromptTokenCount"),
            output_tokens=_int(usage, "candidates_token_count", "candidatesTokenCount") + thoughts,
            cache_read_tokens=_int(usage, "cached_content_token_count", "cachedContentTokenCount"),
            reasoning_tokens=thoughts,
            input_audio_tokens=_modality(
                field(usage, "prompt_tokens_details", "promptTokensDetails"), "AUDIO"
            ),
            output_audio_tokens=_modality(
                field(usage, "candidates_tokens_details", "candidatesTokensDetails"), "AUDIO"
            ),
        ),
        "google",
    )


class AnthropicStreamUsage:
    """Usage of one streamed Message, from its events.

    ``message_start`` carries the input side (and a provisional output count);
    every ``message_delta`` carries CUMULATIVE usage, so each field takes the
    latest value reported, never a sum. ``complete`` is False until a
    ``message_delta`` arrived: a cut-off stream is metered from what was seen
    and flagged estimated.
    """

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.complete = False

    def feed(self, event: Any) -> None:
        kind = field(event, "type")
        if kind == "message_start":
            message = field(event, "message")
            self.id = field(message, "id")
            self.model = field(message, "model")
            self._merge(field(message, "usage"))
        elif kind == "message_delta":
            self._merge(field(event, "usage"))
            self.complete = True

    def _merge(self, usage: Any) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation",
        ):
            value = field(usage, name)
            if value is not None:
                self.usage[name] = value

    def tokens(self) -> TokenFields:
        return anthropic(self.usage)
