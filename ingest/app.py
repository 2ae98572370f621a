"""The gateway's ASGI application (Starlette): routes, middleware, error rendering.

``POST /v1/events`` (and its OpenMeter-compatible twin ``POST /api/v1/events``,
answering 204) answers 202 only after the log has durably acknowledged
every event of the request; a request is all-or-nothing: one invalid event
rejects the whole request with 400 and publishes nothing, so a client can
always retry the same request safely. The handlers live in one module each;
``Gateway`` (ingest/gateway.py) holds what they share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute

from core.health import PartProblem
from ingest.events import POST_EVENTS, POST_OPENMETER_EVENTS, post_events, post_openmeter_events
from ingest.gateway import Gateway
from ingest.openapi import openapi_document, route
from ingest.ops import HEALTHZ, METRICS, OPENAPI, READYZ
from ingest.problems import HTTPProblem
from ingest.requestlog import RequestContext, internal_error
from ingest.usage_api import POST_USAGE, post_usage
from ingest.webhook import OPTIONS_EVENTS, options_events
from schemas.problems import Problem

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("meterline.gateway")
Handler = Callable[[Gateway, Request], Awaitable[Response]]


def create_app(
    gateway: Gateway,
    *,
    mounts: Sequence[BaseRoute] = (),
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Starlette:
    """The write path's routes, the operational ones, and ``mounts`` (the read side's,
    given by the shell) behind one middleware stack and one error rendering."""

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(gateway, request)

        return endpoint

    async def events(request: Request) -> Response:
        if request.method == "OPTIONS":
            return await options_events(gateway, request)
        return await post_events(gateway, request)

    async def healthz(_: Request) -> Response:
        # Liveness: fails only once the watchdog gave up on a part, i.e. while
        # the process is on its way out (it exits by itself; see watchdog.py).
        failure = gateway.health.failure if gateway.health else None
        if failure is not None:
            return _not_ready([failure]).response()
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        problems = gateway.health.problems() if gateway.health else []
        if not await asyncio.to_thread(gateway.producer.ready):
            problems.append(PartProblem("log", "unreachable", "the log did not answer in time"))
        if problems:
            return _not_ready(problems).response()
        return PlainTextResponse("ready")

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for hook in on_shutdown:
            hook()

    app = Starlette(
        routes=[
            route("/v1/events", events, POST_EVENTS, OPTIONS_EVENTS),
            route("/api/usage", bind(post_usage), POST_USAGE),
            route("/api/v1/events", bind(post_openmeter_events), POST_OPENMETER_EVENTS),
            *mounts,
            route("/healthz", healthz, HEALTHZ),
            route("/readyz", readyz, READYZ),
            route("/metrics", prometheus, METRICS),
            route("/openapi.json", openapi, OPENAPI),
        ],
        middleware=[Middleware(RequestContext)],
        exception_handlers={
            HTTPProblem: _problem,
            HTTPException: _http_exception,
            Exception: _bug,
        },
        lifespan=lifespan,
    )
    # From what is mounted, once: an undocumented route fails here, at start-up.
    document = openapi_document(app.routes)
    return app


def _not_ready(problems: Sequence[PartProblem]) -> HTTPProblem:
    """One problem per part: ``field`` names the part, ``code`` says dead, stuck or unreachable."""
    return HTTPProblem(
        503,
        "not-ready",
        "; ".join(str(p) for p in problems),
        [Problem(p.kind, p.part, p.reason) for p in problems],
        title="Not ready",
    )


async def _problem(_: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPProblem):  # pragma: no cover - registered for HTTPProblem
        raise exc
    return exc.response()


async def _http_exception(_: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 as problem documents, like every other error."""
    if not isinstance(exc, HTTPException):  # pragma: no cover
        raise exc
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return HTTPProblem(exc.status_code, code, str(exc.detail), headers=exc.headers).response()


async def _bug(request: Request, exc: Exception) -> Response:
    # Only for an error outside RequestContext (which answers and logs the others
    # with their request id): Starlette re-raises after this, so the server logs it.
    log.error("unhandled error", exc_info=exc)
    response = internal_error().response()
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response
