"""Request -> list of JSON events, by Content-Type, as the HTTP binding says.

- ``application/cloudevents+json``       structured mode: one event (``ce-*`` headers ignored)
- ``application/cloudevents-batch+json`` batch mode: a JSON array of events
- any other type with ``ce-specversion``  binary mode: attributes in headers, body = data
- ``application/json``                   plain JSON: one event or an array (meterline's own)
- anything else                           415

``application/json`` with ``ce-specversion`` is binary mode, as the binding and
its conformance feature (``http-protocol-binding.feature``) require; without
that header no binary event could be meant (``specversion`` is mandatory), so
the body is read as plain JSON events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ingest.binary import SPECVERSION_HEADER, binary_event
from ingest.problems import HTTPProblem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PLAIN = "application/json"
ACCEPTED_TYPES = (STRUCTURED, BATCH, PLAIN)
_CLOUDEVENTS_FORMATS = "application/cloudevents"
_SPECVERSION = SPECVERSION_HEADER.encode()

Mode = Literal["structured", "batch", "binary", "json"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """The events of one request. ``batch``: problems name each event's index."""

    items: list[Any]
    batch: bool
    mode: Mode


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def choose_mode(content_type: str | None, headers: Sequence[tuple[bytes, bytes]]) -> Mode:
    """The content mode, from the headers alone (so a 415 costs no body read)."""
    kind = media_type(content_type)
    if kind == STRUCTURED:
        return "structured"
    if kind == BATCH:
        return "batch"
    if kind.startswith(_CLOUDEVENTS_FORMATS):
        # Structured mode in an event format we do not speak (XML, Avro, ...).
        raise _unsupported(kind)
    if any(name.lower() == _SPECVERSION for name, _ in headers):
        return "binary"
    if kind == PLAIN:
        return "json"
    raise _unsupported(kind)


def decode(
    mode: Mode, content_type: str | None, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> Decoded:
    """Parse the body of a request in ``mode``; raise ``HTTPProblem`` 400 with the reason."""
    if mode == "binary":
        event = binary_event(headers, content_type, body)
        if isinstance(event, list):
            raise HTTPProblem(
                400, "invalid-binary-event", "the ce- headers or the body are invalid", event
            )
        return Decoded([event], False, "binary")
    parsed = _json(body)
    if mode == "structured":
        if not isinstance(parsed, dict):
            raise HTTPProblem(400, "not-an-event", f"{STRUCTURED} needs one JSON object")
        return Decoded([parsed], False, mode)
    if mode == "batch":
        if not isinstance(parsed, list):
            raise HTTPProblem(400, "not-a-batch", f"{BATCH} needs a JSON array of events")
        return Decoded(parsed, True, mode)
    if isinstance(parsed, list):
        return Decoded(parsed, True, mode)
    if isinstance(parsed, dict):
        return Decoded([parsed], False, mode)
    raise HTTPProblem(400, "not-an-event", "application/json needs an event object or an array")


def decode_request(
    content_type: str | None, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> Decoded:
    """``choose_mode`` then ``decode``."""
    return decode(choose_mode(content_type, headers), content_type, headers, body)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, "malformed-json", f"body is not valid JSON: {exc}") from None


def _unsupported(kind: str) -> HTTPProblem:
    return HTTPProblem(
        415,
        "unsupported-media-type",
        f"Content-Type {kind or '(none)'!r} is not accepted; use one of "
        + ", ".join(ACCEPTED_TYPES)
        + ", or binary mode (any media type with ce-specversion and the other ce- headers)",
    )
