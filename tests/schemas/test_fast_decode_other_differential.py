"""The fast decode of image, units and charge events accepts only what the reference
accepts, with an equal result.

``schemas.fast_decode_other.fast_other_event`` (msgspec) returns the envelope and
usage or None ("take the reference path"); ``parse_event`` (orjson + pydantic) is
the reference the gateway validates with. An event the fast path accepts that the
reference refuses would be billed although the gateway refuses it; any difference
in the result (a provider not made canonical, a Decimal of other digits) would bill
it differently. Each case runs both and fails on any difference: the envelope, the
usage (its type, its ``__dict__`` in order with the type of each value,
``fields_set``, its JSON), and at the processor's level the whole ``Decoded`` or
``DeadLetter``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.data import EventStream, encode
from schemas import fast_decode_other
from schemas.envelope import ValidEvent, parse_event
from schemas.fast_decode_other import fast_other_event
from tests.schemas.test_fast_decode_differential import (
    DATA_KEYS,
    LABEL,
    MAPPINGS,
    MEDIA,
    METADATA,
    MODEL,
    PROVIDER,
    SOURCE,
    TEXT,
    TIME,
    assert_equal_results,
    assert_same_decode,
)

IMAGE = "io.meterline.usage.image"
UNITS = "io.meterline.usage.units"
CHARGE = "io.meterline.usage.charge"


def assert_same(value: bytes) -> bool:
    """Run both paths on one logged value; True when the fast path accepted it."""
    fast = fast_other_event(value)
    if fast is None:
        return False  # the reference path decides: compared at decode() level too
    reference = parse_event(orjson.loads(value), MAPPINGS)
    assert isinstance(reference, ValidEvent), (
        f"fast path accepted what the reference refuses: {reference}"
    )
    assert_equal_results(fast, reference)
    return True


def both(value: bytes) -> bool:
    accepted = assert_same(value)
    assert_same_decode(value)
    return accepted


# --- the values each type's fields may take, valid and not --------------------------

DECIMAL = st.one_of(
    st.integers(min_value=0, max_value=1_000),
    st.sampled_from(
        [
            0,
            -1,
            10**16 - 1,
            10**16,
            2**64,
            True,
            False,
            None,
            1.5,
            0.1,
            1e3,
            1.0,
            "1",
            "0.50",
            "12.500000000000",
            "0.000000000001",
            "0.0000000000001",
            "+1",
            "-0",
            "-1",
            "00012.50",
            ".5",
            "5.",
            "1e3",
            "1_000",
            " 1",
            "NaN",
            "Infinity",
            "\u0661",
            "",
            "9999999999999999",
            "10000000000000000",
            "9999999999999999.999999999999",
            [],
            {},
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
)
# CallUsage's fields take the values the token test draws for them.
CALL: dict[str, st.SearchStrategy[Any]] = {
    key: DATA_KEYS[key]
    for key in ("feature", "user", "metadata", "status", "error_type", "http_status", "latency_ms")
}
UNIT_PRICES = st.sampled_from([None, {"unit": "0.01"}, {"input_token": "1"}])
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    IMAGE: {
        **CALL,
        "provider": PROVIDER,
        "model": MODEL,
        "images": st.sampled_from([0, 1, 2, 4, 10_000, 10_001, -1, True, 1.0, "2", None]),
        "size": LABEL,
        "quality": LABEL,
        "unit_prices": UNIT_PRICES,
        "inputTokens": st.just(1),  # a field the type does not have
    },
    UNITS: {
        **CALL,
        "unit": st.one_of(MODEL, st.sampled_from(["page", "api_call", "u" * 256, "u" * 257])),
        "quantity": DECIMAL,
        "provider": PROVIDER,
        "model": LABEL,
        "unit_prices": UNIT_PRICES,
        "images": st.just(1),
    },
    CHARGE: {
        "feature": LABEL,
        "user": LABEL,
        "metadata": METADATA,
        "amount": DECIMAL,
        "currency": st.sampled_from(
            ["USD", "EUR", "JPY", "usd", "US", "USDX", "XXX", "XTS", "XAU", "ZZZ", "", None, 1]
        ),
        "description": LABEL,
        "status": st.just("ok"),  # CallUsage's: a charge has none
    },
}
VALID: dict[str, dict[str, Any]] = {
    IMAGE: {
        "provider": "OpenAI",
        "model": "gpt-image-1",
        "images": 2,
        "size": "1024x1024",
        "quality": "high",
        "feature": "images",
    },
    UNITS: {"unit": "page", "quantity": 12, "provider": "mistral", "model": "ocr-1"},
    CHARGE: {"amount": "0.50", "currency": "EUR", "description": "premium export"},
}
REQUIRED = {IMAGE: ("provider", "model", "images"), UNITS: ("unit",), CHARGE: ("amount",)}


def _event(type_: str, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/s",
        "type": type_,
        "subject": "cust-1",
        "time": "2026-11-26T16:49:28.592Z",
        "datacontenttype": "application/json",
        "data": data,
    }


def _logged(event: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(event)
    except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits: json writes it
        return json.dumps(event).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_one_field_of_a_valid_event_changed_decodes_alike_on_both_paths(
    type_: str, data: st.DataObject
) -> None:
    # Everything else valid, so whether the event is accepted turns on this one field:
    # a rule of the fast path looser or stricter than the reference shows here.
    body = dict(VALID[type_])
    name = data.draw(st.sampled_from(sorted(FIELDS[type_])))
    body[name] = data.draw(FIELDS[type_][name])
    if data.draw(st.booleans()):
        body.pop(name)  # absent, not null
    if name == "error_type" and data.draw(st.booleans()):
        body["status"] = "error"
    both(_logged(_event(type_, body)))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Any type, several fields drawn at once, the envelope's attributes too."""
    type_ = draw(st.sampled_from([IMAGE, UNITS, CHARGE, IMAGE, "io.meterline.usage.tokens"]))
    fields = FIELDS.get(type_, FIELDS[IMAGE])
    body: dict[str, Any] = {k: v for k, v in VALID.get(type_, {}).items() if k in REQUIRED[type_]}
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=6, unique=True)):
        body[key] = draw(fields[key])
    event = _event(type_, draw(st.sampled_from([body] * 6 + [[body], "x", None])))
    attributes: dict[str, st.SearchStrategy[Any]] = {
        "specversion": st.sampled_from(["1.0", "0.3", None]),
        "id": TEXT,
        "source": SOURCE,
        "subject": TEXT,
        "time": TIME,
        "datacontenttype": MEDIA,
        "comexampleext": st.just("x"),
        "dataschema": st.just("https://s.example/x"),
    }
    for name in draw(st.lists(st.sampled_from(sorted(attributes)), max_size=3, unique=True)):
        event[name] = draw(attributes[name])
    for name in draw(st.lists(st.sampled_from(["id", "subject", "time", "datacontenttype"]))):
        event.pop(name, None)
    return event


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_generated_events_of_the_other_types_decode_alike_on_both_paths(
    event: dict[str, Any],
) -> None:
    both(_logged(event))


