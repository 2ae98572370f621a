"""Errors as ``application/problem+json`` (RFC 9457), with a machine-readable list."""

from __future__ import annotations

from collections.abc import Sequence
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
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Too many requests",
    503: "Log unavailable",
}


class HTTPProblem(Exception):
    """Raised inside a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        problems: Sequence[Problem] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problems = list(problems)
        self.retry_after = retry_after

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.problems:
            body["problems"] = [p.as_dict() for p in self.problems]
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return Response(
            orjson.dumps(body), self.status, headers, media_type="application/problem+json"
        )
