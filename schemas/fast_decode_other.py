"""The processor's fast decode of image, units and charge events (issue 17).

The Rust decoder (schemas/native_decode.py) takes the token events; the other
native types (~6% of the bench's events: images, pages, one-off charges) went
through the reference path, orjson + ``parse_event`` and its pydantic model, at
~26-36 µs each: more of the processor thread's time than all the token events'
decoding together. Here they are decoded like the token events in
schemas/fast_decode.py: msgspec Structs (JSON syntax, types, integer bounds,
unknown fields refused, all in C), then in Python the rules msgspec cannot say,
the rules on the labels once per distinct combination of them.

It only ever ACCEPTS, as fast_decode does: anything it does not fully check
itself (extensions, null attributes, ``unit_prices``, a float quantity or amount,
a lax value pydantic would coerce, any rule broken) returns None and the caller
takes ``parse_event``, which accepts or refuses with its own problems. What must
hold is that whatever this accepts, the reference accepts with an equal result:
tests/schemas/test_fast_decode_other_differential.py proves it on generated
events of each type. A difference would bill an event the gateway refuses, or
bill it differently.

The exact decimals (units' ``quantity`` and a charge's ``amount``) are the one
place that is not re-stated here: a JSON integer in the column's range is
``Decimal(n)`` (as ``schemas.usage.custom_units`` does), and a decimal string is
validated by the model itself, once per distinct string (amounts repeat: a price
list), so its digits and places rules cannot drift.
"""

from __future__ import annotations

from decimal import Decimal
from operator import itemgetter
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from pydantic import BaseModel, ValidationError

from schemas.envelope import Envelope
from schemas.fast_decode import (
    _CACHE_MAX,
    _MAX_ERROR_TYPE,
    _MAX_NAME,
    _built,
    _defaults,
    _envelope,
    _media_ok,
    _no_control,
    _sent_fields,
    _source_ok,
)
from schemas.limits import MAX_DECIMAL, currencies
from schemas.providers import canonical_provider
from schemas.usage import (
    CALL_STATUSES,
    MAX_LATENCY_MS,
    ChargeUsage,
    EventType,
    ImageUsage,
    UnitsUsage,
    UsageData,
)

_Status = Annotated[int, Meta(ge=0, le=599)]  # strict: no bool, no float
_Latency = Annotated[int, Meta(ge=0, le=MAX_LATENCY_MS)]


class _UsageData(Struct, forbid_unknown_fields=True, kw_only=True):
    """``UsageData``'s fields; UNSET = not sent (pydantic's fields_set). A subclass adds
    its fields after these, in the models' own order."""

    feature: str | UnsetType = UNSET
    user: str | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType = UNSET


class _CallData(_UsageData, kw_only=True):
    """``CallUsage``'s fields."""

    status: str | UnsetType = UNSET
    error_type: str | UnsetType = UNSET
    http_status: _Status | UnsetType = UNSET
    latency_ms: _Latency | UnsetType = UNSET


class _ImageData(_CallData, kw_only=True):
    """``ImageUsage``'s fields but ``unit_prices``."""

    provider: str
    model: str
    images: Annotated[int, Meta(ge=1, le=10_000)]
    size: str | UnsetType = UNSET
    quality: str | UnsetType = UNSET


class _UnitsData(_CallData, kw_only=True):
    """``UnitsUsage``'s fields but ``unit_prices``."""

    unit: str
    # A JSON float takes the reference path (its 15-digit rule); so does a bool,
    # which msgspec's int refuses.
    quantity: int | str | UnsetType = UNSET
    provider: str | UnsetType = UNSET
    model: str | UnsetType = UNSET


class _ChargeData(_UsageData, kw_only=True):
    """``ChargeUsage``'s fields."""

    amount: int | str
    currency: str | UnsetType = UNSET
    description: str | UnsetType = UNSET


class _Event(Struct, forbid_unknown_fields=True, tag_field="type", kw_only=True):
    """A structured-mode event with no extensions (as fast_decode's ``_TokenEvent``)."""

    specversion: Literal["1.0"]
    id: str
    source: str
    subject: str  # usage events need the customer
    time: str | UnsetType = UNSET
    datacontenttype: str | UnsetType = UNSET


class _ImageEvent(_Event, tag=EventType.IMAGE.value):
    data: _ImageData


class _UnitsEvent(_Event, tag=EventType.UNITS.value):
    data: _UnitsData


class _ChargeEvent(_Event, tag=EventType.CHARGE.value):
    data: _ChargeData


_DECODER = msgspec.json.Decoder(_ImageEvent | _UnitsEvent | _ChargeEvent)
_CALL = ("feature", "user", "status", "error_type")


