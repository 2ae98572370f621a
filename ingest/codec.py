"""Request body -> list of JSON events, by Content-Type only (as the HTTP binding says).

- ``application/cloudevents+json``       structured mode: one event
- ``application/cloudevents-batch+json`` batch mode: a JSON array of events
- ``application/json``                   plain JSON: one event or an array
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.problems import HTTPProblem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PLAIN = "application/json"
ACCEPTED_TYPES = (STRUCTURED, BATCH, PLAIN)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(content_type: str | None, body: bytes) -> list[Any]:
    """Parse the body; raise ``HTTPProblem`` 415 or 400 with a precise reason."""
    kind = media_type(content_type)
    if kind not in ACCEPTED_TYPES:
        raise HTTPProblem(
            415,
            "unsupported-media-type",
            f"Content-Type {kind or '(none)'!r} is not accepted; use one of "
            + ", ".join(ACCEPTED_TYPES),
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, "malformed-json", f"body is not valid JSON: {exc}") from None
    if kind == BATCH:
        if not isinstance(parsed, list):
            raise HTTPProblem(400, "not-a-batch", f"{BATCH} needs a JSON array of events")
        return parsed
    if kind == STRUCTURED:
        if not isinstance(parsed, dict):
            raise HTTPProblem(400, "not-an-event", f"{STRUCTURED} needs one JSON object")
        return [parsed]
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, dict):
        return [parsed]
    raise HTTPProblem(400, "not-an-event", "application/json needs an event object or an array")
