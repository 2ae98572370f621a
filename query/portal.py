"""``POST /v1/portal/tokens`` (mint) and ``POST /v1/portal/tokens/revoke``.

An API key with the ``read`` scope mints tokens for subjects of its own tenant
(a key that can read the whole tenant may hand out a slice of it; an
ingest-only key may not). Tokens are described in ``query/portal_tokens.py``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.guard import read_body
from ingest.openapi import Operation, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, TOO_LARGE, UNAVAILABLE, USAGE_INVALID
from query.portal_tokens import DEFAULT_TTL_S, MAX_TTL_S, valid_token_id
from query.reader import Reader
from schemas.problems import Problem
from schemas.times import format_ms

_MAX_BODY = 16_384
_M = TypeVar("_M", bound=BaseModel)
Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Label = Field(description="The one subject (customer) the token may read.")
    features: list[Label] | None = Field(
        None, min_length=1, max_length=100, description="Only these features (default: all)."
    )
    expires_in: int = Field(
        DEFAULT_TTL_S, ge=60, le=MAX_TTL_S, description="Lifetime in seconds (default 1 h)."
    )


class TokenMinted(BaseModel):
    model_config = ConfigDict(frozen=True)

    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    id: str = Field(description="The token's id, for POST /v1/portal/tokens/revoke.")
    subject: str
    features: list[str] | None
    expires_at: str = Field(description="UTC, RFC 3339.")


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _not_enabled() -> HTTPProblem:
    return HTTPProblem(
        404,
        "portal-tokens-not-enabled",
        "portal tokens are not enabled here: set METERLINE_PORTAL_TOKEN_SECRET",
    )


async def _body(request: Request, model: type[_M]) -> _M:
    raw = await read_body(request, _MAX_BODY)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = [
            Problem(e["type"], ".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        raise HTTPProblem(422, "invalid-body", "the request body is invalid", problems) from None


async def post_token(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    if reader.tokens is None:
        raise _not_enabled()
    ask = await _body(request, TokenRequest)
    expires_ms = time.time_ns() // 1_000_000 + ask.expires_in * 1000
    features = sorted(set(ask.features)) if ask.features is not None else None
    token, claims = reader.tokens.mint(key.tenant, ask.subject, features, expires_ms)
    minted = TokenMinted(
        token=token,
        id=claims.token_id,
        subject=claims.subject,
        features=features,
        expires_at=format_ms(datetime.fromtimestamp(expires_ms / 1000, UTC)),
    )
    return Response(orjson.dumps(minted.model_dump()), 201, media_type="application/json")


async def post_revoke(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    if reader.tokens is None or reader.revocations is None:
        raise _not_enabled()
    ask = await _body(request, RevokeRequest)
    assert valid_token_id(ask.id)
    try:
        await asyncio.to_thread(reader.revocations.revoke, key.tenant, ask.id, key.key_hash)
    except StoreError as exc:
        raise HTTPProblem(
            503, "store-unavailable", f"the revocation was not stored: {exc}", retry_after=1
        ) from exc
    return Response(status_code=204)


POST_TOKEN = Operation(
    "POST",
    "Mint a customer-scoped read token (one subject, optionally some features)",
    description="API key with the read scope. The token reads GET /v1/usage for its subject "
    "only, until it expires (max 24 h) or is revoked. See docs/query.md.",
    security=API_KEY,
    body={"application/json": TokenRequest},
    responses={
        201: Reply("The token.", {"application/json": TokenMinted}),
        404: NOT_FOUND,
        413: TOO_LARGE,
        422: USAGE_INVALID,
        **GUARDED,
    },
)
POST_REVOKE = Operation(
    "POST",
    "Revoke a portal token by id (every gateway refuses it within 2 s)",
    security=API_KEY,
    body={"application/json": RevokeRequest},
    responses={
        204: Reply("Revoked."),
        404: NOT_FOUND,
        413: TOO_LARGE,
        422: USAGE_INVALID,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
