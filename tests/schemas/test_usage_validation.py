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