_IMAGE_DEFAULTS = _defaults(ImageUsage, _ImageData)
_UNITS_DEFAULTS = _defaults(UnitsUsage, _UnitsData)
_CHARGE_DEFAULTS = _defaults(ChargeUsage, _ChargeData)
# Per Struct: the model, its defaults, and its labels (every str field but the
# decimals), which _labels_ok checks and _GOOD caches by.
_TYPES: dict[type[_Event], tuple[str, type[UsageData], dict[str, Any], itemgetter[Any]]] = {
    _ImageEvent: (
        EventType.IMAGE.value,
        ImageUsage,
        _IMAGE_DEFAULTS,
        itemgetter(*_CALL, "provider", "model", "size", "quality"),
    ),
    _UnitsEvent: (
        EventType.UNITS.value,
        UnitsUsage,
        _UNITS_DEFAULTS,
        itemgetter(*_CALL, "unit", "provider", "model"),
    ),
    _ChargeEvent: (
        EventType.CHARGE.value,
        ChargeUsage,
        _CHARGE_DEFAULTS,
        itemgetter("feature", "user", "currency", "description"),
    ),
}
_CURRENCIES = currencies()
if not all(len(c) == 3 and c.isascii() and c.isupper() for c in _CURRENCIES):  # pragma: no cover
    raise ImportError("ISO 4217 codes outside [A-Z]{3}: the currency check below is not the rule")

# Checked label combinations -> the canonical provider ("" is a valid one for units).
_GOOD: dict[tuple[Any, ...], str] = {}
# Decimal strings -> the model's own Decimal for them (a units quantity or charge
# amount), or None where the model refuses it.
_DECIMALS: dict[tuple[type[BaseModel], str], Decimal | None] = {}
_UNKNOWN = object()


def _label(text: str) -> bool:
    """``Label``: at most 256 characters, no control character ('' allowed)."""
    return len(text) <= _MAX_NAME and _no_control(text)


def _name(text: str) -> bool:
    """``Name``: 1-256 characters, no control character."""
    return 0 < len(text) <= _MAX_NAME and _no_control(text)


def _call_ok(status: str, error_type: str) -> bool:
    """CallUsage's status and error_type rules."""
    if status not in CALL_STATUSES or len(error_type) > _MAX_ERROR_TYPE:
        return False
    return not (error_type and status != "error") and _no_control(error_type)


def _labels_ok(
    type_: str, source: str, media: str | UnsetType, fields: dict[str, Any]
) -> str | None:
    """The canonical provider when every label rule of the type holds, else None."""
    if not (source and _source_ok(source)):
        return None
    if media is not UNSET and not (media and _media_ok(media)):
        return None
    if not (_label(fields["feature"]) and _label(fields["user"])):
        return None
    if type_ == EventType.CHARGE.value:
        if fields["currency"] not in _CURRENCIES or not _label(fields["description"]):
            return None
        return ""
    if not _call_ok(fields["status"], fields["error_type"]):
        return None
    provider = fields["provider"]
    if type_ == EventType.IMAGE.value:
        if not (_name(provider) and _name(fields["model"])):
            return None
        if not (_label(fields["size"]) and _label(fields["quality"])):
            return None
        return canonical_provider(provider) or None  # ProviderName: never blank
    # Units: the unit is a Name; provider and model may be "" (no provider).
    if not (_name(fields["unit"]) and _label(provider) and _label(fields["model"])):
        return None
    return canonical_provider(provider)


def _decimal(model: type[BaseModel], field: str, raw: int | str, **required: Any) -> Decimal | None:
    """An exact decimal as the model reads it, or None where it refuses it."""
    if isinstance(raw, int):  # msgspec gives int or str here, never a bool
        # ExactDecimal of a JSON integer: Decimal(n), within [0, 10**16) (ge=0, lt=MAX).
        return Decimal(raw) if 0 <= raw < MAX_DECIMAL else None
    key = (model, raw)
    known = _DECIMALS.get(key, _UNKNOWN)  # one read: no gap for a clear() between two
    if known is not _UNKNOWN:
        return cast(Decimal | None, known)
    try:
        value: Decimal | None = getattr(model.model_validate({**required, field: raw}), field)
    except ValidationError:
        value = None
    if len(_DECIMALS) >= _CACHE_MAX:
        _DECIMALS.clear()  # a flood of distinct strings costs what the reference does
    _DECIMALS[key] = value
    return value


def fast_other_event(value: bytes) -> tuple[Envelope, UsageData] | None:
    """The envelope and usage of a common image, units or charge event, or None."""
    try:
        event = _DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    type_, model, defaults, label_values = _TYPES[type(event)]
    sent, fields = _sent_fields(event.data, defaults)
    id_, source, subject = event.id, event.source, event.subject
    media = event.datacontenttype
    # The label rules once per distinct combination: pure functions of these values
    # (the type's own labels in its field order), so a hit gives the rules' verdict.
    labels = (type_, source, media, *label_values(fields))
    canonical = _GOOD.get(labels)
    if canonical is None:
        checked = _labels_ok(type_, source, media, fields)
        if checked is None:
            return None
        canonical = checked
        if len(_GOOD) >= _CACHE_MAX:
            _GOOD.clear()
        _GOOD[labels] = canonical
    if model is ChargeUsage:
        amount = _decimal(ChargeUsage, "amount", fields["amount"])
        if amount is None:
            return None
        fields["amount"] = amount
    else:
        if "quantity" in sent:  # units
            quantity = _decimal(UnitsUsage, "quantity", fields["quantity"], unit="u")
            if quantity is None:
                return None
            fields["quantity"] = quantity
        fields["provider"] = canonical
    envelope = _envelope(id_, source, type_, subject, event.time, media, fields["metadata"])
    if envelope is None:
        return None
    return envelope, _built(model, fields, sent)


__all__ = ["fast_other_event"]
