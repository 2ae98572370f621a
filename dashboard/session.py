"""Who is looking: a signed session cookie, set after an API key, admin token or portal token login.

The cookie carries the viewer (tenant, and the subject of a portal token), never
the credential itself: a stolen cookie expires with its session and cannot be
replayed against ``/v1/*``. It is HMAC-SHA256 signed, HttpOnly (no script reads
it), SameSite=Strict (no other site's form can post with it: the dashboard's only
writes are login and logout) and scoped to ``/ui``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

COOKIE = "meterline_ui"
# A working day: long enough not to interrupt someone watching the demo, short
# enough that a forgotten laptop's session ends.
SESSION_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Viewer:
    """The tenant shown; ``subject`` set: a customer view (portal token) of that subject only."""

    tenant: str
    via: str  # "api-key", "admin-token", "portal-token", "open-mode"
    subject: str | None = None
    features: tuple[str, ...] | None = None
    token_id: str | None = None  # a portal token's id: its revocation ends the session
    expires_ms: int = 0


class SessionSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            # A short key makes the signature guessable: every tenant's view at stake.
            raise ValueError("the dashboard session secret must be at least 32 bytes")
        self._key = hashlib.sha256(b"meterline-dashboard-session\x00" + secret).digest()

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, viewer: Viewer) -> str:
        claims = {
            "t": viewer.tenant,
            "v": viewer.via,
            "s": viewer.subject,
            "f": list(viewer.features) if viewer.features is not None else None,
            "i": viewer.token_id,
            "e": viewer.expires_ms,
        }
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}"

    def verify(self, cookie: str, now_ms: int | None = None) -> Viewer | None:
        """The viewer, or None for a tampered, foreign or expired cookie (then: log in again)."""
        payload, _, mac = cookie.partition(".")
        # Signature first: no claim of an unsigned cookie is ever read.
        if not mac or not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            viewer = Viewer(
                tenant=str(claims["t"]),
                via=str(claims["v"]),
                subject=claims["s"],
                features=tuple(claims["f"]) if claims["f"] is not None else None,
                token_id=claims["i"],
                expires_ms=int(claims["e"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return viewer if viewer.expires_ms > now else None
