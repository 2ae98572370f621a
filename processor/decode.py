"""Log record -> validated event, or the reason it must go to the dead-letter queue."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from core.log.base import TENANT_HEADER, Record
from core.types import EventKey
from schemas.envelope import ValidEvent, parse_event
from schemas.usage import UnitsUsage, _UsageData

ONE = Decimal(1)
_UNIT = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


@dataclass(frozen=True, slots=True)
class Decoded:
    record: Record
    event: ValidEvent
    tenant: str
    time_ms: int  # event time; the ingest time when the event has none
    # The usage to price and store: the event's own for meterline types, custom
    # units (see ``custom_usage``) for any other type.
    usage: _UsageData

    @property
    def key(self) -> EventKey:
        """(tenant, source, id): the dedupe key."""
        return (self.tenant, self.event.envelope.source, self.event.envelope.id)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str  # stable code, e.g. "invalid_json", "invalid_event", "missing_tenant"
    detail: str


def custom_usage(data: Any) -> UnitsUsage:
    """An event of a type meterline does not know, as custom units.

    unit = ``data.unit`` when it is a clean name, else "event"; quantity =
    ``data.quantity`` when it is a non-negative number (int or decimal string),
    else 1. It is priced only if the price book has a units rule for its
    (type, unit); otherwise it is stored unpriced and counted, never guessed.
    """
    unit, quantity = "event", ONE
    if isinstance(data, dict):
        raw_unit = data.get("unit")
        if isinstance(raw_unit, str) and _UNIT.fullmatch(raw_unit):
            unit = raw_unit
        value = data.get("quantity")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            quantity = Decimal(value)
        elif isinstance(value, str):
            try:
                parsed = Decimal(value)
            except ArithmeticError:
                parsed = ONE
            if parsed.is_finite() and parsed >= 0:
                quantity = parsed
    # Columns hold 12 decimals: round here, half-even, rather than in the engine.
    quantity = quantity.quantize(Decimal("1e-12"), ROUND_HALF_EVEN)
    return UnitsUsage.model_validate({"unit": unit, "quantity": quantity})


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
    moment = parsed.envelope.time_ms  # parsed once, by the envelope check
    usage = parsed.usage
    if usage is None:
        try:
            usage = custom_usage(parsed.raw.get("data"))
        except (ValidationError, ArithmeticError) as exc:
            # e.g. a quantity beyond Decimal(38, 12), or one with more digits than the
            # decimal context holds (1e16, "1e400": the quantize raises InvalidOperation).
            return DeadLetter(record, "invalid_event", f"custom quantity: {exc!r}")
    return Decoded(
        record,
        parsed,
        tenant_raw.decode("utf-8", "replace"),
        moment if moment is not None else record.timestamp_ms,
        usage,
    )
