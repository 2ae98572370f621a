"""Events meterline cannot store, with the exact problem each must get (issue 11).

Each was accepted with 202 (or crashed the gateway or the processor). The rules
live in schemas/ only; the schema, gateway and decode tests all check these
same cases, so the gateway and the processor cannot drift apart.
"""

from __future__ import annotations

from typing import Any

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


def tokens(**data: Any) -> dict[str, Any]:
    return typed_event("tokens", **{"provider": "openai", "model": "gpt-4o", **data})


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


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
        tokens(input_tokens=1, model="gpt\u00854o"),
        [("data.model", "string_pattern_mismatch", CONTROL)],
    ),
    (
        "DEL in feature",
        tokens(input_tokens=1, feature="chat\x7f"),
        [("data.feature", "string_pattern_mismatch", CONTROL)],
    ),
    (
        "NUL in a metadata key",
        typed_event(
            "tokens",
            provider="openai",
            model="gpt-4o",
            input_tokens=1,
            metadata={"te\x00am": "search"},
        ),
        [("data.metadata", "value_error", f"metadata key 'te\\x00am' {CONTROL}")],
    ),
    (
        "newline in a metadata value",
        typed_event(
            "tokens",
            provider="openai",
            model="gpt-4o",
            input_tokens=1,
            metadata={"team": "search\nadmin"},
        ),
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
        tokens(input_tokens=10**12 + 1),
        [
            (
                "data.input_tokens",
                "less_than_equal",
                "Input should be less than or equal to 1000000000000",
            )
        ],
    ),
]
