"""Build meterline CloudEvents (plain dicts, ready for JSON) for every usage type.

The ``data`` of each event follows ``schemas.usage`` exactly (the gateway
validates it with those models). Builders are pure and raise ``ValueError``
on bad input; ``Meter`` catches that, logs and counts it, so an application
never sees an exception from metering.

``id`` defaults to a UUID4 here; the provider wrappers pass the provider
response id, which is what makes a re-sent or re-metered response count once
downstream (dedupe key = source + id).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.sdk.normalize import TOKEN_FIELDS
from schemas.limits import CONTROL
from schemas.times import format_ms
from schemas.usage import (
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    EventType,
)

TimeLike = datetime | float | int | str | None
SPECVERSION = "1.0"


def rfc3339(value: TimeLike = None) -> str:
    """RFC 3339 in UTC with milliseconds (``2025-01-31T12:00:00.123Z``); None = now."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, str):
        return value
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        raise ValueError(f"time must be a datetime, unix seconds or RFC 3339 text, not {value!r}")
    return format_ms(moment)


def exact(value: Decimal | str | int | float, name: str) -> str:
    """A decimal as exact text.

    A float is read by its shortest repr (``Decimal(repr(5.99))`` = ``5.99``,
    not the binary double 5.9900000000000002131...): that is the number the
    caller wrote, and refusing it lost usage (AgentMeter's ``amount=5.99``).
    Pass a Decimal or a string when the amount has more than 15 significant
    digits: a double cannot hold those.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not a boolean")
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError):
        raise ValueError(f"{name} must be a decimal number, not {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return format(number, "f")


PRICE_KEYS = ("input_token", "output_token", "unit")
OUTCOME_KEYS = ("status", "error_type", "http_status", "latency_ms")
PriceLike = Decimal | str | int | float


def unit_prices(prices: Mapping[str, Any]) -> dict[str, str]:
    """Client-stated prices (``data.unit_prices``) as exact decimal text.

    Keys: ``input_token`` / ``output_token`` (per token, tokens events), ``unit``
    (per unit or per image) and ``currency`` (ISO 4217, default USD). Used only
    where the server lets the tenant price its own events (docs/pricing.md#client-prices).
    """
    out: dict[str, str] = {}
    for key, value in prices.items():
        if key == "currency":
            out["currency"] = str(value)
        elif key in PRICE_KEYS:
            out[key] = exact(value, f"unit_prices[{key!r}]")
        else:
            raise ValueError(f"unknown unit_prices key {key!r}; use {list(PRICE_KEYS)} or currency")
    return out


def _priced(
    data: dict[str, Any], prices: Mapping[str, Any] | None, outcome: Mapping[str, Any] | None
) -> dict[str, Any]:
    if prices:
        data["unit_prices"] = unit_prices(prices)
    for key in OUTCOME_KEYS:  # what a provider wrapper measured (status, latency...)
        value = (outcome or {}).get(key)
        if value:
            data[key] = value
    return data


def _common(
    data: dict[str, Any], feature: str, user: str, metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    if feature:
        data["feature"] = feature
    if user:
        data["user"] = user
    if metadata:
        data["metadata"] = bounded_metadata(metadata)
    return data


# Set (to "true") in metadata that had to be cut to fit the limits (docs/sdk.md).
TRUNCATED = "metadata_truncated"
_REPLACEMENT = "\ufffd"


def bounded_metadata(metadata: Mapping[Any, Any]) -> dict[str, str]:
    """``metadata`` as text within the gateway's limits, marked when anything was cut.

    Metadata is labels, never what is billed: refusing the event over a label
    lost the usage itself. So instead of a refusal: control characters become
    U+FFFD, keys are cut to 64 characters and values to 1,024, empty keys are
    dropped, and over 32 keys the first 31 are kept (in the mapping's order) and
    ``metadata_truncated: "true"`` is the 32nd: it says the labels are not whole.
    """
    out: dict[str, str] = {}
    cut = False
    for raw_key, raw_value in metadata.items():
        text_key, text_value = str(raw_key), str(raw_value)
        key = CONTROL.sub(_REPLACEMENT, text_key)[:MAX_METADATA_KEY_CHARS]
        value = CONTROL.sub(_REPLACEMENT, text_value)[:MAX_METADATA_VALUE_CHARS]
        if key != text_key or value != text_value or not key or key in out:
            cut = True
        if key and key not in out:
            out[key] = value
    if len(out) > MAX_METADATA_KEYS:
        out = dict(list(out.items())[: MAX_METADATA_KEYS - 1])
        cut = True
    if cut:
        if TRUNCATED not in out and len(out) == MAX_METADATA_KEYS:
            out.popitem()
        out[TRUNCATED] = "true"
    return out


def envelope(
    type_: str,
    data: dict[str, Any],
    *,
    source: str,
    customer: str,
    id: str | None = None,
    time: TimeLike = None,
) -> dict[str, Any]:
    if not customer:
        raise ValueError("customer (the CloudEvents subject) is required")
    return {
        "specversion": SPECVERSION,
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type_,
        "subject": customer,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
        "data": data,
    }


def token_event(
    *,
    source: str,
    customer: str,
    provider: str,
    model: str,
    tokens: Mapping[str, int] | None = None,
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
    estimated: bool = False,
    service_tier: str = "",
    unit_prices: Mapping[str, Any] | None = None,
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """LLM token usage; ``tokens`` holds any of ``normalize.TOKEN_FIELDS``.

    ``unit_prices``: ``{"input_token": ..., "output_token": ..., "currency": ...}``;
    ``outcome``: the provider call's ``status``, ``error_type``, ``http_status``,
    ``latency_ms`` (the wrappers fill it).
    """
    counts = dict(tokens or {})
    unknown = set(counts) - set(TOKEN_FIELDS)
    if unknown:
        raise ValueError(f"unknown token fields {sorted(unknown)}; use {list(TOKEN_FIELDS)}")
    data: dict[str, Any] = {"provider": provider, "model": model}
    for name in TOKEN_FIELDS:
        value = counts.get(name, 0)
        if value or name in ("input_tokens", "output_tokens"):
            data[name] = value
    if estimated:
        data["estimated"] = True
    if service_tier:
        data["service_tier"] = service_tier
    _priced(data, unit_prices, outcome)
    return envelope(
        EventType.TOKENS.value,
        _common(data, feature, user, metadata),
        source=source,
        customer=customer,
        id=id,
        time=time,
    )


def image_event(
    *,
    source: str,
    customer: str,
    provider: str,
    model: str,
    images: int = 1,
    size: str = "",
    quality: str = "",
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
    unit_prices: Mapping[str, Any] | None = None,
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Generated images; ``unit_prices={"unit": <per image>}`` states the customer's price."""
    data: dict[str, Any] = {"provider": provider, "model": model, "images": images}
    if size:
        data["size"] = size
    if quality:
        data["quality"] = quality
    _priced(data, unit_prices, outcome)
    return envelope(
        EventType.IMAGE.value,
        _common(data, feature, user, metadata),
        source=source,
        customer=customer,
        id=id,
        time=time,
    )


def units_event(
    *,
    source: str,
    customer: str,
    unit: str,
    quantity: Decimal | str | int | float = 1,
    provider: str = "",
    model: str = "",
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
    unit_prices: Mapping[str, Any] | None = None,
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Custom units (pages, seconds...). Quantities go out as exact decimal text."""
    data: dict[str, Any] = {"unit": unit, "quantity": exact(quantity, "quantity")}
    if provider:
        data["provider"] = provider
    if model:
        data["model"] = model
    _priced(data, unit_prices, outcome)
    return envelope(
        EventType.UNITS.value,
        _common(data, feature, user, metadata),
        source=source,
        customer=customer,
        id=id,
        time=time,
    )


def api_request_event(
    *,
    source: str,
    customer: str,
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
    unit_prices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One API call = a units event with unit ``api_call`` and quantity 1."""
    return units_event(
        source=source,
        customer=customer,
        unit="api_call",
        quantity=1,
        feature=feature,
        user=user,
        metadata=metadata,
        id=id,
        time=time,
        unit_prices=unit_prices,
    )


def charge_event(
    *,
    source: str,
    customer: str,
    amount: Decimal | str | int | float,
    currency: str = "USD",
    description: str = "",
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
) -> dict[str, Any]:
    """An instant charge; ``amount`` is exact (a float is read by its shortest repr)."""
    data: dict[str, Any] = {
        "amount": exact(amount, "amount"),
        "currency": currency,
    }
    if description:
        data["description"] = description
    return envelope(
        EventType.CHARGE.value,
        _common(data, feature, user, metadata),
        source=source,
        customer=customer,
        id=id,
        time=time,
    )
