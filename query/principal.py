"""Who is reading: a tenant's API key (the whole tenant) or a portal token (one subject).

Read routes call ``read_principal`` instead of ``Guard.authorize`` so that every
one of them (usage now; budgets, entitlements and the dashboard later) accepts
both credentials and applies a token's restriction the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from core.errors import StoreError
from ingest import metrics
from ingest.auth import CHALLENGE, ApiKey
from ingest.problems import HTTPProblem
from query.portal_tokens import PREFIX, Claims, TokenRefused
from query.reader import Reader

if TYPE_CHECKING:
    from query.meters import MeterQuery


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key: ApiKey  # for the rate limit (a token is limited as its own principal)
    token: Claims | None = None  # set: restricted to token.subject (and token.features)

    def restrict(self, query: MeterQuery) -> MeterQuery:
        """``query`` limited to the token's subject and features; 403 if it asks for others.

        403 and not an empty answer: an empty answer to ``subject=other`` would
        still let a token holder tell apart subjects that exist from those that do not.
        """
        if self.token is None:
            return query
        filters = dict(query.filters)
        asked = filters.get("subject")
        if asked is not None and set(asked) != {self.token.subject}:
            raise HTTPProblem(
                403, "forbidden-subject", "this token reads only its own subject's usage"
            )
        filters["subject"] = (self.token.subject,)
        if self.token.features is not None:
            allowed = self.token.features
            asked_features = filters.get("feature")
            if asked_features is not None and not set(asked_features) <= set(allowed):
                raise HTTPProblem(
                    403, "forbidden-feature", "this token reads only the features it names"
                )
            filters["feature"] = asked_features or allowed
        return dataclasses.replace(query, filters=filters)


def _bearer(request_authorization: str | None) -> str | None:
    if request_authorization is None:
        return None
    scheme, _, token = request_authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(PREFIX):
        return token
    return None


async def read_principal(reader: Reader, request: Request) -> Principal:
    """The caller of a read route: a portal token (Bearer mlp_...) or an API key (scope read)."""
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        key = reader.guard.authorize(request, "read")
        return Principal(key.tenant, key)
    if reader.tokens is None:
        raise HTTPProblem(
            401, "invalid-token", "portal tokens are not enabled here", headers=CHALLENGE
        )
    try:
        claims = reader.tokens.verify(token, time.time_ns() // 1_000_000)
        if reader.revocations is not None and await asyncio.to_thread(
            reader.revocations.is_revoked, claims.tenant, claims.token_id
        ):
            raise TokenRefused("token-revoked", "the token has been revoked")
    except TokenRefused as refused:
        metrics.REQUESTS_REJECTED.labels(refused.code).inc()
        raise HTTPProblem(401, refused.code, refused.detail, headers=CHALLENGE) from None
    except StoreError as exc:
        # Fail closed: a token that cannot be checked against the revocations is not used.
        raise HTTPProblem(
            503, "store-unavailable", f"cannot check token revocations: {exc}", retry_after=1
        ) from exc
    key = ApiKey(f"portal:{claims.token_id}", claims.tenant)
    request.state.tenant = claims.tenant
    wait = reader.guard.limiter.retry_after(key)
    if wait is not None:
        metrics.REQUESTS_REJECTED.labels("rate_limited").inc()
        raise HTTPProblem(
            429, "rate-limited", "this token is over its request rate", retry_after=wait
        )
    return Principal(claims.tenant, key, claims)
