"""Event mappings: what a mapped event becomes, and how a bad mapping file fails."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.envelope import ValidEvent, parse_event
from schemas.mappings import EventMappings, MappingError, builtin_mappings, load_mappings
from schemas.usage import TokenUsage, UnitsUsage

OPENAI_DATA = {"total_tokens": 20, "prompt_tokens": 13, "completion_tokens": 7, "model": "gpt-4o"}


def _event(type_: str, data: Any, id_: str = "e-1") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_,
        "source": "my-app",
        "type": type_,
        "subject": "cust-1",
        "data": data,
    }


def _mappings(tmp_path: Path, text: str) -> EventMappings:
    path = tmp_path / "mappings.yaml"
    path.write_text(text)
    return load_mappings(path)


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mappings.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mappings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


def test_the_openmeter_openai_shape_becomes_the_native_token_usage() -> None:
    native = parse_event(
        _event(
            "io.meterline.usage.tokens",
            {"provider": "openai", "model": "gpt-4o", "input_tokens": 13, "output_tokens": 7},
        )
    )
    mapped = parse_event(_event("openai", OPENAI_DATA), builtin_mappings())

    assert isinstance(mapped, ValidEvent) and isinstance(native, ValidEvent)
    assert type(mapped.usage) is TokenUsage
    assert mapped.usage == native.usage


def test_without_mappings_the_same_event_stays_a_custom_event() -> None:
    parsed = parse_event(_event("openai", OPENAI_DATA))

    assert isinstance(parsed, ValidEvent)
    assert type(parsed.usage) is UnitsUsage and parsed.usage.unit == "event"


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        (
            {"total_tokens": 20, "model": "gpt-4o", "completion_tokens": 7},
            "data.prompt_tokens",
            "missing",
        ),
        ({**OPENAI_DATA, "prompt_tokens": None}, "data.prompt_tokens", "missing"),
        ({**OPENAI_DATA, "prompt_tokens": -1}, "data.prompt_tokens", "greater_than_equal"),
        ({**OPENAI_DATA, "prompt_tokens": 13.5}, "data.prompt_tokens", "int_type"),
        ({**OPENAI_DATA, "model": ""}, "data.model", "string_too_short"),
        ("13 tokens", "data", "not_an_object"),
    ],
)
def test_a_mapped_event_missing_or_breaking_a_field_is_refused_naming_it(
    data: Any, field: str, code: str
) -> None:
    problems = parse_event(_event("openai", data), builtin_mappings())

    assert isinstance(problems, list)
    assert [(p.field, p.code) for p in problems] == [(field, code)]


def test_a_mapped_event_needs_a_subject_like_native_usage() -> None:
    event = _event("openai", OPENAI_DATA)
    del event["subject"]

    problems = parse_event(event, builtin_mappings())

    assert isinstance(problems, list) and [p.field for p in problems] == ["subject"]


def test_a_pasted_openmeter_meter_definition_meters_units_with_group_by(tmp_path: Path) -> None:
    mappings = _mappings(
        tmp_path,
        """
mappings:
  - slug: tokens_total
    eventType: prompt
    aggregation: SUM
    valueProperty: $.tokens
    groupBy: {model: $.model, type: $.type}
""",
    )

    parsed = parse_event(
        _event("prompt", {"tokens": "123456", "model": "gpt4-turbo", "type": "output"}), mappings
    )

    assert isinstance(parsed, ValidEvent)
    assert parsed.usage == UnitsUsage(
        unit="tokens_total",
        quantity=Decimal(123456),
        model="gpt4-turbo",
        metadata={"type": "output"},
    )


def test_nested_paths_defaults_and_count(tmp_path: Path) -> None:
    mappings = _mappings(
        tmp_path,
        """
mappings:
  - event_type: chat
    usage: tokens
    tokens:
      input_tokens: $.usage.prompt_tokens
      output_tokens: $.usage['completion_tokens']
      cache_read_tokens: $.usage.prompt_tokens_details.cached_tokens
    defaults: {cache_read_tokens: 0}
    group_by: {provider: $.vendor, model: '$.choices[0].model'}
  - event_type: api_call
    aggregation: COUNT
    unit: call
