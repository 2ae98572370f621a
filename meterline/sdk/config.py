"""Emitter settings, from arguments or the environment, validated up front.

A bad setting raises ``ConfigError`` naming it when the ``Meter`` is built
(fail loudly at start-up); after that, nothing in the emitter raises into the
application.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError as CoreConfigError
from core.errors import MeterlineError

DEFAULT_URL = "http://127.0.0.1:8080"
_URI_REFERENCE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


class EmitterError(MeterlineError):
    """The emitter's errors, under meterline's one root (only configuration errors escape)."""


class ConfigError(EmitterError, CoreConfigError, ValueError):
    """A setting is invalid; the message names it. Also meterline's ``ConfigError``."""


def _default_source() -> str:
    program = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "python"
    cleaned = re.sub(r"[^A-Za-z0-9\-._~]", "-", program) or "python"
    return f"/apps/{cleaned}"


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """How events are sent. Every bound here is also a documented guarantee (docs/sdk.md)."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    source: str = ""
    batch_size: int = 100  # events per request
    flush_interval: float = 1.0  # s: a partial batch waits at most this long
    max_queue: int = 10_000  # events held in memory; beyond: spill or drop (counted)
    timeout: float = 5.0  # s per HTTP request
    initial_backoff: float = 0.25  # s, doubled per failed attempt, full jitter
    max_backoff: float = 10.0  # s, also caps an honoured Retry-After
    shutdown_timeout: float = 5.0  # s that close()/exit spend sending what is left
    spill_path: Path | None = None  # JSON lines file for events the queue cannot hold

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"url (METERLINE_URL) must start with http:// or https://: {self.url!r}"
            )
        if not self.source or not _URI_REFERENCE.match(self.source):
            raise ConfigError(f"source (METERLINE_SOURCE) must be a URI-reference: {self.source!r}")
        for name in ("batch_size", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.batch_size > 5000:
            raise ConfigError("batch_size must be <= 5000 (the gateway's default batch limit)")
        for name in ("flush_interval", "timeout", "initial_backoff", "max_backoff"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        if self.shutdown_timeout < 0:
            raise ConfigError("shutdown_timeout must be >= 0 seconds")

    @property
    def events_url(self) -> str:
        return self.url.rstrip("/") + "/v1/events"

    @classmethod
    def resolve(cls, **given: Any) -> MeterConfig:
        """Arguments win; then METERLINE_URL / _API_KEY / _SOURCE / _SPILL_PATH; then defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(given) - known
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        values = {k: v for k, v in given.items() if v is not None}
        env = os.environ
        values.setdefault("url", env.get("METERLINE_URL") or DEFAULT_URL)
        values.setdefault("source", env.get("METERLINE_SOURCE") or _default_source())
        if env.get("METERLINE_API_KEY"):
            values.setdefault("api_key", env["METERLINE_API_KEY"])
        if env.get("METERLINE_SPILL_PATH"):
            values.setdefault("spill_path", env["METERLINE_SPILL_PATH"])
        if values.get("spill_path") is not None:
            values["spill_path"] = Path(values["spill_path"])
        return cls(**values)
