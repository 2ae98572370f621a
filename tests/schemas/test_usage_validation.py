"""Envelope and usage payload validation: what is refused, and the exact reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from schemas import Problem, parse_event
from schemas.envelope import ValidEvent
from schemas.usage import ChargeUsage, TokenUsage, UnitsUsage


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

PLAIN = (
    "must be a plain decimal such as '12.50': ASCII digits with an optional sign and "
    "decimal point; no exponent, underscores, spaces, NaN or Infinity"
)
CONTROL = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"
TIME_RANGE = (
    "must be from 2000-01-01T00:00:00Z up to, not including, 2100-01-01T00:00:00Z "
    "(the range the meters can hold)"
)
NOT_MONEY = (
    "is not an ISO 4217 currency code (List One, with minor units; "
    "XXX, XTS and the metals are not money)"
)
TOO_BIG = ("less_than", "Input should be less than 10000000000000000")
NEGATIVE = ("greater_than_equal", "Input should be greater than or equal to 0")


def custom_event(data: Any = None, **attributes: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": "poison-16",
        "source": "/t",
        "type": "com.acme.custom",
        "subject": "c",
        **attributes,
    }
    if data is not None:
        event["data"] = data
    return event


def typed_event(kind: str, **data: Any) -> dict[str, Any]:
    return {**custom_event(), "type": f"io.meterline.usage.{kind}", "data": data}


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def refusal(obj: Any) -> list[tuple[str, str, str]]:
    result = parse_event(obj)
    assert isinstance(result, list), "expected the event to be refused"
    return [(p.field, p.code, p.message) for p in result]


UNSTORABLE: list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]] = [
    (
        "custom quantity beyond the column bound (JSON integer)",
        custom_event({"quantity": 10_000_000_000_000_000}),
        [("data.quantity", *TOO_BIG)],
    ),
    (
        "custom quantity with an exponent",
        custom_event({"quantity": "1e400"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    (
        "custom quantity with underscores",
        custom_event({"quantity": "1_000"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    (
        "custom quantity in Arabic-Indic digits",
        custom_event({"quantity": "\u0661\u0662"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    (
        "custom quantity NaN",
        custom_event({"quantity": "NaN"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    (
        "custom quantity Infinity",
        custom_event({"quantity": "-Infinity"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    (
        "custom quantity padded",
        custom_event({"quantity": " 1"}),
        [("data.quantity", "value_error", PLAIN)],
    ),
    ("custom quantity negative", custom_event({"quantity": "-1"}), [("data.quantity", *NEGATIVE)]),
    (
        "custom quantity with 13 decimals",
        custom_event({"quantity": "0.0000000000001"}),
        [
            (
                "data.quantity",
                "decimal_max_places",
                "Decimal input should have no more than 12 decimal places",
            )
        ],
    ),
    (
        "custom quantity that is no number",
        custom_event({"quantity": {"value": 3}}),
        [
            (
                "data.quantity",
                "decimal_type",
                "Decimal input should be an integer, float, string or Decimal object",
            )
        ],
    ),
    (
        "custom data nested 500 deep",
        custom_event(nested(500)),
        [("data", "too_deep", "arrays and objects nest more than 64 levels deep")],
    ),
    (
        "custom data nested 65 deep",
        custom_event({"a": nested(64)}),
        [("data", "too_deep", "arrays and objects nest more than 64 levels deep")],
    ),
    (
        "time in 2150",
        custom_event(time="2150-01-01T00:00:00Z"),
        [("time", "value_error", TIME_RANGE)],
    ),
    (
        "time at 9999-12-31",
        custom_event(time="9999-12-31T23:59:59.999Z"),
        [("time", "value_error", TIME_RANGE)],
    ),
    (
        "time at the exclusive end",
        custom_event(time="2100-01-01T00:00:00Z"),
        [("time", "value_error", TIME_RANGE)],
    ),
    (
        "time before 2000",
        custom_event(time="1999-12-31T23:59:59.999Z"),
        [("time", "value_error", TIME_RANGE)],
    ),
    (
        "time before 2000 by its offset",
        custom_event(time="2000-01-01T00:30:00+01:00"),
        [("time", "value_error", TIME_RANGE)],
    ),
    (
        "C1 control in model",
        token_event(input_tokens=1, model="gpt\u00854o"),
        [("data.model", "string_pattern_mismatch", CONTROL)],
    ),
    (
        "DEL in feature",
        token_event(input_tokens=1, feature="chat\x7f"),
        [("data.feature", "string_pattern_mismatch", CONTROL)],
    ),
    (
        "NUL in a metadata key",
        token_event(input_tokens=1, metadata={"te\x00am": "search"}),
        [("data.metadata", "value_error", f"metadata key 'te\\x00am' {CONTROL}")],
    ),
    (
        "newline in a metadata value",
        token_event(input_tokens=1, metadata={"team": "search\nadmin"}),
        [("data.metadata", "value_error", f"metadata value of 'team' {CONTROL}")],
    ),
    (
        "C1 control in a units unit",
        typed_event("units", unit="page\u009b", quantity="1"),
        [("data.unit", "string_pattern_mismatch", CONTROL)],
    ),
    (
        "currency XXX",
        typed_event("charge", amount="1", currency="XXX"),
        [("data.currency", "value_error", f"'XXX' {NOT_MONEY}")],
    ),
    (
        "currency ZZZ",
        typed_event("charge", amount="1", currency="ZZZ"),
        [("data.currency", "value_error", f"'ZZZ' {NOT_MONEY}")],
    ),
    (
        "currency XTS (testing)",
        typed_event("charge", amount="1", currency="XTS"),
        [("data.currency", "value_error", f"'XTS' {NOT_MONEY}")],
    ),
    (
        "negative charge",
        typed_event("charge", amount="-1"),
        [("data.amount", *NEGATIVE)],
    ),
    (
        "charge beyond the column bound",
        typed_event("charge", amount="10000000000000000"),
        [("data.amount", *TOO_BIG)],
    ),
    (
        "charge with an exponent",
        typed_event("charge", amount="1E+2"),
        [("data.amount", "value_error", PLAIN)],
    ),
    (
        "units quantity as a long JSON integer",
        typed_event("units", unit="page", quantity=18_446_744_073_709_551_615),
        [("data.quantity", *TOO_BIG)],
    ),
    (
        "token count beyond its bound",
        token_event(input_tokens=10**12 + 1),
        [
            (
                "data.input_tokens",
                "less_than_equal",
                "Input should be less than or equal to 1000000000000",
            )
        ],
    ),
]


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
