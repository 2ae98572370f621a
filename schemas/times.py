"""Instants as meterline keeps them: UTC, to the millisecond, in exact integer arithmetic.

One place for the conversions the gateway, the processor, the CLI and the sinks
all need. Integer arithmetic on purpose: ``timestamp() * 1000`` goes through a
float and can land on ...122.9999, losing a millisecond.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, truncating below the millisecond; a naive datetime is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // ONE_MS


def parse_ms(text: str) -> int:
    """RFC 3339 / ISO 8601 (``Z`` allowed, no zone = UTC) -> epoch ms; ValueError if not."""
    return to_ms(datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00")))


def from_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds, exactly."""
    return EPOCH + timedelta(milliseconds=ms)


def format_ms(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2025-01-31T12:00:00.123Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    return format_ms(datetime.now(UTC))
