"""``POST /v1/events``: CloudEvents in every HTTP content mode, 202 only once durable."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest import metrics
from ingest.codec import choose_mode, decode
from ingest.gateway import Gateway
from ingest.problems import HTTPProblem


async def post_events(gateway: Gateway, request: Request) -> Response:
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
    return JSONResponse({"accepted": len(accepted)}, status_code=202)
