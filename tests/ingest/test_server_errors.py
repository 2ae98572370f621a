"""Every 5xx is a problem document carrying ``X-Request-ID`` (issue 11).

Before, an unhandled error was rendered by Starlette's ServerErrorMiddleware,
outside the middleware that adds the id: the caller got a 500 without it and
the logged traceback had no id to match it with.
"""

from __future__ import annotations

import logging
import re

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from core.log.embedded import EmbeddedProducer
from ingest.app import Gateway, create_app
from ingest.openapi import Operation, Reply, route
from ingest.problems import HTTPProblem
from ingest.requestlog import JsonFormatter
from tests.ingest.conftest import GATEWAY_DEFAULTS


async def boom(_: Request) -> Response:
    raise RuntimeError("a bug in a handler")


async def upstream_down(_: Request) -> Response:
    raise HTTPProblem(503, "log-unavailable", "the log did not answer", retry_after=2)


def client(producer: EmbeddedProducer) -> httpx.AsyncClient:
    app = create_app(
        Gateway(producer, **GATEWAY_DEFAULTS),
        # Documented like every mounted route (an undocumented one stops the app).
        mounts=[
            route("/boom", boom, Operation("GET", "A bug", {500: Reply("The bug.")})),
            route("/down", upstream_down, Operation("GET", "Down", {503: Reply("Down.")})),
        ],
    )
    # raise_app_exceptions=False: a re-raised error must not hide what the caller got.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gw")


class JsonLines(logging.Handler):
    """The gateway's log lines as the JSON formatter writes them, at the time of the call."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.mark.anyio
async def test_unhandled_error_is_a_500_problem_with_the_callers_request_id(
    producer: EmbeddedProducer,
) -> None:
    logs = JsonLines()
    logger = logging.getLogger("meterline.gateway")
    logger.addHandler(logs)
    try:
        async with client(producer) as gw:
            response = await gw.get("/boom", headers={"x-request-id": "req-42"})
    finally:
        logger.removeHandler(logs)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"
    assert response.json() == {
        "type": "https://meterline.dev/problems/internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "the request failed unexpectedly; retrying it is safe",
    }
    # One traceback, logged once, and the caller's id finds it.
    [traceback] = [line for line in logs.lines if line["msg"] == "unhandled error"]
    assert traceback["request_id"] == "req-42"
    assert "RuntimeError: a bug in a handler" in str(traceback["exc"])


@pytest.mark.anyio
async def test_unhandled_error_gets_a_fresh_request_id_when_the_caller_sent_none(
    producer: EmbeddedProducer,
) -> None:
    async with client(producer) as gw:
        response = await gw.get("/boom")
    assert response.status_code == 500
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.mark.anyio
async def test_a_503_problem_carries_the_request_id_and_retry_after(
    producer: EmbeddedProducer,
) -> None:
    async with client(producer) as gw:
        response = await gw.get("/down", headers={"x-request-id": "req-7"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-7"
    assert response.headers["retry-after"] == "2"
