"""Meter an ``openai.OpenAI`` / ``AsyncOpenAI`` client in place.

Patched on the client instance (same object, same types, same exceptions):
``chat.completions.create`` and ``responses.create``, sync and async,
streaming included; ``images.generate`` and ``audio.transcriptions.create``
(openai_media.py). ``with_options()`` / ``copy()`` return a client metered by
the same meter; ``with_raw_response`` is not metered.

Streaming chat: unless the caller set ``stream_options.include_usage``
(``False`` is respected), we ask for it and hide the extra usage-only chunk,
so the caller sees exactly the chunks it would have seen. When no usage
arrives (cut-off stream, caller forbade it, a compatible server ignoring it)
the joined text is counted with tiktoken and the event is flagged estimated.
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
    attach,
    begin,
    failed_call,
    guard,
    is_wrapped,
    mark,
    meter_copies,
    prompt_text,
    text_of,
    timed,
)
from meterline.sdk.tokens import count_tokens

PROVIDER = "openai"


def _estimate(model: str, output_text: str, prompt: str) -> dict[str, int]:
    return {
        "input_tokens": count_tokens(model, prompt),
        "output_tokens": count_tokens(model, output_text),
    }


def _token_event(
    call: Call,
    scope: Scope,
    *,
    model: str,
    tokens: dict[str, int],
    id: str | None,
    created: Any,
    estimated: bool = False,
    service_tier: Any = None,
) -> dict[str, Any]:
    if estimated:
        call.meter.count("estimated")
    return builders.token_event(
        source=call.meter.source,
        customer=scope.customer,
        provider=PROVIDER,
        model=model,
        tokens=tokens,
        feature=scope.feature,
        user=scope.user,
        metadata=scope.metadata,
        id=id,
        time=created if isinstance(created, int | float) and created > 0 else call.started,
        estimated=estimated,
        service_tier=service_tier if isinstance(service_tier, str) else "",
        outcome=call.outcome,
    )


def failed_event(call: Call, scope: Scope) -> dict[str, Any]:
    """A call the provider refused or that never got an answer: zero usage, its status."""
    return _token_event(call, scope, model=requested_model(call), tokens={}, id=None, created=None)


def requested_model(call: Call) -> str:
    # "unknown" rather than an empty model, which the gateway refuses: the
    # failure must still be recorded when the request named no model.
    return str(call.request.get("model") or "unknown")


# --- chat completions -----------------------------------------------------------------------


def chat_event(call: Call, response: Any) -> Callable[[Scope], dict[str, Any]]:
    def make(scope: Scope) -> dict[str, Any]:
        model = field(response, "model") or str(call.request.get("model", ""))
        usage = field(response, "usage")
        estimated = usage is None
        if usage is None:
            texts = [
                text_of(field(field(c, "message"), "content"))
                for c in field(response, "choices") or ()
            ]
            tokens = _estimate(model, "".join(texts), prompt_text(call.request.get("messages")))
        else:
            tokens = normalize.openai_chat(usage)
        return _token_event(
            call,
            scope,
            model=model,
            tokens=tokens,
            id=field(response, "id"),
            created=field(response, "created"),
            estimated=estimated,
            service_tier=field(response, "service_tier"),
        )

    return make


class ChatStream(StreamWatcher):
    def __init__(self, call: Call, hide_usage_chunk: bool) -> None:
        super().__init__(call, "an OpenAI chat stream")
        self.hide_usage_chunk = hide_usage_chunk
        self.id: str | None = None
        self.model = ""
        self.created: Any = None
        self.service_tier: Any = None
        self.usage: Any = None
        self.parts: list[str] = []

    def see(self, chunk: Any) -> None:
        if self.id is None:
            self.id, self.created = chunk.id, chunk.created
        self.model = chunk.model or self.model
        self.service_tier = getattr(chunk, "service_tier", None) or self.service_tier
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                self.parts.append(delta.content)
            for tool in delta.tool_calls or ():
                if tool.function is not None and tool.function.arguments:
                    self.parts.append(tool.function.arguments)

    def hide(self, chunk: Any) -> bool:
        return self.hide_usage_chunk and not chunk.choices and chunk.usage is not None

    def event(self, scope: Scope) -> dict[str, Any] | None:
        if self.id is None:
            return None  # nothing came back: nothing to meter
        model = self.model or str(self.call.request.get("model", ""))
        estimated = self.usage is None
        if estimated:
            prompt = prompt_text(self.call.request.get("messages"))
            tokens = _estimate(model, "".join(self.parts), prompt)
        else:
            tokens = normalize.openai_chat(self.usage)
        return _token_event(
            self.call,
            scope,
            model=model,
            tokens=tokens,
            id=self.id,
            created=self.created,
            estimated=estimated,
            service_tier=self.service_tier,
        )


def _ask_for_usage(kwargs: dict[str, Any]) -> bool:
    """Add ``stream_options.include_usage`` unless the caller decided; True if we added it."""
    options = kwargs.get("stream_options")
    # openai's ``omit`` / ``NOT_GIVEN`` sentinels mean "not given" too.
    if options is None or type(options).__name__ in ("Omit", "NotGiven"):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    if isinstance(options, dict) and "include_usage" not in options:
        kwargs["stream_options"] = {**options, "include_usage": True}
        return True
    return False


# --- responses API --------------------------------------------------------------------------


def responses_event(call: Call, response: Any) -> Callable[[Scope], dict[str, Any]]:
    def make(scope: Scope) -> dict[str, Any]:
        model = field(response, "model") or str(call.request.get("model", ""))
        usage = field(response, "usage")
        if usage is None:
            output = field(response, "output_text") or ""
            tokens = _estimate(model, output, prompt_text(call.request.get("input")))
        else:
            tokens = normalize.openai_responses(usage)
        return _token_event(
            call,
            scope,
            model=model,
            tokens=tokens,
            id=field(response, "id"),
            created=field(response, "created_at"),
            estimated=usage is None,
            service_tier=field(response, "service_tier"),
        )

    return make


class ResponsesStream(StreamWatcher):
    def __init__(self, call: Call) -> None:
        super().__init__(call, "an OpenAI Responses stream")
        self.response: Any = None
        self.usage: Any = None
        self.parts: list[str] = []

    def see(self, event: Any) -> None:
        kind = event.type
        if kind == "response.output_text.delta":
            self.parts.append(event.delta)
        elif kind in ("response.created", "response.in_progress"):
            self.response = self.response or event.response
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.response = event.response
            self.usage = event.response.usage

    def event(self, scope: Scope) -> dict[str, Any] | None:
        if self.response is None:
            return None
        model = self.response.model or str(self.call.request.get("model", ""))
        estimated = self.usage is None
        if estimated:
            prompt = prompt_text(self.call.request.get("input"))
            tokens = _estimate(model, "".join(self.parts), prompt)
        else:
            tokens = normalize.openai_responses(self.usage)
        return _token_event(
            self.call,
            scope,
            model=model,
            tokens=tokens,
            id=self.response.id,
            created=self.response.created_at,
            estimated=estimated,
            service_tier=self.response.service_tier,
        )


# --- patching -------------------------------------------------------------------------------


def _patch(
    resource: Any,
    meter: Recorder | None,
    on_result: Callable[[Call, Any], Callable[[Scope], dict[str, Any] | None]],
    make_stream: Callable[[Call, dict[str, Any]], StreamWatcher],
    is_async: bool,
    method: str = "create",
) -> None:
    original = getattr(resource, method)
    if is_wrapped(original):
        return

    def after(call: Call | None, result: Any, watcher: StreamWatcher | None) -> Any:
        if call is None:
            return result
        if watcher is not None:
            # Same Stream object for the caller; its iterator and close are watched.
            return attach(result, watcher, is_async)
        guard(
            call,
            "an OpenAI response",
            lambda: call.meter.submit_built(call.scope, on_result(call, result)),
        )
        return result

    def prepare(kwargs: dict[str, Any]) -> tuple[Call | None, StreamWatcher | None]:
        call = guard(None, "an OpenAI call", lambda: begin(meter, kwargs))
        if call is None or kwargs.get("stream") is not True:
            return call, None
        watcher = guard(call, "an OpenAI stream", lambda: make_stream(call, kwargs))
        return call, watcher

    if is_async:

        async def create_async(*args: Any, **kwargs: Any) -> Any:
            call, watcher = prepare(kwargs)
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                failed_call(call, exc, "a failed OpenAI call", failed_event)
                raise
            timed(call)
            return after(call, result, watcher)

        setattr(resource, method, mark(create_async, original))
    else:

        def create(*args: Any, **kwargs: Any) -> Any:
            call, watcher = prepare(kwargs)
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                failed_call(call, exc, "a failed OpenAI call", failed_event)
                raise
            timed(call)
            return after(call, result, watcher)

        setattr(resource, method, mark(create, original))


def _chat_stream(call: Call, kwargs: dict[str, Any]) -> StreamWatcher:
    return ChatStream(call, hide_usage_chunk=_ask_for_usage(kwargs))


def _responses_stream(call: Call, kwargs: dict[str, Any]) -> StreamWatcher:
    return ResponsesStream(call)


def wrap_openai(client: Any, meter: Recorder | None = None) -> Any:
    """Meter ``client`` (``OpenAI`` or ``AsyncOpenAI``) in place and return it."""
    import openai  # lazily: the SDK must import without provider packages

    is_async = isinstance(client, openai.AsyncOpenAI)
    _patch(client.chat.completions, meter, chat_event, _chat_stream, is_async)
    _patch(client.responses, meter, responses_event, _responses_stream, is_async)
    from meterline.sdk.providers import openai_media  # imports this module: not at the top

    _patch(
        client.images,
        meter,
        openai_media.image_event,
        openai_media.image_stream,
        is_async,
        "generate",
    )
    _patch(
        client.audio.transcriptions,
        meter,
        openai_media.transcription_event,
        openai_media.transcription_stream,
        is_async,
    )
    meter_copies(client, lambda copied: wrap_openai(copied, meter))
    return client
