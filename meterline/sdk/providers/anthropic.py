"""Meter an ``anthropic.Anthropic`` / ``AsyncAnthropic`` client in place.

Patched on the instance: ``messages.create`` (plain and ``stream=True``) and
``messages.stream()`` (the helper's manager keeps its type; only the raw
stream it opens is watched). Usage: ``normalize.anthropic`` (input includes
cache reads and writes; 5m / 1h writes apart). Streams: ``message_delta``
usage is cumulative, so the last one wins. A stream cut off before any
``message_delta`` is metered from ``message_start`` plus a tiktoken count of
the text seen (an approximation for Claude's tokenizer), flagged estimated.
Anthropic reports no creation time: the event time is when the call started.
``with_options()`` / ``copy()`` return a client metered by the same meter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meterline.sdk import builders, normalize
from meterline.sdk._recorder import Recorder
from meterline.sdk.context import Scope
from meterline.sdk.normalize import AnthropicStreamUsage, field
from meterline.sdk.providers._common import (
    Call,
    StreamWatcher,
    attach,
    begin,
    failed_call,
    guard,
    is_wrapped,
    mark,
    meter_copies,
    provider_error,
    timed,
)
from meterline.sdk.tokens import count_tokens

PROVIDER = "anthropic"
_SYNC_MANAGER_REQUEST = "_MessageStreamManager__api_request"
_ASYNC_MANAGER_REQUEST = "_AsyncMessageStreamManager__api_request"


def _event(
    call: Call,
    scope: Scope,
    *,
    model: str,
    tokens: dict[str, int],
    id: Any,
    estimated: bool,
    service_tier: Any = None,
) -> dict[str, Any]:
    if estimated:
        call.meter.count("estimated")
    return builders.token_event(
        source=call.meter.source,
        customer=scope.customer,
        provider=PROVIDER,
        model=model or str(call.request.get("model") or "unknown"),
        tokens=tokens,
        feature=scope.feature,
        user=scope.user,
        metadata=scope.metadata,
        id=id if isinstance(id, str) and id else None,
        time=call.started,
        estimated=estimated,
        service_tier=service_tier if isinstance(service_tier, str) else "",
        outcome=call.outcome,
    )


def failed_event(call: Call, scope: Scope) -> dict[str, Any]:
    """A refused or unanswered call: zero usage, its status (docs/sdk.md#latency-and-errors)."""
    return _event(call, scope, model="", tokens={}, id=None, estimated=False)


def message_event(call: Call, message: Any) -> Callable[[Scope], dict[str, Any]]:
    def make(scope: Scope) -> dict[str, Any]:
        usage = field(message, "usage")
        return _event(
            call,
            scope,
            model=field(message, "model") or "",
            tokens=normalize.anthropic(usage),
            id=field(message, "id"),
            estimated=False,
            service_tier=field(usage, "service_tier"),
        )

    return make


class MessageStream(StreamWatcher):
    def __init__(self, call: Call) -> None:
        super().__init__(call, "an Anthropic message stream")
        self.usage = AnthropicStreamUsage()
        self.parts: list[str] = []

    def see(self, event: Any) -> None:
        kind = event.type
        if kind == "content_block_delta":
            text = getattr(event.delta, "text", None) or getattr(event.delta, "partial_json", None)
            if text:
                self.parts.append(text)
        elif kind in ("message_start", "message_delta"):
            self.usage.feed(event)

    def event(self, scope: Scope) -> dict[str, Any] | None:
        if self.usage.id is None:
            return None
        tokens = self.usage.tokens()
        if not self.usage.complete:
            seen = count_tokens("claude", "".join(self.parts))
            tokens["output_tokens"] = max(tokens["output_tokens"], seen)
        return _event(
            self.call,
            scope,
            model=self.usage.model or "",
            tokens=tokens,
            id=self.usage.id,
            estimated=not self.usage.complete,
        )


def _watch(result: Any, call: Call, is_async: bool) -> Any:
    if getattr(result, "_iterator", None) is None:
        return result
    return attach(result, MessageStream(call), is_async)


def _patch_create(messages: Any, meter: Recorder | None, is_async: bool) -> None:
    original = messages.create
    if is_wrapped(original):
        return

    def after(call: Call | None, result: Any, stream: bool) -> Any:
        if call is None:
            return result
        if stream:
            return (
                guard(call, "an Anthropic stream", lambda: _watch(result, call, is_async)) or result
            )
        guard(
            call,
            "an Anthropic message",
            lambda: call.meter.submit_built(call.scope, message_event(call, result)),
        )
        return result

    if is_async:

        async def create_async(*args: Any, **kwargs: Any) -> Any:
            call = guard(None, "an Anthropic call", lambda: begin(meter, kwargs))
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                failed_call(call, exc, "a failed Anthropic call", failed_event)
                raise
            timed(call)
            return after(call, result, kwargs.get("stream") is True)

        messages.create = mark(create_async, original)
    else:

        def create(*args: Any, **kwargs: Any) -> Any:
            call = guard(None, "an Anthropic call", lambda: begin(meter, kwargs))
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                failed_call(call, exc, "a failed Anthropic call", failed_event)
                raise
            timed(call)
            return after(call, result, kwargs.get("stream") is True)

        messages.create = mark(create, original)


def _patch_stream(messages: Any, meter: Recorder | None, is_async: bool) -> None:
    original = messages.stream
    if is_wrapped(original):
        return
    attribute = _ASYNC_MANAGER_REQUEST if is_async else _SYNC_MANAGER_REQUEST

    def stream(*args: Any, **kwargs: Any) -> Any:
        call = guard(None, "an Anthropic call", lambda: begin(meter, kwargs))
        manager = original(*args, **kwargs)
        request = getattr(manager, attribute, None)
        if call is None or request is None:
            return manager  # an anthropic version we do not know: unmetered, never broken

        if is_async:

            async def open_async() -> Any:
                try:
                    result = await request
                except BaseException:
                    provider_error(call)
                    raise
                return _watch(result, call, True)

            setattr(manager, attribute, open_async())
        else:

            def open_sync() -> Any:
                try:
                    result = request()
                except BaseException:
                    provider_error(call)
                    raise
                return _watch(result, call, False)

            setattr(manager, attribute, open_sync)
        return manager

    messages.stream = mark(stream, original)


def wrap_anthropic(client: Any, meter: Recorder | None = None) -> Any:
    """Meter ``client`` (``Anthropic`` or ``AsyncAnthropic``) in place and return it."""
    import anthropic  # lazily: the SDK must import without provider packages

    is_async = isinstance(client, anthropic.AsyncAnthropic)
    _patch_create(client.messages, meter, is_async)
    _patch_stream(client.messages, meter, is_async)
    meter_copies(client, lambda copied: wrap_anthropic(copied, meter))
    return client
