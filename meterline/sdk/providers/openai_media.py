"""OpenAI images and audio transcription through the wrapper (openai.py patches them).

- ``images.generate``: an image event per call: ``images`` = the images returned,
  ``size`` / ``quality`` as the response reports them (gpt-image models) else as
  requested, ``model`` as requested (the response names none). Priced by the book's
  ``images`` rules (docs/pricing.md). ``stream=True`` (partial images) counts the
  ``image_generation.completed`` events.
- ``audio.transcriptions.create``: audio seconds (units event, unit ``audio_second``,
  to the millisecond) from, in this order: the response's ``duration``
  (``response_format="verbose_json"``), its ``usage.seconds`` (``{"type":
  "duration"}``), the uploaded file when it is a WAV (its header: frames / rate).
  Seconds, not minutes: $0.006 a minute is $0.0001 a second exactly, and a minute
  count of 7 s (0.11666...) is not. A response that reports token usage instead
  (gpt-4o-transcribe with ``json``) and no duration is metered as tokens, which the
  catalog prices. With none of these, the event says ``quantity 0`` and
  ``metadata.duration_unknown``, and a warning is logged: recorded, never guessed.

Everything here runs guarded (a failure of ours is logged and counted, never the
app's); the WAV header is read on the app's thread, while the file is still open.
"""

from __future__ import annotations

import io
import logging
import os
import wave
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from meterline.sdk import builders
from meterline.sdk.context import Scope
from meterline.sdk.normalize import field
from meterline.sdk.providers._common import Call, StreamWatcher
from meterline.sdk.providers.openai import PROVIDER, requested_model

log = logging.getLogger("meterline.emitter")
AUDIO_UNIT = "audio_second"
MILLISECOND = Decimal("0.001")
UNKNOWN_DURATION = "duration_unknown"


def _text(value: Any) -> str:
    # openai's ``omit`` / ``NOT_GIVEN`` sentinels and None are "not given".
    return value if isinstance(value, str) else ""


def _image(
    call: Call, scope: Scope, images: int, size: str, quality: str, created: Any
) -> dict[str, Any]:
    return builders.image_event(
        source=call.meter.source,
        customer=scope.customer,
        provider=PROVIDER,
        model=requested_model(call),
        images=images,
        size=size or _text(call.request.get("size")),
        quality=quality or _text(call.request.get("quality")),
        feature=scope.feature,
        user=scope.user,
        metadata=scope.metadata,
        time=created if isinstance(created, int | float) and created > 0 else call.started,
        outcome=call.outcome,
    )


def image_event(call: Call, response: Any) -> Callable[[Scope], dict[str, Any] | None]:
    def make(scope: Scope) -> dict[str, Any] | None:
        images = len(field(response, "data") or ())
        if images == 0:
            return None  # nothing generated, nothing billed by the provider
        return _image(
            call,
            scope,
            images,
            _text(field(response, "size")),
            _text(field(response, "quality")),
            field(response, "created"),
        )

    return make


class ImageStream(StreamWatcher):
    """Partial-image streams: one image per ``image_generation.completed`` event."""

    def __init__(self, call: Call) -> None:
        super().__init__(call, "an OpenAI image stream")
        self.images = 0
        self.size = self.quality = ""
        self.created: Any = None

    def see(self, event: Any) -> None:
        if getattr(event, "type", "") == "image_generation.completed":
            self.images += 1
            self.size = _text(getattr(event, "size", None)) or self.size
            self.quality = _text(getattr(event, "quality", None)) or self.quality
            self.created = getattr(event, "created_at", None) or self.created

    def event(self, scope: Scope) -> dict[str, Any] | None:
        if self.images == 0:
            return None
        return _image(self.call, scope, self.images, self.size, self.quality, self.created)


def image_stream(call: Call, kwargs: dict[str, Any]) -> StreamWatcher:
    return ImageStream(call)


# --- audio transcription -------------------------------------------------------------------


