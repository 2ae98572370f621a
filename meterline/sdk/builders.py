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
from schemas.times import format_ms
from schemas.usage import EventType

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


def exact(value: Decimal | str | int | float, name: str, *, allow_float: bool) -> str:
    """A decimal as exact text. Money refuses floats: 0.1 is not exactly 0.1."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not a boolean")
    if isinstance(value, float):
        if not allow_float:
            raise ValueError(f"{name} must be a Decimal or a string such as '0.50', not a float")
        value = repr(value)
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError):
        raise ValueError(f"{name} must be a decimal number, not {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return format(number, "f")


def _common(
    data: dict[str, Any], feature: str, user: str, metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    if feature:
        data["feature"] = feature
    if user:
        data["user"] = user
    if metadata:
        data["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return data


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
) -> dict[str, Any]:
    """LLM token usage; ``tokens`` holds any of ``normalize.TOKEN_FIELDS``."""
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
) -> dict[str, Any]:
    data: dict[str, Any] = {"provider": provider, "model": model, "images": images}
    if size:
        data["size"] = size
    if quality:
        data["quality"] = quality
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
) -> dict[str, Any]:
    """Custom units (pages, seconds...). Quantities go out as exact decimal text."""
    data: dict[str, Any] = {"unit": unit, "quantity": exact(quantity, "quantity", allow_float=True)}
    if provider:
        data["provider"] = provider
    if model:
        data["model"] = model
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
    )


def charge_event(
    *,
    source: str,
    customer: str,
    amount: Decimal | str | int,
    currency: str = "USD",
    description: str = "",
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
    id: str | None = None,
    time: TimeLike = None,
) -> dict[str, Any]:
    """An instant charge; ``amount`` is exact (Decimal or text), never a float."""
    data: dict[str, Any] = {
        "amount": exact(amount, "amount", allow_float=False),
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