""",
    )
    chat = {"vendor": "OpenAI", "choices": [{"model": "gpt-4o"}], "usage": {"prompt_tokens": 9}}

    tokens = parse_event(
        _event("chat", {**chat, "usage": {**chat["usage"], "completion_tokens": 2}}), mappings
    )
    calls = parse_event(_event("api_call", {"route": "/x"}), mappings)

    assert isinstance(tokens, ValidEvent) and isinstance(calls, ValidEvent)
    assert tokens.usage == TokenUsage(
        provider="openai", model="gpt-4o", input_tokens=9, output_tokens=2
    )
    assert calls.usage == UnitsUsage(unit="call", quantity=Decimal(1))
    # The built-ins still apply next to the file's mappings.
    assert isinstance(parse_event(_event("openai", OPENAI_DATA), mappings), ValidEvent)


def test_a_path_selecting_several_values_is_refused(tmp_path: Path) -> None:
    mappings = _mappings(
        tmp_path,
        "mappings:\n  - {event_type: job, unit: s, value_property: '$.steps[*].seconds'}\n",
    )

    problems = parse_event(_event("job", {"steps": [{"seconds": 1}, {"seconds": 2}]}), mappings)

    assert isinstance(problems, list) and [p.code for p in problems] == ["ambiguous"]


def test_a_file_entry_replaces_the_builtin_and_builtins_false_drops_them(tmp_path: Path) -> None:
    replaced = _mappings(
        tmp_path,
        """
mappings:
  - event_type: openai
    usage: tokens
    tokens: {input_tokens: $.total_tokens}
    group_by: {provider: openai, model: $.model}
""",
    )
    dropped = _mappings(tmp_path, "builtins: false\n")

    parsed = parse_event(_event("openai", OPENAI_DATA), replaced)
    assert isinstance(parsed, ValidEvent) and isinstance(parsed.usage, TokenUsage)
    assert parsed.usage.input_tokens == 20
    assert len(dropped) == 0


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{event_type: chat, usage: tokens, tokens: {input_tokens: '$.[x'}, "
            "group_by: {provider: openai, model: $.model}}",
            "mappings[0] (event_type 'chat'): tokens.input_tokens: '$.[x' is not a JSONPath",
        ),
        (
            "{event_type: chat, usage: tokens, tokens: {inputTokens: $.x}, "
            "group_by: {provider: openai, model: $.model}}",
            "mappings[0] (event_type 'chat'): tokens: 'inputTokens' is not a token field",
        ),
        (
            "{event_type: chat, usage: tokens, tokens: {input_tokens: $.x}, "
            "group_by: {model: $.m}}",
            "mappings[0] (event_type 'chat'): entry: a tokens mapping needs group_by.provider",
        ),
        (
            "{eventType: prompt, aggregation: MAX, valueProperty: $.tokens}",
            "mappings[0] (event_type 'prompt'): aggregation: 'MAX' cannot be metered per event",
        ),
        (
            "{event_type: io.meterline.usage.tokens, value_property: $.n}",
            "event_type: 'io.meterline.usage.tokens' is a native meterline type",
        ),
        (
            "{event_type: job, unit: s}",
            "mappings[0] (event_type 'job'): entry: aggregation SUM needs value_property",
        ),
        (
            "{event_type: job, value_property: $.n, colour: red}",
            "mappings[0] (event_type 'job'): colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_mapping_fails_at_load_naming_file_entry_and_field(
    tmp_path: Path, entry: str, expected: str
) -> None:
    assert expected in _load_error(tmp_path, f"mappings:\n  - {entry}\n")


def test_a_type_mapped_twice_is_refused(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path,
        "mappings:\n  - {event_type: job, value_property: $.n}\n"
        "  - {event_type: job, aggregation: COUNT}\n",
    )

    assert "mappings[1] (event_type 'job'): event_type 'job' is mapped twice" in message


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert "not valid YAML" in _load_error(tmp_path, "mappings: [\n")
    assert "must be a mapping" in _load_error(tmp_path, "- a\n- b\n")