def seconds(value: Any) -> Decimal | None:
    """A provider's float seconds as exact text, to the millisecond (None if not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return Decimal(repr(value)).quantize(MILLISECOND)


def wav_seconds(file: Any) -> Decimal | None:
    """Duration of an uploaded WAV from its header (None for any other file).

    ``file`` is what openai accepts: bytes, a path, a binary file object, or a
    ``(name, content[, type])`` tuple. A file object is put back where it was.
    """
    content = file[1] if isinstance(file, tuple) and len(file) >= 2 else file
    try:
        if isinstance(content, bytes | bytearray | memoryview):
            return _frames(io.BytesIO(bytes(content)))
        if isinstance(content, str | os.PathLike):
            with open(content, "rb") as opened:
                return _frames(opened)
        if hasattr(content, "seek") and hasattr(content, "read"):
            where = content.tell()
            try:
                content.seek(0)
                return _frames(content)
            finally:
                content.seek(where)
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    return None


def _frames(stream: Any) -> Decimal | None:
    with wave.open(stream, "rb") as audio:
        rate = audio.getframerate()
        if rate <= 0:
            return None
        return (Decimal(audio.getnframes()) / Decimal(rate)).quantize(MILLISECOND)


def _response_seconds(response: Any) -> Decimal | None:
    duration = seconds(field(response, "duration"))
    if duration is not None:
        return duration
    usage = field(response, "usage")
    if field(usage, "type") == "duration":
        return seconds(field(usage, "seconds"))
    return None


def _audio(call: Call, scope: Scope, duration: Decimal | None, usage: Any) -> dict[str, Any] | None:
    if duration is None and field(usage, "type") == "tokens":
        details = field(usage, "input_token_details")
        audio = field(details, "audio_tokens")
        return builders.token_event(
            source=call.meter.source,
            customer=scope.customer,
            provider=PROVIDER,
            model=requested_model(call),
            tokens={
                "input_tokens": field(usage, "input_tokens") or 0,
                "output_tokens": field(usage, "output_tokens") or 0,
                "input_audio_tokens": audio if isinstance(audio, int) else 0,
            },
            feature=scope.feature,
            user=scope.user,
            metadata=scope.metadata,
            time=call.started,
            outcome=call.outcome,
        )
    metadata = dict(scope.metadata)
    if duration is None:
        log.warning(
            "meterline: the transcription's duration is unknown (no verbose_json duration, "
            "no usage, not a WAV file): recorded with quantity 0 and metadata.%s",
            UNKNOWN_DURATION,
        )
        metadata[UNKNOWN_DURATION] = "true"
    return builders.units_event(
        source=call.meter.source,
        customer=scope.customer,
        unit=AUDIO_UNIT,
        quantity=duration if duration is not None else 0,
        provider=PROVIDER,
        model=requested_model(call),
        feature=scope.feature,
        user=scope.user,
        metadata=metadata,
        time=call.started,
        outcome=call.outcome,
    )


def transcription_event(call: Call, response: Any) -> Callable[[Scope], dict[str, Any] | None]:
    # Here, on the app's thread: the file may be closed by the time the sender builds.
    duration = _response_seconds(response)
    if duration is None:
        duration = wav_seconds(call.request.get("file"))
    usage = field(response, "usage")

    def make(scope: Scope) -> dict[str, Any] | None:
        return _audio(call, scope, duration, usage)

    return make


class TranscriptionStream(StreamWatcher):
    """``stream=True`` (gpt-4o-transcribe): the usage of ``transcript.text.done``."""

    def __init__(self, call: Call, duration: Decimal | None) -> None:
        super().__init__(call, "an OpenAI transcription stream")
        self.duration = duration
        self.usage: Any = None
        self.done = False

    def see(self, event: Any) -> None:
        if getattr(event, "type", "") == "transcript.text.done":
            self.done = True
            self.usage = getattr(event, "usage", None)

    def event(self, scope: Scope) -> dict[str, Any] | None:
        return _audio(self.call, scope, self.duration, self.usage)


def transcription_stream(call: Call, kwargs: dict[str, Any]) -> StreamWatcher:
    # Before the call: the file is read from where it is now and put back.
    return TranscriptionStream(call, wav_seconds(kwargs.get("file")))
