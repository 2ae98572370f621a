"""The CloudEvents HTTP webhook abuse-protection handshake (http-webhook.md §4).

A sender (Azure Event Grid, Knative, ...) asks ``OPTIONS`` with
``WebHook-Request-Origin`` before it delivers, so that it cannot be turned into
a flood against a URL that never asked for events. We grant by answering
``WebHook-Allowed-Origin`` and ``WebHook-Allowed-Rate`` (requests per minute,
``*`` = unlimited), synchronously. ``WebHook-Request-Callback`` (asynchronous
grant) is deliberately not followed: fetching a URL named by an unauthenticated
request would let anyone make the gateway call arbitrary hosts (SSRF).

Granting costs nothing: every delivery still needs an API key.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from ingest.gateway import Gateway
from ingest.openapi import Header, Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import problem

ALLOW = "POST, OPTIONS"


async def options_events(gateway: Gateway, request: Request) -> Response:
    origin = request.headers.get("webhook-request-origin")
    if origin is None:
        return Response(status_code=204, headers={"Allow": ALLOW})
    origin = origin.strip()
    if "*" not in gateway.webhook_origins and origin not in gateway.webhook_origins:
        raise HTTPProblem(
            403,
            "origin-not-allowed",
            f"WebHook-Request-Origin {origin[:200]!r} is not allowed to deliver here",
            headers={"Allow": ALLOW},
        )
    return Response(
        status_code=204,
        headers={
            "Allow": ALLOW,
            "WebHook-Allowed-Origin": origin,
            "WebHook-Allowed-Rate": _allowed_rate(gateway, request),
        },
    )


def _allowed_rate(gateway: Gateway, request: Request) -> str:
    """The key's limit when the handshake carries one, else the default; per minute."""
    key = gateway.guard.auth.open
    if gateway.guard.auth.keys is not None:
        authorization = request.headers.get("authorization", "")
        presented = authorization.partition(" ")[2].strip() or request.headers.get("x-api-key")
        found = gateway.guard.auth.keys.lookup(presented) if presented else None
        key = found or key
    limits = gateway.guard.limiter.limits(key)
    if limits is None:
        return "*"
    return str(max(1, math.floor(limits[0] * 60)))


OPTIONS_EVENTS = Operation(
    "OPTIONS",
    "CloudEvents webhook abuse-protection handshake",
    parameters=(
        Param("WebHook-Request-Origin", "header"),
        Param("WebHook-Request-Rate", "header"),
        Param(
            "WebHook-Request-Callback",
            "header",
            description="Not followed (the grant is synchronous).",
        ),
    ),
    responses={
        204: Reply(
            "Allowed. Without WebHook-Request-Origin, only Allow.",
            headers=(
                Header("Allow"),
                Header("WebHook-Allowed-Origin"),
                Header(
                    "WebHook-Allowed-Rate",
                    Annotated[str, Field(pattern=r"^(\*|[1-9]\d*)$")],
                    "Requests per minute, or * for no limit.",
                ),
            ),
        ),
        403: problem("OriginNotAllowed", "This origin may not deliver here."),
    },
)
