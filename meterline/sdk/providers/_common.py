"""What every provider wrapper shares: per-call options, guarded metering,
and stream observation that keeps the provider's own stream objects.

Rules every wrapper follows (a failure of ours must never become the app's):

- the provider call itself is made exactly once, with the caller's arguments
  (minus our ``meter_*`` keywords); its result or exception is passed through
  unchanged. A provider exception is counted, never metered as usage;
- everything we do around it runs in ``guard``: errors are logged and counted;
- on the app's thread we only capture references (response, scope, clock);
  normalisation and event building run on the sender (see ``Recorder.submit_built``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meterline.sdk._default import default_meter
from meterline.sdk._recorder import Recorder
from meterline.sdk.context import Scope

log = logging.getLogger("meterline.emitter")
T = TypeVar("T")
WRAPPED = "__meterline_wrapped__"
# Keyword arguments a wrapped call accepts on top of the provider's own
# (removed before the provider sees them). Typed code can use the
# ``customer(...)`` / ``no_metering()`` context managers instead.
OPTION_KEYS = ("meter_customer", "meter_feature", "meter_user", "meter_metadata", "meter_skip")


@dataclass(frozen=True, slots=True)
class Call:
    """One metered provider call, as captured on the app's thread."""

    meter: Recorder
    scope: Scope
    started: float  # unix seconds, the event time when the provider gives none
    request: Mapping[str, Any]  # the caller's keyword arguments (for estimates)
    # status / error_type / http_status / latency_ms, filled when the provider call
    # returns or raises (``timed``); the event builders copy it into ``data``.
    outcome: dict[str, Any] = field(default_factory=dict)
    clock: float = field(default_factory=time.perf_counter)  # latency's start


def timed(call: Call | None, exc: BaseException | None = None) -> None:
    """Record the provider call's latency and outcome on ``call`` (cheap: app thread).

    Latency runs from just before the provider call to its return: for a stream,
    until the provider answered with the stream's headers, not its last chunk
    (docs/sdk.md#latency-and-errors). ``http_status`` is known only for an error
    answer (the clients' ``APIStatusError.status_code``; 0 for a connection error).
    """
    if call is None:
        return
    call.outcome["latency_ms"] = max(0, round((time.perf_counter() - call.clock) * 1000))
    if exc is None:
        call.outcome["status"] = "ok"
        return
    call.outcome["status"] = "error"
    call.outcome["error_type"] = type(exc).__name__[:128]
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        call.outcome["http_status"] = status


def failed_call(
    call: Call | None,
    exc: BaseException,
    what: str,
    make: Callable[[Call, Scope], dict[str, Any] | None],
) -> None:
    """A provider call raised: count it, and record it as an event with zero usage.

    Only ``Exception``s: a cancellation or ``KeyboardInterrupt`` is the app
    stopping, not the provider failing. The event is never charged
    (docs/pricing.md#failed-calls); it makes error rates and latency per model
    queryable next to the usage (``status = 'error'`` in usage_events).
    """
    provider_error(call)
    if call is None or not isinstance(exc, Exception):
        return

    def record() -> None:
        timed(call, exc)
        call.meter.submit_built(call.scope, lambda scope: make(call, scope))

    guard(call, what, record)  # never in the way of the provider's exception


def begin(meter: Recorder | None, kwargs: dict[str, Any]) -> Call | None:
    """Pop our options and resolve the customer; None = do not meter this call."""
    options = {key: kwargs.pop(key) for key in OPTION_KEYS if key in kwargs}
    if options.get("meter_skip"):
        return None
    recorder = meter or default_meter()
    scope = recorder.scope(
        options.get("meter_customer"),
        options.get("meter_feature"),
        options.get("meter_user"),
        options.get("meter_metadata"),
    )
    if scope is None:
        return None
    return Call(recorder, scope, time.time(), kwargs)


def guard(call: Call | None, what: str, action: Callable[[], T]) -> T | None:
    """Run our own code; log and count a failure instead of raising it."""
    try:
        return action()
    except Exception:
        log.exception("meterline could not meter %s; the call itself succeeded", what)
        if call is not None:
            call.meter.count("metering_errors")
        return None


def provider_error(call: Call | None) -> None:
    if call is not None:
        call.meter.count("provider_errors")


