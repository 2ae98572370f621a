"""``POST /v1/events``: CloudEvents in every HTTP content mode, 202 only once durable.

``POST /api/v1/events`` is the same handler under OpenMeter's ingest path and
status (204), so an app using an OpenMeter SDK switches by changing its URL.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest import metrics
from ingest.codec import choose_mode, decode
from ingest.gateway import Gateway
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import (
    API_KEY,
    GUARDED,
    INVALID,
    TOO_LARGE,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
)
from schemas.envelope import CloudEvent


class Accepted(BaseModel):
    """The body of a 202."""

    model_config = ConfigDict(frozen=True)

    accepted: int = Field(ge=0, description="Events durably in the log.")


async def post_events(gateway: Gateway, request: Request) -> Response:
    accepted = await _ingest(gateway, request)
    return JSONResponse(Accepted(accepted=accepted).model_dump(), status_code=202)


async def post_openmeter_events(gateway: Gateway, request: Request) -> Response:
    """OpenMeter's ``ingestEvents``: the same checks and durability, answered 204.

    OpenMeter's generated clients treat every status but 204 as an error, so a
    202 here would make them raise (and retry) on success.
    """
    await _ingest(gateway, request)
    return Response(status_code=204)


async def _ingest(gateway: Gateway, request: Request) -> int:
    """Steps 1-4 of ingest/gateway.py for one request; the number of events now durable."""
    key = gateway.authorize(request, "ingest")
    content_type = request.headers.get("content-type")
    raw_headers = request.headers.raw
    try:
        mode = choose_mode(content_type, raw_headers)
    except HTTPProblem:
        metrics.REQUESTS_REJECTED.labels("unsupported_media_type").inc()
        raise
    body = await gateway.read_body(request)
    try:
        decoded = decode(mode, content_type, raw_headers, body)
    except HTTPProblem:
        metrics.REQUESTS_REJECTED.labels("malformed").inc()
        raise
    accepted = gateway.validate(decoded.items, decoded.batch)
    request.state.events = len(accepted)
    if accepted:
        await gateway.publish(gateway.messages(accepted, key.tenant))
    return len(accepted)


_CE_HEADERS = tuple(
    Param(
        name,
        "header",
        description=f"Binary mode: the `{name[3:]}` attribute (percent-encoded, RFC 7230 "
        "quoting accepted). `ce-specversion` selects binary mode for any Content-Type other "
        "than the CloudEvents JSON formats.",
    )
    for name in ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time")
)

POST_EVENTS = Operation(
    "POST",
    "Send events (structured, batch, binary or plain JSON)",
    description="202 only after the log acknowledged every event. A request is "
    "all-or-nothing: one invalid event rejects it and nothing is logged. Binary mode "
    "(`ce-specversion` with any media type, e.g. application/octet-stream): the body is "
    "the event's data and the `ce-*` headers are its attributes. Usage types "
    "(io.meterline.usage.*) also need `subject` and a `data` object: their JSON Schemas "
    "are published in schemas/json/.",
    security=API_KEY,
    parameters=_CE_HEADERS,
    body={
        "application/cloudevents+json": CloudEvent,
        "application/cloudevents-batch+json": list[CloudEvent],
        "application/json": CloudEvent | list[CloudEvent],
        "application/octet-stream": bytes,
    },
    responses={
        202: Reply("Every event is durably in the log.", {"application/json": Accepted}),
        400: INVALID,
        413: TOO_LARGE,
        415: UNSUPPORTED_MEDIA_TYPE,
        503: UNAVAILABLE,
        **GUARDED,
    },
)

POST_OPENMETER_EVENTS = Operation(
    "POST",
    "Send events, OpenMeter's ingest API (ingestEvents)",
    description="OpenMeter-compatible: the same request, checks, authentication and "
    "durability as POST /v1/events, answered 204 (no body) as OpenMeter's API does, so an "
    "OpenMeter SDK or example works by changing its base URL. Event types OpenMeter users "
    "send (e.g. `openai` from the OpenMeter OpenAI example) are metered as usage through "
    "event mappings (docs/gateway.md#event-mappings).",
    security=API_KEY,
    body={
        "application/cloudevents+json": CloudEvent,
        "application/cloudevents-batch+json": list[CloudEvent],
        "application/json": CloudEvent | list[CloudEvent],
    },
    responses={
        204: Reply("Every event is durably in the log."),
        400: INVALID,
        413: TOO_LARGE,
        415: UNSUPPORTED_MEDIA_TYPE,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
