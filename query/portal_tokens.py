"""Customer-scoped read tokens: stateless, signed, short-lived, revocable.

An API key (tenant-wide) mints a token for ONE subject of its tenant, optionally
a set of features, so a customer-facing page can read that customer's usage and
nothing else. The token carries its own claims::

    mlp_<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "mlp1." + claims part))>

claims: ``v`` (1), ``tid`` (token id, 128 random bits), ``ten`` (tenant), ``sub``
(subject), ``fea`` (features, or null for all), ``exp`` (expiry, epoch ms).

Why stateless: every gateway process verifies a token with the shared secret and
no store round trip; the only shared state is the (small) revocation list
(``Revocations``), read through the store and cached for ``REVOCATION_CACHE_S``.

Key rotation: set ``METERLINE_PORTAL_TOKEN_PREVIOUS_SECRET`` to the old secret
and ``METERLINE_PORTAL_TOKEN_SECRET`` to the new one on every gateway; new tokens
are signed with the new one, both verify. After ``MAX_TTL_S`` every token signed
with the old secret has expired: remove it. A leaked secret: replace it without
keeping it as the previous one, which invalidates every token at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from core.errors import MeterlineError
from sinks.base import quote
from sinks.reader import SqlReader

PREFIX = "mlp_"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 24 * 3600
# How long a revocation may take to reach every other gateway process (the one
# that revoked sees it at once). Each process re-reads the list at most this often.
REVOCATION_CACHE_S = 2.0
_DOMAIN = b"mlp1."  # signed with the claims: a signature of another format never verifies
_TOKEN_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class TokenRefused(MeterlineError):
    """Not a usable token: ``code`` is the reason (invalid, expired, revoked)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Claims:
    token_id: str
    tenant: str
    subject: str
    features: tuple[str, ...] | None  # None: every feature of the subject
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Mints and verifies tokens with the current secret (and the previous one, rotating)."""

    def __init__(self, secret: str, previous: str | None = None) -> None:
        self._current = secret.encode("utf-8")
        self._keys = [self._current] + ([previous.encode("utf-8")] if previous else [])

    def mint(
        self, tenant: str, subject: str, features: Sequence[str] | None, expires_ms: int
    ) -> tuple[str, Claims]:
        claims = Claims(
            secrets.token_urlsafe(16),
            tenant,
            subject,
            tuple(features) if features is not None else None,
            expires_ms,
        )
        body = _b64(
            orjson.dumps(
                {
                    "v": 1,
                    "tid": claims.token_id,
                    "ten": tenant,
                    "sub": subject,
                    "fea": list(claims.features) if claims.features is not None else None,
                    "exp": expires_ms,
                }
            )
        )
        return f"{PREFIX}{body}.{_b64(self._sign(self._current, body))}", claims

    @staticmethod
    def _sign(key: bytes, body: str) -> bytes:
        return hmac.new(key, _DOMAIN + body.encode("ascii"), hashlib.sha256).digest()

    def verify(self, token: str, now_ms: int) -> Claims:
        """The claims of a genuine, unexpired token; ``TokenRefused`` otherwise.

        The signature is checked before anything in the claims is believed: a
        tampered subject or expiry must never reach the query.
        """
        body, _, signature = token.removeprefix(PREFIX).partition(".")
        try:
            supplied = _unb64(signature)
            body.encode("ascii")
        except (binascii.Error, ValueError):
            raise TokenRefused("invalid-token", "the token is malformed") from None
        if not any(hmac.compare_digest(self._sign(k, body), supplied) for k in self._keys):
            raise TokenRefused("invalid-token", "the token's signature does not verify")
        try:
            raw = orjson.loads(_unb64(body))
            features = raw["fea"]
            claims = Claims(
                str(raw["tid"]),
                str(raw["ten"]),
                str(raw["sub"]),
                tuple(str(f) for f in features) if features is not None else None,
                int(raw["exp"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            # Signed by us but unreadable: a format this version does not know.
            raise TokenRefused("invalid-token", "the token's claims are not readable") from None
        if now_ms >= claims.expires_ms:
            raise TokenRefused("token-expired", "the token has expired; mint a new one")
        return claims


def valid_token_id(token_id: str) -> bool:
    return bool(_TOKEN_ID.match(token_id))


class Revocations:
    """The revoked token ids every gateway process sees, from the store's table.

    Cached for ``REVOCATION_CACHE_S``: a token revoked through another process is
    accepted here for at most that long. Revocations older than ``MAX_TTL_S`` are
    not read (the tokens have expired anyway), and the table's TTL drops them.
    When the store cannot be read the token is refused (``StoreError``, a 503):
    answering with a possibly revoked token would leak the very data the
    revocation was meant to stop.
    """

    def __init__(self, sink: SqlReader, cache_s: float = REVOCATION_CACHE_S) -> None:
        self.sink = sink
        self.cache_s = cache_s
        self._revoked: frozenset[tuple[str, str]] = frozenset()
        self._fresh_until = 0.0
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        return f"{self.sink.database}.portal_token_revocations"

    def is_revoked(self, tenant: str, token_id: str) -> bool:
        if time.monotonic() >= self._fresh_until:
            self._refresh()
        return (tenant, token_id) in self._revoked

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() < self._fresh_until:
                return  # another request refreshed it while this one waited
            rows = self.sink.query_rows(
                f"SELECT DISTINCT tenant, token_id FROM {self.table} "
                f"WHERE revoked_at > now64(3) - INTERVAL {MAX_TTL_S + 3600} SECOND"
            )
            self._revoked = frozenset((r["tenant"], r["token_id"]) for r in rows)
            self._fresh_until = time.monotonic() + self.cache_s

    def revoke(self, tenant: str, token_id: str, by: str) -> None:
        """Store the revocation, then see it here at once (no cache delay for this process)."""
        self.sink.query_raw(
            f"INSERT INTO {self.table} (tenant, token_id, revoked_at, revoked_by) "
            f"VALUES ({quote(tenant)}, {quote(token_id)}, now64(3), {quote(by)})",
            "CSV",
        )
        with self._lock:
            self._revoked = self._revoked | {(tenant, token_id)}


__all__ = [
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "PREFIX",
    "REVOCATION_CACHE_S",
    "Claims",
    "Revocations",
    "TokenRefused",
    "TokenSigner",
    "valid_token_id",
]
