"""Errors as ``application/problem+json`` (RFC 9457), with a machine-readable list."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from schemas.problems import Problem

PROBLEM_TYPE = "https://meterline.dev/problems/"
TITLES = {
    400: "Invalid events",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    501: "Not implemented",
    503: "Log unavailable",
}


class HTTPProblem(Exception):
    """Raised inside a handler to answer with a problem document.

    The body is RFC 9457 (``type``, ``title``, ``status``, ``detail``) plus
    ``problems``: one ``{index?, field, code, message}`` per thing wrong, where
    ``index`` is the event's position in a batch.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        problems: Sequence[Problem] = (),
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.title = title or TITLES.get(status, "Error")
        self.status = status
        self.code = code
        self.detail = detail
        self.problems = list(problems)
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.problems:
            body["problems"] = [p.as_dict() for p in self.problems]
        headers = dict(self.headers)
        if self.retry_after is not None:
            # Whole seconds, rounded up: a client that waits exactly this long must succeed.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return Response(
            orjson.dumps(body), self.status, headers, media_type="application/problem+json"
        )
