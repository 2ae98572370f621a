"""The gateway's ASGI application (Starlette).

``POST /v1/events`` answers 202 only after the log has durably acknowledged
every event of the request; a request is all-or-nothing: one invalid event
rejects the whole request with 400 and publishes nothing, so a client can
always retry the same request safely.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ingest import metrics
from ingest.codec import decode_body
from ingest.problems import HTTPProblem
from meterline.errors import LogUnavailable, StoreError
from meterline.log.base import (
    CONTENT_TYPE_HEADER,
    INGESTED_AT_HEADER,
    STRUCTURED_CONTENT_TYPE,
    TENANT_HEADER,
    LogProducer,
    OutMessage,
)
from schemas.envelope import ValidEvent, parse_event
from schemas.problems import Problem
from sinks.base import Sink

log = logging.getLogger(__name__)

SQL_FORMATS = {
    "JSONCompact",
    "JSONEachRow",
    "CSVWithNames",
    "TSVWithNames",
    "PrettyCompact",
    "JSON",
}


class Gateway:
    """State shared by the handlers, built once and passed in."""

    def __init__(
        self,
        producer: LogProducer,
        *,
        tenant: str,
        max_body_bytes: int,
        max_event_bytes: int,
        max_batch_events: int,
        sink: Sink | None = None,
        sql_token: str | None = None,
    ) -> None:
        self.producer = producer
        self.tenant = tenant
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_batch_events = max_batch_events
        self.sink = sink
        self.sql_token = sql_token

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise HTTPProblem(
                413, "body-too-large", f"body of {declared} bytes exceeds {self.max_body_bytes}"
            )
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HTTPProblem(
                    413, "body-too-large", f"body exceeds {self.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def validate(self, items: Sequence[Any]) -> list[tuple[ValidEvent, bytes]]:
        if len(items) > self.max_batch_events:
            raise HTTPProblem(
                413,
                "batch-too-large",
                f"{len(items)} events in one request; the limit is {self.max_batch_events}",
            )
        accepted: list[tuple[ValidEvent, bytes]] = []
        problems: list[Problem] = []
        too_big: list[Problem] = []
        single = len(items) == 1
        for index, item in enumerate(items):
            at = None if single else index
            parsed = parse_event(item)
            if isinstance(parsed, list):
                problems.extend(p.at(at) for p in parsed)
                continue
            value = orjson.dumps(item)
            if len(value) > self.max_event_bytes:
                too_big.append(
                    Problem(
                        "event_too_large",
                        "event",
                        f"{len(value)} bytes; the limit is {self.max_event_bytes}",
                        at,
                    )
                )
                continue
            accepted.append((parsed, value))
        if too_big and not problems:
            metrics.EVENTS_REJECTED.labels("too_large").inc(len(items))
            raise HTTPProblem(413, "event-too-large", "an event exceeds the size limit", too_big)
        if problems or too_big:
            metrics.EVENTS_REJECTED.labels("invalid").inc(len(items))
            raise HTTPProblem(
                400,
                "invalid-events",
                f"{len({p.index for p in problems + too_big})} of {len(items)} events are "
                "invalid; nothing was accepted",
                problems + too_big,
            )
        return accepted

    async def events(self, request: Request) -> Response:
        body = await self.read_body(request)
        items = decode_body(request.headers.get("content-type"), body)
        accepted = self.validate(items)
        now_ms = str(int(time.time() * 1000)).encode()
        tenant = self.tenant.encode()
        messages = [
            OutMessage(
                event.envelope.id.encode("utf-8"),
                value,
                (
                    (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE),
                    (TENANT_HEADER, tenant),
                    (INGESTED_AT_HEADER, now_ms),
                ),
            )
            for event, value in accepted
        ]
        began = time.perf_counter()
        try:
            await self.producer.publish(messages)
        except LogUnavailable as exc:
            metrics.EVENTS_REJECTED.labels("log_unavailable").inc(len(messages))
            raise HTTPProblem(
                503,
                "log-unavailable",
                f"{exc}; nothing is acknowledged, retry the same request",
                retry_after=exc.retry_after,
            ) from exc
        metrics.PRODUCE_SECONDS.observe(time.perf_counter() - began)
        metrics.EVENTS_ACCEPTED.inc(len(messages))
        return JSONResponse({"accepted": len(messages)}, status_code=202)

    async def sql(self, request: Request) -> Response:
        """Run SQL on this process's store (the only way into a running chDB folder)."""
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self.sink is None or not self.sql_token:
            raise HTTPProblem(404, "not-found", "the SQL endpoint is not enabled here")
        if not hmac.compare_digest(supplied.encode(), self.sql_token.encode()):
            raise HTTPProblem(401, "unauthorized", "a valid admin token is required")
        fmt = request.query_params.get("format", "JSONCompact")
        if fmt not in SQL_FORMATS:
            raise HTTPProblem(400, "bad-format", f"format must be one of {sorted(SQL_FORMATS)}")
        query = (await self.read_body(request)).decode("utf-8", "replace")
        try:
            out = await asyncio.to_thread(self.sink.query_raw, query, fmt)
        except StoreError as exc:
            raise HTTPProblem(400, "sql-error", str(exc)) from exc
        return Response(out, 200, media_type="text/plain; charset=utf-8")


def create_app(gateway: Gateway, on_shutdown: Sequence[Any] = ()) -> Starlette:
    async def events(request: Request) -> Response:
        return await _guarded(request, gateway.events)

    async def sql(request: Request) -> Response:
        return await _guarded(request, gateway.sql)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ready = await asyncio.to_thread(gateway.producer.ready)
        return PlainTextResponse("ready" if ready else "log unreachable", 200 if ready else 503)

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for hook in on_shutdown:
            hook()

    return Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/v1/sql", sql, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _guarded(request: Request, handler: Any) -> Response:
    metrics.IN_FLIGHT.inc()
    try:
        response: Response = await handler(request)
    except HTTPProblem as problem:
        response = problem.response()
    finally:
        metrics.IN_FLIGHT.dec()
    metrics.REQUESTS.labels(str(response.status_code)).inc()
    return response
