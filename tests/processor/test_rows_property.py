"""Whatever the schema accepts becomes a usage_events row that fits its columns.

The property behind issue 11: the gateway's 202 is a promise that the
processor can store the event. Events are drawn from wide ranges (most are
refused); every accepted one is decoded, priced with the real price book and
turned into a row without exception, with every decimal inside Decimal(38, 12),
every count inside UInt64 and the time inside what the meters can hold.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.log.base import TENANT_HEADER, Record
from core.settings import load_settings
from meterline.runtime import build_price_book
from pricing.base import PriceBook, Priced
from processor.decode import Decoded, decode
from processor.rows import EventColumns
from schemas.limits import EARLIEST_MS, LATEST_MS
from sinks.base import EVENT_COLUMNS
from tests.support.unstorable import custom_event

COLUMN_LIMIT = Decimal(10) ** 26  # Decimal(38, 12): 26 integer digits
UINT64 = 2**64

DECIMALS = st.one_of(
    # Valid ones too, or most examples are refused and the property proves little.
    st.decimals(min_value=0, max_value=10**15, places=12).map(str),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(),
    st.text(alphabet="0123456789.-+eE_ \u0661", max_size=40),
)
COUNTS = st.integers(min_value=-1, max_value=2**64 - 1)
LABELS = st.text(max_size=20)
TIMES = st.none() | st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2110, 1, 1)
).map(lambda d: d.isoformat(timespec="milliseconds") + "Z")

DATA = st.one_of(
    st.fixed_dictionaries(
        {"provider": LABELS, "model": LABELS},
        optional={
            "input_tokens": COUNTS,
            "output_tokens": COUNTS,
            "cache_read_tokens": COUNTS,
            "reasoning_tokens": COUNTS,
            "metadata": st.dictionaries(LABELS, LABELS, max_size=3),
        },
    ).map(lambda d: ("io.meterline.usage.tokens", d)),
    st.fixed_dictionaries(
        {"provider": LABELS, "model": LABELS, "images": COUNTS},
        optional={"size": LABELS},
    ).map(lambda d: ("io.meterline.usage.image", d)),
    st.fixed_dictionaries({"unit": LABELS, "quantity": DECIMALS}).map(
        lambda d: ("io.meterline.usage.units", d)
    ),
    st.fixed_dictionaries(
        {"amount": DECIMALS}, optional={"currency": st.sampled_from(["USD", "EUR", "XXX", "usd"])}
    ).map(lambda d: ("io.meterline.usage.charge", d)),
    st.fixed_dictionaries({}, optional={"unit": LABELS, "quantity": DECIMALS}).map(
        lambda d: ("com.acme.custom", d)
    ),
)


@pytest.fixture(scope="module")
def price_book() -> PriceBook:
    return build_price_book(load_settings())


def assert_fits_its_column(name: str, value: Any) -> None:
    kind = EVENT_COLUMNS[name]
    if kind is Decimal:
        assert isinstance(value, Decimal) and value.is_finite(), (name, value)
        assert abs(value) < COLUMN_LIMIT, (name, value)
        assert value == value.quantize(Decimal("1e-12")), (name, value)  # <= 12 decimals
    elif kind is int and name != "time":
        assert 0 <= value < UINT64, (name, value)


# Refused events are filtered out (assume): many are, by design of the strategies.
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(typed=DATA, time=TIMES)
def test_every_accepted_event_becomes_a_row_that_fits_its_columns(
    price_book: PriceBook, typed: tuple[str, dict[str, Any]], time: str | None
) -> None:
    kind, data = typed
    event = custom_event(data, type=kind, time=time)
    record = Record("events", 0, 1, b"k", orjson.dumps(event), ((TENANT_HEADER, b"t"),), 0)
    decoded = decode(record)
    assume(isinstance(decoded, Decoded))
    assert isinstance(decoded, Decoded)
    assert EARLIEST_MS <= decoded.time_ms < LATEST_MS or time is None
    priced = price_book.price(kind, decoded.usage, decoded.time_ms, "c")
    rows = EventColumns()
    rows.add(decoded, priced, price_book.version, 1_767_225_600_000)
    for name, values in rows.columns.items():
        assert_fits_its_column(name, values[0])


def test_a_cost_beyond_28_digits_is_stored_exactly() -> None:
    # The default decimal context (28 digits) raised InvalidOperation here for
    # any cost of 10**16 and up, which Decimal(38, 12) holds.
    event = custom_event({"unit": "page", "quantity": "9999999999999999.999999999999"})
    decoded = decode(Record("events", 0, 1, b"k", orjson.dumps(event), ((TENANT_HEADER, b"t"),), 0))
    assert isinstance(decoded, Decoded)
    cost = Decimal("99999999999999999999999999.999999999999")  # 38 digits: the column's maximum
    rows = EventColumns()
    rows.add(decoded, Priced(cost, cost, True), "book", 0)
    assert rows.columns["cost_usd"] == [cost]
    assert rows.columns["quantity"] == [Decimal("9999999999999999.999999999999")]
