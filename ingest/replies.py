"""What several routes answer alike, declared once for their OpenAPI operations.

The problem replies are named: they become ``#/components/responses/<name>`` and
every operation refers to them. Each handler module lists which of them it can
answer; the statuses themselves are raised where the work is (``Guard.authorize``:
401, 403, 429; ``read_body``: 413; ``Gateway.publish``: 503).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ingest.openapi import Header, Reply, SecurityScheme
from schemas.problems import ProblemDocument

PROBLEM = "application/problem+json"
TEXT = {"text/plain": str}

BEARER = SecurityScheme(
    "bearer", {"type": "http", "scheme": "bearer", "description": "An API key."}
)
API_KEY_HEADER = SecurityScheme("apiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
API_KEY = (BEARER, API_KEY_HEADER)

RETRY_AFTER = Header(
    "Retry-After", Annotated[str, Field(pattern=r"^\d+$")], "Seconds to wait before retrying."
)
WWW_AUTHENTICATE = Header("WWW-Authenticate")


def problem(name: str, description: str, *headers: Header) -> Reply:
    return Reply(description, {PROBLEM: ProblemDocument}, headers, name)


INVALID = problem(
    "Invalid",
    "Invalid request: malformed JSON, or events that fail validation. Nothing was "
    "accepted; `problems` lists every problem with the event's batch `index`.",
)
UNAUTHORIZED = problem(
    "Unauthorized",
    "Missing or invalid API key (`Authorization: Bearer <key>` or `X-API-Key`).",
    WWW_AUTHENTICATE,
)
FORBIDDEN = problem("Forbidden", "The API key lacks the scope this operation needs.")
NOT_FOUND = problem("NotFound", "Not enabled on this process (no store attached).")
TOO_LARGE = problem(
    "TooLarge", "Body, number of events or one event over its limit. Nothing was accepted."
)
UNSUPPORTED_MEDIA_TYPE = problem("UnsupportedMediaType", "Content-Type not accepted.")
USAGE_INVALID = problem(
    "UsageInvalid", "The usage record or query is invalid; `problems` names each field."
)
RATE_LIMITED = problem(
    "RateLimited", "Over the API key's request rate; retry after Retry-After.", RETRY_AFTER
)
NOT_SERVED = problem("NotServed", "This process has no price book attached.")
UNAVAILABLE = problem(
    "Unavailable",
    "The log (or store) did not acknowledge in time. Nothing is acknowledged: retry the "
    "same request after Retry-After (duplicates are dropped downstream).",
    RETRY_AFTER,
)
NOT_READY = problem(
    "NotReady",
    "Not ready: one entry in `problems` per part (`field`: the part, e.g. `processor-0`, "
    "`embedded-log-writer[meterline.usage]`, `log`; `code`: `dead`, `stuck` or "
    "`unreachable`; `message`: why). Dead and stuck parts make the process exit.",
)

# What ``Guard.authorize`` answers on every route that takes an API key.
GUARDED = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED}
