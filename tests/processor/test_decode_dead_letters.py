"""The processor dead-letters what the gateway refuses, and never raises.

The log may hold records that never passed this gateway (other producers, older
versions, hand-written tools): decode must turn each one into a DeadLetter
naming the same field the gateway names, or the partition stops on it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.log.base import TENANT_HEADER, Record
from processor.decode import DeadLetter, Decoded, decode
from tests.support.unstorable import UNSTORABLE, custom_event, nested


def record(value: bytes) -> Record:
    return Record("events", 0, 7, b"k", value, ((TENANT_HEADER, b"acme"),), 1_767_225_600_000)


@pytest.mark.parametrize(
    ("event", "expected"),
    [pytest.param(event, expected, id=name) for name, event, expected in UNSTORABLE],
)
def test_what_the_gateway_refuses_is_dead_lettered_with_the_same_problem(
    event: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    # json, not orjson: orjson cannot write the 500-deep case (that was the 500).
    result = decode(record(json.dumps(event).encode()))
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid_event"
    assert result.detail == "; ".join(f"{field}: {message}" for field, _, message in expected)


def test_data_nested_past_what_orjson_reads_is_invalid_json() -> None:
    # Written by hand: orjson cannot write it, and reads at most 1,024 levels.
    value = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":' + b"[" * 1100
    value += b"]" * 1100 + b"}"
    result = decode(record(value))
    assert isinstance(result, DeadLetter) and result.reason == "invalid_json"


def test_a_custom_quantity_at_the_bound_decodes_exactly() -> None:
    event = custom_event({"unit": "page", "quantity": "9999999999999999.999999999999"})
    result = decode(record(orjson.dumps(event)))
    assert isinstance(result, Decoded)
    assert str(result.usage.quantity) == "9999999999999999.999999999999"  # type: ignore[attr-defined]


# Any JSON at all, as the data of a custom event or of a meterline type, or in
# place of an attribute: decode answers, it never raises.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["quantity", "unit", "amount", "currency", "input_tokens", "metadata", "model", "provider"]
)
TYPES = st.sampled_from(
    [
        "com.acme.custom",
        "io.meterline.usage.tokens",
        "io.meterline.usage.image",
        "io.meterline.usage.units",
        "io.meterline.usage.charge",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    kind=TYPES,
    data=st.dictionaries(FIELDS, JSON, max_size=5) | JSON,
    time=st.none() | st.text(max_size=40) | st.datetimes().map(lambda d: d.isoformat() + "Z"),
    depth=st.integers(min_value=0, max_value=120),
)
def test_decode_never_raises_on_any_json(kind: str, data: Any, time: Any, depth: int) -> None:
    event = custom_event(data, type=kind, time=time)
    if depth:
        event["data"] = {"deep": nested(depth), "inner": data}
    result = decode(record(orjson.dumps(event)))
    assert isinstance(result, Decoded | DeadLetter)