@pytest.mark.parametrize("type_", [IMAGE, UNITS, CHARGE])
def test_a_valid_event_of_each_type_takes_the_fast_path(type_: str) -> None:
    # Not a timing claim: without it a fast path that never accepts passes every test.
    assert both(_logged(_event(type_, VALID[type_])))
    assert both(_logged(_event(type_, {k: VALID[type_][k] for k in REQUIRED[type_]})))


def test_the_bench_events_of_the_other_types_all_take_the_fast_path() -> None:
    values = [v for _, v in encode(EventStream(seed=5, now_ms=1_795_000_000_000).take(4_000))]
    others = [v for v in values if orjson.loads(v)["type"] in FIELDS]
    assert len(others) > 150
    assert all(both(v) for v in others)


@pytest.mark.parametrize(
    ("type_", "field", "raw"),
    [
        (UNITS, "quantity", "0.50"),
        (UNITS, "quantity", "00012.50"),
        (UNITS, "quantity", "+1"),
        (UNITS, "quantity", "-0"),
        (UNITS, "quantity", "12.500000000000"),
        (UNITS, "quantity", 10**16 - 1),
        (CHARGE, "amount", "0.50"),
        (CHARGE, "amount", ".5"),
        (CHARGE, "amount", "5."),
        (CHARGE, "amount", 0),
    ],
)
def test_exact_decimals_keep_the_digits_the_reference_keeps(
    type_: str, field: str, raw: Any
) -> None:
    body = {**VALID[type_], field: raw}
    for _ in range(2):  # the second time from the cache of checked strings
        assert both(_logged(_event(type_, body)))


@pytest.mark.parametrize(
    ("type_", "field", "raw"),
    [
        (UNITS, "quantity", "-1"),
        (UNITS, "quantity", "0.0000000000001"),
        (UNITS, "quantity", "10000000000000000"),
        (UNITS, "quantity", 10**16),
        (UNITS, "quantity", "1e3"),
        (CHARGE, "amount", "-0.01"),
        (CHARGE, "amount", " 1"),
        (CHARGE, "currency", "XXX"),
        (CHARGE, "currency", "usd"),
        (IMAGE, "images", 0),
        (IMAGE, "size", "1024\x00"),
        (IMAGE, "provider", " "),
        (UNITS, "unit", ""),
    ],
)
def test_values_the_reference_refuses_are_refused_with_its_reason(
    type_: str, field: str, raw: Any
) -> None:
    value = _logged(_event(type_, {**VALID[type_], field: raw}))
    for _ in range(2):  # a refusal is cached too: the second one from the cache
        assert not assert_same(value)
        assert assert_same_decode(value).__class__.__name__ == "DeadLetter"


def test_the_caches_stay_bounded_under_a_flood_of_distinct_values() -> None:
    # Labels and decimal strings are checked once per distinct value: a client
    # sending a new one per event must not grow the processor's memory without bound.
    for i in range(fast_decode_other._CACHE_MAX + 10):
        body = {**VALID[CHARGE], "amount": f"{i}.25", "description": f"d{i}"}
        assert fast_other_event(_logged(_event(CHARGE, body))) is not None
        assert len(fast_decode_other._GOOD) <= fast_decode_other._CACHE_MAX
        assert len(fast_decode_other._DECIMALS) <= fast_decode_other._CACHE_MAX
    assert both(_logged(_event(CHARGE, body)))
