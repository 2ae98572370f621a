"""Drop-in client classes for code written against cmdrdata's SDKs (OpenAI, Anthropic,
and Gemini through google-genai's ``Client``).

cmdrdata users construct ``TrackedOpenAI(...)`` and pass ``customer_id=``,
``custom_metadata=`` and ``track_usage=False`` on each call. On a ``wrap()``ed
client those keywords reach openai, which raises ``TypeError`` (unexpected
keyword argument): the call fails, not just its metering. These classes ARE the
provider's client classes (subclasses: same methods, types and exceptions),
metered at construction, and they translate the seed's per-call keywords into
meterline's own before the provider sees them:

    customer_id=        -> meter_customer=   (beats any ``customer(...)`` context)
    custom_metadata=    -> meter_metadata=   (values turned into text, trimmed to the limits)
    track_usage=False   -> meter_skip=True

``tracker_key`` / ``tracker_endpoint`` have no equivalent: meterline reads its
gateway from ``METERLINE_URL`` / ``METERLINE_API_KEY`` or the ``meter=`` you pass.
``with_options()`` / ``copy()`` return the same class, metered by the same meter.
The provider packages are imported here, so import this module only where they
are installed (``meterline.sdk`` itself does not import it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anthropic
import openai

from meterline.sdk._recorder import Recorder
from meterline.sdk.context import customer as customer_context
from meterline.sdk.providers.anthropic import wrap_anthropic
from meterline.sdk.providers.openai import wrap_openai

__all__ = [
    "AsyncTrackedAnthropic",
    "AsyncTrackedOpenAI",
    "TrackedAnthropic",
    "TrackedOpenAI",
    "customer_context",
]

SEED_KEYWORDS = {"customer_id": "meter_customer", "custom_metadata": "meter_metadata"}
METER_KEYWORD = "meter"


def translate(kwargs: dict[str, Any]) -> None:
    """Rewrite the seed's per-call keywords into meterline's, in place.

    All three are always removed: leaving one in would hand openai/anthropic an
    unknown keyword and fail the app's call, which is what this module exists to stop.
    """
    for seed, ours in SEED_KEYWORDS.items():
        if seed in kwargs:
            value = kwargs.pop(seed)
            if value is not None:
                kwargs.setdefault(ours, value)
    if "track_usage" in kwargs and not kwargs.pop("track_usage"):
        kwargs["meter_skip"] = True


def _translating(method: Callable[..., Any]) -> Callable[..., Any]:
    # Sync and async alike: the translation is done before the call, and the
    # wrapped method's own return value (a coroutine for async clients) is passed on.
    def call(*args: Any, **kwargs: Any) -> Any:
        translate(kwargs)
        return method(*args, **kwargs)

    call.__wrapped__ = method  # type: ignore[attr-defined]
    call.__doc__ = method.__doc__
    return call


def _accept_seed_keywords(resource: Any, *names: str) -> None:
    for name in names:
        setattr(resource, name, _translating(getattr(resource, name)))


def _extra(kwargs: dict[str, Any], meter: Recorder | None) -> dict[str, Any]:
    """``copy()`` keywords that hand this client's meter to the copy's constructor."""
    extra: Mapping[str, Any] = kwargs.pop("_extra_kwargs", None) or {}
    return {**extra, METER_KEYWORD: meter}


def _meter_openai(client: openai.OpenAI | openai.AsyncOpenAI, meter: Recorder | None) -> None:
    """Wrap an OpenAI client (sync or async) and let its metered calls take cmdrdata's keywords."""
    wrap_openai(client, meter)
    _accept_seed_keywords(client.chat.completions, "create")
    _accept_seed_keywords(client.responses, "create")
    _accept_seed_keywords(client.images, "generate")
    _accept_seed_keywords(client.audio.transcriptions, "create")


class TrackedOpenAI(openai.OpenAI):
    """``openai.OpenAI``, metered, accepting cmdrdata's per-call keywords."""

    def __init__(self, *args: Any, meter: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meterline_meter = meter
        _meter_openai(self, meter)

    def copy(self, *args: Any, **kwargs: Any) -> TrackedOpenAI:
        extra = _extra(kwargs, self._meterline_meter)
        copied: TrackedOpenAI = super().copy(*args, _extra_kwargs=extra, **kwargs)
        return copied

    with_options = copy


class AsyncTrackedOpenAI(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI``, metered, accepting cmdrdata's per-call keywords."""

    def __init__(self, *args: Any, meter: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meterline_meter = meter
        _meter_openai(self, meter)

    def copy(self, *args: Any, **kwargs: Any) -> AsyncTrackedOpenAI:
        extra = _extra(kwargs, self._meterline_meter)
        copied: AsyncTrackedOpenAI = super().copy(*args, _extra_kwargs=extra, **kwargs)
        return copied

    with_options = copy


class TrackedAnthropic(anthropic.Anthropic):
    """``anthropic.Anthropic``, metered, accepting cmdrdata's per-call keywords."""

    def __init__(self, *args: Any, meter: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meterline_meter = meter
        wrap_anthropic(self, meter)
        _accept_seed_keywords(self.messages, "create", "stream")

    def copy(self, *args: Any, **kwargs: Any) -> TrackedAnthropic:
        extra = _extra(kwargs, self._meterline_meter)
        copied: TrackedAnthropic = super().copy(*args, _extra_kwargs=extra, **kwargs)
        return copied

    with_options = copy


class AsyncTrackedAnthropic(anthropic.AsyncAnthropic):
    """``anthropic.AsyncAnthropic``, metered, accepting cmdrdata's per-call keywords."""

    def __init__(self, *args: Any, meter: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meterline_meter = meter
        wrap_anthropic(self, meter)
        _accept_seed_keywords(self.messages, "create", "stream")

    def copy(self, *args: Any, **kwargs: Any) -> AsyncTrackedAnthropic:
        extra = _extra(kwargs, self._meterline_meter)
        copied: AsyncTrackedAnthropic = super().copy(*args, _extra_kwargs=extra, **kwargs)
        return copied

    with_options = copy


def __getattr__(name: str) -> Any:
    # ``TrackedGemini`` is built on first use: importing this module for the
    # OpenAI or Anthropic drop-ins must not need google-genai installed.
    if name == "TrackedGemini":
        from meterline.sdk._compat_gemini import TrackedGemini

        return TrackedGemini
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
