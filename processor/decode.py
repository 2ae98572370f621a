"""Log record -> validated event, or the reason it must go to the dead-letter queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from meterline.log.base import TENANT_HEADER, Record
from schemas.envelope import ValidEvent, parse_event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Decoded:
    record: Record
    event: ValidEvent
    tenant: str
    time_ms: int  # event time; the ingest time when the event has none


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str  # stable code, e.g. "invalid_json", "invalid_event", "missing_tenant"
    detail: str


def time_ms(value: str) -> int:
    """RFC 3339 -> epoch milliseconds (UTC), truncating below the millisecond."""
    moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    # Integer arithmetic: float seconds * 1000 can land on ...122.9999 and lose a ms.
    return (moment - _EPOCH) // _MS


def decode(record: Record) -> Decoded | DeadLetter:
    """Check everything the gateway checked again: the log may hold records from
    other producers, older versions or hand-written tools."""
    tenant_raw = record.header(TENANT_HEADER)
    if not tenant_raw:
        return DeadLetter(record, "missing_tenant", f"no {TENANT_HEADER} header")
    try:
        obj = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(record, "invalid_json", str(exc))
    parsed = parse_event(obj)
    if isinstance(parsed, list):
        detail = "; ".join(f"{p.field}: {p.message}" for p in parsed)
        return DeadLetter(record, "invalid_event", detail)
    moment = parsed.envelope.time
    return Decoded(
        record,
        parsed,
        tenant_raw.decode("utf-8", "replace"),
        time_ms(moment) if moment is not None else record.timestamp_ms,
    )
