"""Envelope and usage payload validation: what is refused, and the exact reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from schemas import Problem, parse_event
from schemas.envelope import ValidEvent
from schemas.usage import ChargeUsage, TokenUsage, UnitsUsage
from tests.support.unstorable import UNSTORABLE, custom_event, nested, typed_event


def token_event(**data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "chatcmpl-1",
        "source": "/app",
        "type": "io.meterline.usage.tokens",
        "subject": "acme",
        "data": {"provider": "openai", "model": "gpt-4o", **data},
    }


def problems(obj: Any) -> list[tuple[str, str]]:
    result = parse_event(obj)
    assert isinstance(result, list), "expected the event to be refused"
    return [(p.field, p.code) for p in result]


def test_valid_token_event_parses_into_usage() -> None:
    result = parse_event(token_event(input_tokens=10, output_tokens=5, cache_read_tokens=4))
    assert isinstance(result, ValidEvent)
    assert isinstance(result.usage, TokenUsage)
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (10, 4)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda e: e.pop("id"), [("id", "missing")]),
        (lambda e: e.update(id=""), [("id", "string_too_short")]),
        (lambda e: e.update(specversion="0.3"), [("specversion", "literal_error")]),
        (lambda e: e.update(source="not a uri"), [("source", "value_error")]),
        (lambda e: e.update(time="2025-13-01T00:00:00Z"), [("time", "value_error")]),
        (lambda e: e.update(time="yesterday"), [("time", "value_error")]),
        (lambda e: e.update(id=12), [("id", "string_type")]),
        (lambda e: e.pop("subject"), [("subject", "missing")]),
        (lambda e: e.update(data=[1]), [("data", "not_an_object")]),
        (
            lambda e: e["data"].update(input_tokens=-1),
            [("data.input_tokens", "greater_than_equal")],
        ),
        (lambda e: e["data"].update(input_tokens="5"), [("data.input_tokens", "int_type")]),
        (lambda e: e["data"].update(input_tokens=1.5), [("data.input_tokens", "int_type")]),
        (lambda e: e["data"].update(inputTokens=5), [("data.inputTokens", "extra_forbidden")]),
        (lambda e: e["data"].pop("model"), [("data.model", "missing")]),
        (lambda e: e.update(Bad_Ext="x"), [("event", "value_error")]),
        (lambda e: e.update(ext=2**31), [("event", "value_error")]),
        (lambda e: e.update(data_base64="AAAA"), [("event", "value_error")]),
    ],
)
def test_invalid_events_are_refused_with_a_precise_problem(mutate: Any, expected: Any) -> None:
    event = token_event(input_tokens=1)
    mutate(event)
    assert problems(event) == expected


def test_cached_tokens_cannot_exceed_input_tokens() -> None:
    result = parse_event(token_event(input_tokens=10, cache_read_tokens=11))
    assert isinstance(result, list)
    assert "exceed input_tokens" in result[0].message


def test_null_attribute_means_unset() -> None:
    event = token_event(input_tokens=1)
    event["time"] = None
    result = parse_event(event)
    assert isinstance(result, ValidEvent)
    assert result.envelope.time is None


def test_unknown_type_is_accepted_as_a_custom_event_without_subject() -> None:
    result = parse_event({"specversion": "1.0", "id": "1", "source": "x", "type": "com.acme.thing"})
    assert isinstance(result, ValidEvent)
    assert isinstance(result.usage, UnitsUsage)
    assert (result.usage.unit, result.usage.quantity) == ("event", Decimal(1))


def test_money_as_string_is_exact_and_long_json_numbers_are_refused() -> None:
    assert ChargeUsage.model_validate({"amount": "0.123456789012"}).amount == Decimal(
        "0.123456789012"
    )
    assert ChargeUsage.model_validate({"amount": 0.1}).amount == Decimal("0.1")
    with pytest.raises(ValueError, match="send it as a string"):
        ChargeUsage.model_validate({"amount": 0.12345678901234567})


def test_problem_serialises_without_index_for_single_events() -> None:
    assert Problem("c", "f", "m").as_dict() == {"code": "c", "field": "f", "message": "m"}
    assert Problem("c", "f", "m", 3).as_dict()["index"] == 3


def test_metadata_is_bounded_and_the_problem_names_it() -> None:
    too_many = {f"k{i}": "v" for i in range(33)}
    assert problems(token_event(input_tokens=1, metadata=too_many)) == [
        ("data.metadata", "value_error")
    ]
    assert problems(token_event(input_tokens=1, metadata={"k": "x" * 1025})) == [
        ("data.metadata", "value_error")
    ]
    ok = parse_event(token_event(input_tokens=1, metadata={"team": "search"}))
    assert isinstance(ok, ValidEvent) and ok.usage is not None
    assert ok.usage.metadata == {"team": "search"}


# --- what cannot be stored is refused (issue 11) -------------------------------------
# Each of these was accepted with 202 (or crashed the gateway or the processor).
# The rules live in schemas/ only; the gateway and the processor both apply them
# through parse_event (tests/ingest/test_gateway_refuses_unstorable.py and
# tests/processor/test_decode_dead_letters.py hold them to it).


def refusal(obj: Any) -> list[tuple[str, str, str]]:
    result = parse_event(obj)
    assert isinstance(result, list), "expected the event to be refused"
    return [(p.field, p.code, p.message) for p in result]


@pytest.mark.parametrize(
    ("event", "expected"),
    [pytest.param(event, expected, id=name) for name, event, expected in UNSTORABLE],
)
def test_what_cannot_be_stored_is_refused_naming_the_field_and_rule(
    event: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    assert refusal(event) == expected


@pytest.mark.parametrize(
    ("event", "unit", "quantity"),
    [
        (
            custom_event({"quantity": "9999999999999999.999999999999"}),
            "event",
            "9999999999999999.999999999999",
        ),
        (
            custom_event({"quantity": 9_999_999_999_999_999, "unit": "page"}),
            "page",
            "9999999999999999",
        ),
        (custom_event({"quantity": "+.5"}), "event", "0.5"),
        (custom_event({"quantity": "2."}), "event", "2"),
        (custom_event({"quantity": 2.5}), "event", "2.5"),
        (custom_event({"quantity": None}), "event", "1"),
        (custom_event({"unit": "not a clean unit"}), "event", "1"),
        (custom_event({"a": nested(63)}), "event", "1"),
        (custom_event([1, [2]]), "event", "1"),
        (custom_event(time="2000-01-01T00:00:00Z"), "event", "1"),
        (custom_event(time="2099-12-31T23:59:59.999Z"), "event", "1"),
        (custom_event(time="2100-01-01T00:30:00+01:00"), "event", "1"),
    ],
)
def test_the_bounds_themselves_are_accepted(
    event: dict[str, Any], unit: str, quantity: str
) -> None:
    result = parse_event(event)
    assert isinstance(result, ValidEvent), result
    assert isinstance(result.usage, UnitsUsage)
    assert (result.usage.unit, result.usage.quantity) == (unit, Decimal(quantity))


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "XOF", "XCD", "CLF"])
def test_charges_in_iso_4217_currencies_are_accepted(code: str) -> None:
    result = parse_event(typed_event("charge", amount="0.01", currency=code))
    assert isinstance(result, ValidEvent) and isinstance(result.usage, ChargeUsage)
    assert result.usage.currency == code


def test_opaque_custom_data_keeps_its_control_characters() -> None:
    # Custom `data` is stored byte-exact and never becomes a label or a column:
    # a newline inside a customer's own payload is theirs to send.
    result = parse_event(custom_event({"note": "line 1\nline 2\x00"}))
    assert isinstance(result, ValidEvent)
