"""One root error type for meterline, with one-line subclasses.

Callers catch ``MeterlineError`` to handle "our" failures and let anything else
(a bug) propagate with its traceback.
"""

from __future__ import annotations


class MeterlineError(Exception):
    """Root of every error meterline raises on purpose."""


class ConfigError(MeterlineError):
    """A setting is missing or invalid; the message names the setting."""


class LogUnavailable(MeterlineError):
    """The log (Kafka or the embedded log) did not durably acknowledge in time.

    Carries ``retry_after`` (seconds) so the gateway can answer 503 + Retry-After.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(MeterlineError):
    """The ClickHouse engine (chDB or a server) rejected or failed a statement."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the processor pauses and retries."""


class PartFailed(MeterlineError):
    """A background part died or got stuck: the process exits for its supervisor to restart it."""
