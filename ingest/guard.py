"""What every HTTP route does before its own work: authenticate, rate-limit, read the body.

Shared by the write path (``Gateway``) and the read side (``query.Reader``), so a
key is checked and counted the same way whichever route it calls.
"""

from __future__ import annotations

from starlette.requests import Request

from ingest import metrics
from ingest.auth import ApiKey, Authenticator
from ingest.problems import HTTPProblem
from ingest.ratelimit import RateLimiter


class Guard:
    def __init__(self, auth: Authenticator, limiter: RateLimiter) -> None:
        self.auth = auth
        self.limiter = limiter

    def authorize(self, request: Request, scope: str) -> ApiKey:
        """The caller's key, or 401/403 (bad key or scope) / 429 (over its rate)."""
        headers = request.headers
        try:
            key = self.auth.authenticate(
                headers.get("authorization"), headers.get("x-api-key"), scope
            )
        except HTTPProblem as problem:
            metrics.REQUESTS_REJECTED.labels(problem.code).inc()
            raise
        request.state.tenant = key.tenant
        wait = self.limiter.retry_after(key)
        if wait is not None:
            metrics.REQUESTS_REJECTED.labels("rate_limited").inc()
            raise HTTPProblem(
                429,
                "rate-limited",
                "this API key is over its request rate; retry after Retry-After seconds",
                retry_after=wait,
            )
        return key


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as it passes ``max_bytes`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        metrics.REQUESTS_REJECTED.labels("body_too_large").inc()
        raise HTTPProblem(413, "body-too-large", f"body of {declared} bytes exceeds {max_bytes}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            metrics.REQUESTS_REJECTED.labels("body_too_large").inc()
            raise HTTPProblem(413, "body-too-large", f"body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
