"""Signed webhooks (Standard Webhooks) and the per-tenant endpoints file.

Each attempt sends the alert's stored CloudEvent bytes (structured mode) with
``webhook-id`` = the alert id (the same on every attempt and replay, so a
receiver deduplicates redeliveries, as the spec asks), ``webhook-timestamp`` =
now (seconds) and ``webhook-signature`` = ``v1,<HMAC-SHA256>`` by the
``standardwebhooks`` library, which receivers use to verify.

The endpoints file (``METERLINE_ALERT_WEBHOOKS_FILE``)::

    tenant-a:
      url: https://hooks.example.com/meterline
      secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

is read at start (a bad entry fails naming the file, tenant and field) and
again whenever its modification time changes (a bad edit then keeps the last
good endpoints and logs why, rather than stopping alerts).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml
from standardwebhooks import Webhook

from core.errors import ConfigError

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    secret: str  # whsec_...: kept out of repr
    _signer: Webhook

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, secret=***)"

    def headers(self, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
        moment = now.astimezone(UTC)
        return {
            "content-type": CONTENT_TYPE,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self._signer.sign(message_id, moment, body.decode()),
        }


def endpoint(url: str, secret: str, where: str = "endpoint") -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: url {url!r} is not an http(s) URL")
    if not secret.startswith("whsec_"):
        raise ConfigError(f"{where}: secret must start with 'whsec_' (Standard Webhooks)")
    try:
        signer = Webhook(secret)
    except Exception as exc:  # the library raises binascii / its own errors
        raise ConfigError(f"{where}: secret is not base64 after 'whsec_': {exc}") from exc
    if len(signer._whsecret) < 24:
        raise ConfigError(f"{where}: secret must decode to at least 24 bytes")
    return Endpoint(url, secret, signer)


def load_endpoints(path: Path) -> dict[str, Endpoint]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read alert webhooks: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of tenant -> {{url, secret}}")
    out: dict[str, Endpoint] = {}
    for tenant, entry in data.items():
        where = f"{path}: tenant {tenant!r}"
        if not isinstance(entry, dict) or set(entry) != {"url", "secret"}:
            raise ConfigError(f"{where}: expected exactly the fields url and secret")
        if not isinstance(entry["url"], str) or not isinstance(entry["secret"], str):
            raise ConfigError(f"{where}: url and secret must be strings")
        out[str(tenant)] = endpoint(entry["url"], entry["secret"], where)
    return out


class Endpoints:
    """The tenants' endpoints, re-read when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self._endpoints = load_endpoints(path) if path is not None else {}
        if path is not None:
            self._mtime = path.stat().st_mtime

    def get(self, tenant: str) -> Endpoint | None:
        self._refresh()
        return self._endpoints.get(tenant)

    def _refresh(self) -> None:
        if self.path is None:
            return
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
                if mtime == self._mtime:
                    return
                self._endpoints = load_endpoints(self.path)
                self._mtime = mtime
            except (OSError, ConfigError) as exc:
                log.error("alert webhooks file not reloaded, keeping the last good one: %s", exc)


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status: int  # 0: no response
    error: str


def send(client: httpx.Client, target: Endpoint, message_id: str, body: bytes) -> Attempt:
    """One signed POST; 2xx is delivered, anything else (or no answer) is not."""
    try:
        response = client.post(
            target.url,
            content=body,
            headers=target.headers(message_id, body, datetime.now(UTC)),
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        return Attempt(False, 0, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code, "")
    return Attempt(False, response.status_code, f"HTTP {response.status_code}")
