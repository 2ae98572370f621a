"""Event builders produce exactly the CloudEvents the gateway accepts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from meterline.sdk import (
    api_request_event,
    charge_event,
    image_event,
    token_event,
    units_event,
)
from schemas.envelope import parse_event

COMMON: dict[str, Any] = {"source": "/apps/test", "customer": "acme"}
T = datetime(2026, 11, 1, 12, 30, 15, 123456, tzinfo=UTC)


def accepted(event: dict[str, object]) -> dict[str, object]:
    parsed = parse_event(event)
    assert not isinstance(parsed, list), parsed
    return event


def test_token_event_exact_shape() -> None:
    event = token_event(
        **COMMON,
        provider="openai",
        model="gpt-4o",
        id="chatcmpl-1",
        time=T,
        tokens={"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 64},
        feature="chat",
        user="u-7",
        metadata={"env": "prod"},
        estimated=True,
    )
    assert accepted(event) == {
        "specversion": "1.0",
        "id": "chatcmpl-1",
        "source": "/apps/test",
        "type": "io.meterline.usage.tokens",
        "subject": "acme",
        "time": "2026-11-01T12:30:15.123Z",
        "datacontenttype": "application/json",
        "data": {
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_read_tokens": 64,
            "estimated": True,
            "feature": "chat",
            "user": "u-7",
            "metadata": {"env": "prod"},
        },
    }


def test_image_units_request_and_charge_events() -> None:
    image = accepted(
        image_event(
            **COMMON,
            provider="openai",
            model="gpt-image-1",
            images=2,
            size="1024x1024",
            quality="high",
            time=T,
        )
    )
    assert image["type"] == "io.meterline.usage.image"
    assert image["data"] == {
        "provider": "openai",
        "model": "gpt-image-1",
        "images": 2,
        "size": "1024x1024",
        "quality": "high",
    }
    units = accepted(units_event(**COMMON, unit="second", quantity=Decimal("1.25"), time=T))
    assert units["data"] == {"unit": "second", "quantity": "1.25"}
    assert accepted(units_event(**COMMON, unit="page", quantity=0.1))["data"] == {
        "unit": "page",
        "quantity": "0.1",
    }
    request = accepted(api_request_event(**COMMON, feature="search"))
    assert request["type"] == "io.meterline.usage.units"
    assert request["data"] == {"unit": "api_call", "quantity": "1", "feature": "search"}
    charge = accepted(charge_event(**COMMON, amount="0.50", currency="EUR", description="export"))
    assert charge["type"] == "io.meterline.usage.charge"
    assert charge["data"] == {"amount": "0.50", "currency": "EUR", "description": "export"}


def test_defaults_uuid_id_and_now() -> None:
    event = api_request_event(**COMMON)
    assert uuid.UUID(str(event["id"])).version == 4
    stamp = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 5
    assert str(event["time"]).endswith("Z") and len(str(event["time"])) == 24


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767225600, "2026-01-01T00:00:00.000Z"),
        (1767225600.5, "2026-01-01T00:00:00.500Z"),
        (datetime(2026, 1, 1), "2026-01-01T00:00:00.000Z"),
    ],
)
def test_times(value: float | datetime, expected: str) -> None:
    assert api_request_event(**COMMON, time=value)["time"] == expected


@pytest.mark.parametrize(("amount", "text"), [(5.99, "5.99"), (0.1, "0.1"), (1e-7, "1E-7")])
def test_float_amounts_are_read_by_their_shortest_repr(amount: float, text: str) -> None:
    data = charge_event(**COMMON, amount=amount)["data"]
    assert Decimal(data["amount"]) == Decimal(text)
    assert data["amount"] == format(Decimal(text), "f")  # no exponent on the wire


def test_money_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        charge_event(**COMMON, amount=-5.99)
    with pytest.raises(ValueError, match="finite"):
        charge_event(**COMMON, amount=float("nan"))
    with pytest.raises(ValueError, match=">= 0"):
        charge_event(**COMMON, amount="-1")
    with pytest.raises(ValueError, match="customer"):
        api_request_event(source="/a", customer="")
    with pytest.raises(ValueError, match="unknown token fields"):
        token_event(**COMMON, provider="p", model="m", tokens={"inputTokens": 5})


def test_metadata_over_the_limits_is_trimmed_and_marked_so_the_usage_is_kept() -> None:
    metadata = {f"k{i:02}": "v" for i in range(40)} | {"long": "x" * 2000, "bad\x00key": "a\nb"}
    event = token_event(**COMMON, provider="openai", model="gpt-4o", metadata=metadata)
    parsed = parse_event(event)  # the gateway's own validation
    assert not isinstance(parsed, list), parsed
    kept = event["data"]["metadata"]
    assert len(kept) == 32
    assert kept["metadata_truncated"] == "true"
    assert list(kept)[:31] == [f"k{i:02}" for i in range(31)]  # the caller's order


def test_metadata_within_the_limits_is_sent_as_given_without_a_mark() -> None:
    metadata = {f"k{i:02}": "v" * 1024 for i in range(32)}
    event = token_event(**COMMON, provider="openai", model="gpt-4o", metadata=metadata)
    assert event["data"]["metadata"] == metadata


def test_metadata_with_control_characters_or_long_keys_is_cleaned_and_marked() -> None:
    event = token_event(
        **COMMON, provider="openai", model="gpt-4o", metadata={"a\x00": "b\nc", "k" * 70: "v"}
    )
    assert event["data"]["metadata"] == {
        "a\ufffd": "b\ufffdc",
        "k" * 64: "v",
        "metadata_truncated": "true",
    }
    assert not isinstance(parse_event(event), list)
