"""Meter a ``google.genai.Client`` in place (``client.models`` and ``client.aio.models``).

Patched: ``generate_content`` and ``generate_content_stream``, sync and async
(chats go through them too). Usage: ``normalize.gemini`` (output = candidates
+ thoughts; reasoning = thoughts; prompt includes cached). In a stream every
chunk repeats the running usage, so the last one seen per response id wins;
automatic continuation makes several responses (ids) in one stream, each is
metered. A stream that ends with no usage is counted with tiktoken (an
approximation for Gemini's tokenizer) and flagged estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meterline.sdk import builders, normalize
from meterline.sdk._recorder import Recorder
from meterline.sdk.context import Scope
from meterline.sdk.normalize import field
from meterline.sdk.providers._common import (
    Call,
    StreamWatcher,
    begin,
    failed_call,
    guard,
    is_wrapped,
    mark,
    prompt_text,
    provider_error,
    timed,
)
from meterline.sdk.tokens import count_tokens

PROVIDER = "google"


def _model(call: Call, response: Any) -> str:
    reported = field(response, "model_version")
    if isinstance(reported, str) and reported:
        return reported
    return str(call.request.get("model") or "unknown").removeprefix("models/")


def _text(response: Any) -> str:
    parts = []
    for candidate in field(response, "candidates") or ():
        for part in field(field(candidate, "content"), "parts") or ():
            text = field(part, "text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def _event(
    call: Call, scope: Scope, response: Any, tokens: dict[str, int], estimated: bool
) -> dict[str, Any]:
    if estimated:
        call.meter.count("estimated")
    created = field(response, "create_time")
    return builders.token_event(
        source=call.meter.source,
        customer=scope.customer,
        provider=PROVIDER,
        model=_model(call, response),
        tokens=tokens,
        feature=scope.feature,
        user=scope.user,
        metadata=scope.metadata,
        id=field(response, "response_id"),
        time=created if created is not None else call.started,
        estimated=estimated,
        outcome=call.outcome,
    )


def failed_event(call: Call, scope: Scope) -> dict[str, Any]:
    """A refused or unanswered call: zero usage, its status (docs/sdk.md#latency-and-errors)."""
    return _event(call, scope, None, {}, False)


def _estimate(call: Call, text: str) -> dict[str, int]:
    return {
        "input_tokens": count_tokens("gemini", prompt_text(call.request.get("contents"))),
        "output_tokens": count_tokens("gemini", text),
    }


def response_event(call: Call, response: Any) -> Callable[[Scope], dict[str, Any]]:
    def make(scope: Scope) -> dict[str, Any]:
        usage = field(response, "usage_metadata")
        if usage is None:
            return _event(call, scope, response, _estimate(call, _text(response)), True)
        return _event(call, scope, response, normalize.gemini(usage), False)

    return make


class ContentStream(StreamWatcher):
    def __init__(self, call: Call) -> None:
        super().__init__(call, "a Gemini stream")
        self.last: dict[str, Any] = {}  # response id -> last chunk (order kept)
        self.parts: dict[str, list[str]] = {}

    def see(self, chunk: Any) -> None:
        key = chunk.response_id or ""
        self.last[key] = chunk
        text = _text(chunk)
        if text:
            self.parts.setdefault(key, []).append(text)

    def event(self, scope: Scope) -> dict[str, Any] | None:
        # One event per response id; a multi-hop stream queues the others directly.
        events = []
        for key, chunk in self.last.items():
            usage = chunk.usage_metadata
            if usage is None:
                tokens = _estimate(self.call, "".join(self.parts.get(key, [])))
                events.append(_event(self.call, scope, chunk, tokens, True))
            else:
                events.append(_event(self.call, scope, chunk, normalize.gemini(usage), False))
        for extra in events[1:]:
            self.call.meter.emit(extra)
        return events[0] if events else None


def _patch(models: Any, meter: Recorder | None, is_async: bool) -> None:
    content, stream = models.generate_content, models.generate_content_stream
    if is_wrapped(content):
        return

    def record(call: Call | None, response: Any) -> Any:
        if call is not None:
            guard(
                call,
                "a Gemini response",
                lambda: call.meter.submit_built(call.scope, response_event(call, response)),
            )
        return response

    def watched(call: Call | None, iterator: Any) -> Any:
        if call is None:
            return iterator
        watcher = ContentStream(call)
        return watcher.watch_async(iterator) if is_async else watcher.watch(iterator)

    if is_async:

        async def content_async(*args: Any, **kwargs: Any) -> Any:
            call = guard(None, "a Gemini call", lambda: begin(meter, kwargs))
            try:
                response = await content(*args, **kwargs)
            except BaseException as exc:
                failed_call(call, exc, "a failed Gemini call", failed_event)
                raise
            timed(call)
            return record(call, response)

        async def stream_async(*args: Any, **kwargs: Any) -> Any:
            call = guard(None, "a Gemini call", lambda: begin(meter, kwargs))
            try:
                iterator = await stream(*args, **kwargs)
            except BaseException:
                provider_error(call)
                raise
            return watched(call, iterator)

        models.generate_content = mark(content_async, content)
        models.generate_content_stream = mark(stream_async, stream)
        return

    def content_sync(*args: Any, **kwargs: Any) -> Any:
        call = guard(None, "a Gemini call", lambda: begin(meter, kwargs))
        try:
            response = content(*args, **kwargs)
        except BaseException as exc:
            failed_call(call, exc, "a failed Gemini call", failed_event)
            raise
        timed(call)
        return record(call, response)

    def stream_sync(*args: Any, **kwargs: Any) -> Any:
        call = guard(None, "a Gemini call", lambda: begin(meter, kwargs))
        # The SDK's stream is a generator: the request happens on first next(),
        # so provider errors surface while iterating (and are not metered).
        return watched(call, stream(*args, **kwargs))

    models.generate_content = mark(content_sync, content)
    models.generate_content_stream = mark(stream_sync, stream)


def wrap_gemini(client: Any, meter: Recorder | None = None) -> Any:
    """Meter a ``google.genai.Client`` (sync and ``client.aio``) in place and return it."""
    _patch(client.models, meter, is_async=False)
    _patch(client.aio.models, meter, is_async=True)
    return client
