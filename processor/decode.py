"""Log record -> validated event, or the reason it must go to the dead-letter queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

from core.log.base import TENANT_HEADER, Record
from core.types import EventKey
from schemas.envelope import Envelope, ValidEvent, parse_event
from schemas.fast_decode import fast_token_event
from schemas.fast_decode_other import fast_other_event
from schemas.mappings import EventMappings
from schemas.usage import EventType, UsageData

_TOKENS = EventType.TOKENS.value.encode()


class Decoded(NamedTuple):
    """An accepted record. A NamedTuple: as immutable as a frozen dataclass and built
    in a third of the time (one per event; a frozen dataclass pays a setattr per field)."""

    record: Record
    envelope: Envelope
    tenant: str
    time_ms: int  # event time; the ingest time when the event has none
    # The usage to price and store: the event's own for meterline types, custom
    # units (``schemas.usage.custom_units``) for any other type.
    usage: UsageData

    @property
    def key(self) -> EventKey:
        """(tenant, source, id): the dedupe key."""
        return (self.tenant, self.envelope.source, self.envelope.id)

    @property
    def event(self) -> ValidEvent:
        """The event as ``parse_event`` returns it, its JSON parsed again (tools and tests).

        Not kept per record: the fast path never builds the JSON object, and the
        processor stores the logged bytes, not a re-serialised object."""
        return ValidEvent(orjson.loads(self.record.value), self.envelope, self.usage)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str  # stable code, e.g. "invalid_json", "invalid_event", "missing_tenant"
    detail: str


def decode(record: Record, mappings: EventMappings | None = None) -> Decoded | DeadLetter:
    """Check everything the gateway checked again: the log may hold records from
    other producers, older versions or hand-written tools.

    ``mappings`` must be the gateway's (both built from METERLINE_EVENT_MAPPINGS by
    the shell): with others, an event the gateway accepted as token usage would
    be stored here as an unpriced custom event, or dead-lettered."""
    tenant_raw = record.header(TENANT_HEADER)
    if not tenant_raw:
        return DeadLetter(record, "missing_tenant", f"no {TENANT_HEADER} header")
    tenant = tenant_raw.decode("utf-8", "replace")
    # The common token, image, units and charge events, checked by msgspec in C
    # (schemas/fast_decode.py, schemas/fast_decode_other.py); they only accept, so
    # every refusal and its reason still come from parse_event. The bytes test only
    # picks which to try: each checks the type itself, and a wrong pick costs one
    # failed decode, then the reference.
    value = record.value
    fast = fast_token_event(value) if _TOKENS in value else fast_other_event(value)
    if fast is not None:
        envelope, usage = fast
        moment = envelope.time_ms
        return Decoded(
            record, envelope, tenant, moment if moment is not None else record.timestamp_ms, usage
        )
    return decode_slow(record, tenant, mappings)


def decode_slow(
    record: Record, tenant: str, mappings: EventMappings | None = None
) -> Decoded | DeadLetter:
    """The reference path: orjson, then ``parse_event`` (every type, every problem)."""
    try:
        obj = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(record, "invalid_json", str(exc))
    parsed = parse_event(obj, mappings)
    if isinstance(parsed, list):
        detail = "; ".join(f"{p.field}: {p.message}" for p in parsed)
        return DeadLetter(record, "invalid_event", detail)
    moment = parsed.envelope.time_ms  # parsed once, by the envelope check
    return Decoded(
        record,
        parsed.envelope,
        tenant,
        moment if moment is not None else record.timestamp_ms,
        parsed.usage,
    )
