"""Per-key rate limits: a token bucket per API key, answered with 429 + Retry-After.

The unit is the request, not the event: the limit protects the gateway and the
log from a runaway client before its body is even read, and a batch of 5000
events is the cheap way to send, which a per-event limit would punish. Event
volume is bounded separately by the batch and body size limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ingest.auth import ApiKey


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; a request takes one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key hash. A key's own ``rate_limit`` wins over the default."""

    def __init__(
        self,
        default_rate: float | None = None,
        default_burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_rate = default_rate or None
        self.default_burst = default_burst or None
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        # Buckets are touched from the event loop only, but tests and tools may
        # share a limiter across threads; the lock costs ~0.1 µs uncontended.
        self._lock = threading.Lock()

    def limits(self, key: ApiKey) -> tuple[float, int] | None:
        """(requests/s, burst) for this key, or None when it is unlimited."""
        rate = key.rate_limit or self.default_rate
        if rate is None:
            return None
        burst = key.burst or self.default_burst or max(1, math.ceil(rate))
        return rate, burst

    def retry_after(self, key: ApiKey) -> float | None:
        """None when the request may proceed, else seconds to wait before retrying."""
        limits = self.limits(key)
        if limits is None:
            return None
        rate, burst = limits
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key.key_hash)
            if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
                bucket = self._buckets[key.key_hash] = TokenBucket(rate, burst, now)
            wait = bucket.take(now)
        return wait or None
