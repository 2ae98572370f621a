"""API keys: who is calling, and for which tenant.

The tenant of every event is the tenant of the key that sent it, never a field
of the body: a customer who could name the tenant could bill another one.

Keys are stored hashed (``sha256:<hex>``) in a YAML or JSON file
(``METERLINE_API_KEYS_FILE``), one entry per key::

    sha256:9f86d0...: acme                                   # key hash -> tenant
    sha256:2c26b4...: {tenant: globex, rate_limit: 50, burst: 100, scopes: [ingest]}

Why a plain sha256 and not bcrypt/argon2: those are for passwords, which people
choose and which are guessable. meterline keys are 256 random bits
(``meterline keys new``), so no amount of guessing reverses the hash, and a slow
hash would cost milliseconds on every request, far more than the gateway's whole
budget. A leaked key file therefore reveals no usable key.

Comparison: the presented key is hashed and looked up by its hash; timing can
at most reveal something about the hash of a key the attacker chose, which is
useless without a preimage. The matched entry is then confirmed with
``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from ingest.problems import HTTPProblem

log = logging.getLogger(__name__)

KEY_PREFIX = "mlk_"
# budgets: create/change/delete budgets (query/budgets.py); invoices: close periods into
# invoices (query/invoice_routes.py); read keys only read them.
SCOPES = frozenset({"ingest", "read", "budgets", "invoices"})
_HASH = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_RELOAD_EVERY_S = 2.0
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="meterline"'}


def new_key() -> str:
    """A new API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key (or the open-mode principal, ``key_hash == "open"``)."""

    key_hash: str
    tenant: str
    rate_limit: float | None = None  # requests per second; None = the default
    burst: int | None = None
    scopes: frozenset[str] = SCOPES


def parse_keys(document: Any, origin: str) -> dict[str, ApiKey]:
    """Key file content -> keys by hash; ConfigError naming every bad entry."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{origin}: must be a mapping of key hash -> tenant")
    keys: dict[str, ApiKey] = {}
    problems: list[str] = []
    for raw_hash, entry in document.items():
        where = f"{origin}: {str(raw_hash)[:80]!r}"
        match = _HASH.match(str(raw_hash))
        if match is None:
            problems.append(f"{where}: not 'sha256:<64 lowercase hex>' (store hashes, not keys)")
            continue
        spec = {"tenant": entry} if isinstance(entry, str) else entry
        if not isinstance(spec, dict) or set(spec) - {"tenant", "rate_limit", "burst", "scopes"}:
            problems.append(f"{where}: needs a tenant or {{tenant, rate_limit, burst, scopes}}")
            continue
        tenant = spec.get("tenant")
        rate = spec.get("rate_limit")
        burst = spec.get("burst")
        scopes = spec.get("scopes", sorted(SCOPES))
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            problems.append(f"{where}: tenant must match {_TENANT.pattern}")
        elif rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
        ):
            problems.append(f"{where}: rate_limit must be a positive number (requests/s)")
        elif burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or burst < 1
        ):
            problems.append(f"{where}: burst must be an integer >= 1")
        elif not isinstance(scopes, list) or not set(scopes) <= SCOPES or not scopes:
            problems.append(f"{where}: scopes must be a non-empty list of {sorted(SCOPES)}")
        else:
            key_hash = "sha256:" + match.group(1)
            keys[key_hash] = ApiKey(
                key_hash,
                tenant,
                float(rate) if rate is not None else None,
                burst,
                frozenset(scopes),
            )
    if problems:
        raise ConfigError("; ".join(problems))
    return keys


def load_keys(path: Path) -> dict[str, ApiKey]:
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"METERLINE_API_KEYS_FILE: cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"METERLINE_API_KEYS_FILE: {path} is not YAML/JSON: {exc}") from None
    return parse_keys(document, f"METERLINE_API_KEYS_FILE {path}")


class KeyStore:
    """The configured keys, re-read when the file changes (rotation without restarts).

    A file that becomes invalid is logged and ignored: the keys loaded before
    stay in force, rather than locking every client out or letting anyone in.
    """

    def __init__(self, keys: Mapping[str, ApiKey], path: Path | None = None) -> None:
        self._keys = dict(keys)
        self._path = path
        self._mtime = self._stat()
        self._next_check = time.monotonic() + _RELOAD_EVERY_S
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        return cls(load_keys(path), path)

    def __len__(self) -> int:
        return len(self._keys)

    def _stat(self) -> float | None:
        try:
            return self._path.stat().st_mtime if self._path else None
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._path is None or now < self._next_check or not self._lock.acquire(False):
            return
        try:
            self._next_check = now + _RELOAD_EVERY_S
            mtime = self._stat()
            if mtime == self._mtime:
                return
            self._mtime = mtime
            try:
                self._keys = load_keys(self._path)
            except ConfigError as exc:
                log.error("API key file changed but is invalid; keeping the previous keys: %s", exc)
                return
            log.warning("reloaded %d API keys from %s", len(self._keys), self._path)
        finally:
            self._lock.release()

    def tenants(self) -> frozenset[str]:
        """Tenants that currently hold a key (the processor dead-letters the others)."""
        self._maybe_reload()
        return frozenset(key.tenant for key in self._keys.values())

    def lookup(self, presented: str) -> ApiKey | None:
        self._maybe_reload()
        digest = hash_key(presented)
        key = self._keys.get(digest)
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            return None
        return key


class Authenticator:
    """Request headers -> the calling key; 401/403 problems otherwise.

    With no key store the gateway is in open mode: every request is the open
    principal of ``open_tenant`` (``meterline dev``, or METERLINE_OPEN_MODE=true).
    """

    def __init__(self, keys: KeyStore | None, open_tenant: str = "default") -> None:
        self.keys = keys
        self.open = ApiKey("open", open_tenant)

    def authenticate(self, authorization: str | None, api_key: str | None, scope: str) -> ApiKey:
        if self.keys is None:
            return self.open
        presented = _credential(authorization, api_key)
        key = self.keys.lookup(presented)
        if key is None:
            raise HTTPProblem(401, "invalid-api-key", "the API key is not valid", headers=CHALLENGE)
        if scope not in key.scopes:
            raise HTTPProblem(
                403,
                "forbidden",
                f"this API key does not have the {scope!r} scope (it has "
                f"{', '.join(sorted(key.scopes))})",
            )
        return key


def _credential(authorization: str | None, api_key: str | None) -> str:
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPProblem(
                401,
                "invalid-authorization",
                "Authorization must be 'Bearer <api key>' (or send X-API-Key)",
                headers=CHALLENGE,
            )
        return token.strip()
    if api_key:
        return api_key.strip()
    raise HTTPProblem(
        401,
        "missing-api-key",
        "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        headers=CHALLENGE,
    )
