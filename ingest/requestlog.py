"""Request ids, structured JSON logs and per-request metrics (an ASGI middleware).

Every response carries ``X-Request-ID``: the caller's own when it is a sane
token (so ids follow a request across services), else a new one. Every log line
written while a request is handled carries that id, so one grep finds all of a
request's lines. The access line is INFO (off by default; at 5k requests/s a
line per request would cost more than the request); 5xx answers are always
logged as warnings. An unhandled error is answered here, as a 500 problem
document carrying the id, and its traceback is logged with the id.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest import metrics
from ingest.problems import HTTPProblem

log = logging.getLogger("meterline.gateway")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "meterline_request_id", default=None
)
# Routes as metric labels: a fixed set, so random paths cannot explode the series.
ROUTES = frozenset(
    {"/v1/events", "/v1/sql", "/api/usage", "/healthz", "/readyz", "/metrics", "/openapi.json"}
)
_STANDARD = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in out:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(fmt: str) -> None:
    """Put the JSON formatter on the root handlers (adding a stderr one if none)."""
    if fmt != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())


class RequestContext:
    """Assigns the request id, counts requests and in-flight ones, logs the outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        began = time.perf_counter()

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:
                raise  # half a response is out: only the server can cut the connection
            # Rendered here, not by Starlette's ServerErrorMiddleware (it sits outside
            # this middleware): that 500 went out without X-Request-ID and its
            # traceback was logged without the id, so a caller's report could not be
            # matched to its traceback. Not re-raised: it would be logged twice.
            log.error("unhandled error", exc_info=True)
            await internal_error().response()(scope, receive, send_with_id)
        finally:
            metrics.IN_FLIGHT.dec()
            path = scope.get("path", "")
            metrics.REQUESTS.labels(path if path in ROUTES else "other", str(status)).inc()
            level = logging.WARNING if status >= 500 else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "ms": round((time.perf_counter() - began) * 1000, 3),
                        "tenant": state.get("tenant"),
                        "events": state.get("events"),
                    },
                )
            REQUEST_ID.reset(token)


def internal_error() -> HTTPProblem:
    """The answer to a bug: a problem document, 500. Retrying is safe: a request
    publishes all of its events or none (ingest/app.py)."""
    return HTTPProblem(
        500, "internal-error", "the request failed unexpectedly; retrying it is safe"
    )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if _SANE_ID.match(value):
                return str(value.decode("ascii"))
            break  # not echoed: a forged id could inject into logs
    return uuid.uuid4().hex