def mark(func: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(func, original)
    setattr(func, WRAPPED, True)
    return func


def is_wrapped(func: Any) -> bool:
    return bool(getattr(func, WRAPPED, False))


def meter_copies(client: Any, rewrap: Callable[[Any], Any]) -> None:
    """Make ``client.with_options()`` / ``client.copy()`` return a metered client.

    Both build a NEW client object (openai and anthropic), whose resources were
    never patched: usage through a per-request timeout or retry override was
    silently unmetered. ``rewrap`` meters the copy with the same meter; if that
    fails, the caller still gets its working copy (unmetered, logged and counted
    by the wrapper's own guard).
    """
    original = getattr(client, "copy", None)
    if original is None or is_wrapped(original):
        return

    def copy(*args: Any, **kwargs: Any) -> Any:
        copied = original(*args, **kwargs)
        try:
            return rewrap(copied)
        except Exception:
            log.exception("meterline could not meter a with_options() copy; it runs unmetered")
            return copied

    client.copy = mark(copy, original)
    client.with_options = client.copy


class StreamWatcher:
    """Sees every item of a stream; ``finish`` runs once, however the stream ends.

    Subclasses fill ``see`` (per item, on the app's thread: keep it cheap) and
    ``event`` (at the end, on the sender thread). ``hide`` lets a wrapper drop
    an item the caller did not ask for (OpenAI's usage-only chunk).
    """

    def __init__(self, call: Call, what: str) -> None:
        self.call = call
        self.what = what
        self._finished = False

    def see(self, item: Any) -> None:
        raise NotImplementedError

    def hide(self, item: Any) -> bool:
        return False

    def event(self, scope: Scope) -> dict[str, Any] | None:
        raise NotImplementedError

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        _OPEN.discard(self)
        guard(
            self.call, self.what, lambda: self.call.meter.submit_built(self.call.scope, self.event)
        )

    def _open(self) -> None:
        """The stream is the caller's now: from here on, exit records it too."""
        _OPEN.add(self)
        _finish_at_exit_before(self.call.meter)

    def watch(self, items: Iterator[T]) -> Iterator[T]:
        self._open()
        return self._watch(items)

    def watch_async(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        self._open()
        return self._watch_async(items)

    def _watch(self, items: Iterator[T]) -> Iterator[T]:
        try:
            for item in items:
                guard(self.call, self.what, lambda item=item: self.see(item))  # type: ignore[misc]
                if not self.hide(item):
                    yield item
        finally:
            # Exhausted, cut off by an error, closed or garbage-collected: what
            # the provider produced so far is metered once.
            self.finish()

    async def _watch_async(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        try:
            async for item in items:
                guard(self.call, self.what, lambda item=item: self.see(item))  # type: ignore[misc]
                if not self.hide(item):
                    yield item
        finally:
            self.finish()


def attach(stream: Any, watcher: StreamWatcher, is_async: bool) -> Any:
    """Watch a provider ``Stream`` object (OpenAI, Anthropic) and return it, same object.

    Its inner ``_iterator`` is replaced by the watched one, and its ``close``
    records the usage first: ``s.close()`` and leaving ``with`` (whose
    ``__exit__`` calls ``close``) close only the HTTP response, never the
    iterator, so a stream cut off that way was recorded at garbage collection
    only (and not at all when the process exited first).
    """
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:
        return stream
    stream._iterator = watcher.watch_async(iterator) if is_async else watcher.watch(iterator)
    original = stream.close
    if is_async:

        async def close_async() -> None:
            watcher.finish()  # never raises (guarded); before the close that may
            await original()

        stream.close = close_async
    else:

        def close() -> None:
            watcher.finish()
            original()

        stream.close = close
    return stream


# Streams not finished yet: at interpreter exit each records what it saw (a
# stream abandoned in a loop that raised is otherwise recorded only when
# collected, and exit may come first).
_OPEN: weakref.WeakSet[StreamWatcher] = weakref.WeakSet()
_HOOKED: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _finish_at_exit_before(meter: Recorder) -> None:
    """Register the exit hook after ``meter``'s own: atexit runs hooks last-in first-out,
    so the open streams are recorded before that meter flushes and closes."""
    if meter in _HOOKED:
        return
    _HOOKED.add(meter)
    atexit.register(finish_open_streams)


def finish_open_streams() -> None:
    """Record every stream still open (idempotent: each stream is recorded once)."""
    for watcher in list(_OPEN):
        watcher.finish()


def text_of(content: Any) -> str:
    """The text inside a message ``content`` (string or list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def prompt_text(messages: Any) -> str:
    """Joined text of a request's messages, when they are a list we can read."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list | tuple):
        return ""
    texts = []
    for message in messages:
        if isinstance(message, Mapping):
            texts.append(text_of(message.get("content")))
    return "\n".join(t for t in texts if t)
