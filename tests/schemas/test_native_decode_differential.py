"""The native decoder accepts only what the reference accepts, with equal column values.

The same cases as tests/schemas/test_fast_decode_differential.py (its strategies
and data are imported, so the two cannot drift): for each logged value the Rust
decoder (schemas/native_decode.py over native/) either sends it to the Python path
(nothing to compare: the processor decodes it as today) or accepts it, and then the
reference (``parse_event`` via ``decode_slow``) must accept it too, and every column
the decoder fills must hold what the Python path stores for it. A difference would
bill an event the gateway refuses, or bill it differently.

The extension must be built (`make setup` fails without it): without it these tests
fail, they never skip, so CI cannot pass while the decoder is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.decode import Decoded, decode_slow
from schemas.native_decode import (
    AVAILABLE,
    INT_NAMES,
    VALUE_COLUMNS,
    WHY_UNAVAILABLE,
    NativeDecodeError,
    decode_columns,
)
from schemas.usage import TokenUsage
from tests.schemas.test_fast_decode_differential import (
    BASE_DATA,
    CONFORMANCE_EVENTS,
    DATA_KEYS,
    ENVELOPE_VALUES,
    MODEL,
    PROVIDER,
    TOKEN_DATA,
    TOKEN_PARTS,
    TOKENS,
    _as_logged,
    _token_value,
    record,
    token_events,
)
from tests.support.unstorable import UNSTORABLE


def reference_row(value: bytes) -> dict[str, Any] | None:
    """What the Python path stores in the decoder's columns, or None if it refuses."""
    decoded = decode_slow(record(value), "acme")
    if not isinstance(decoded, Decoded):
        return None
    envelope, usage = decoded.envelope, decoded.usage
    assert type(usage) is TokenUsage
    fields = usage.__dict__
    row: dict[str, Any] = {name: fields[name] for name in INT_NAMES if name in fields}
    row["time"] = decoded.time_ms
    row["estimated"] = 1 if usage.estimated else 0
    for name in ("provider", "model", "feature", "user", "status", "error_type"):
        row[name] = fields[name]
    row.update(id=envelope.id, source=envelope.source, subject=envelope.subject or "")
    row.update(type=envelope.type, data=value)
    row["metadata"] = orjson.dumps(usage.metadata).decode() if usage.metadata else "{}"
    return row


def assert_native_same(value: bytes) -> bool:
    """True when the native decoder accepted the value (and agreed with the reference)."""
    batch = decode_columns([value])
    if batch.fallback == [0]:
        assert len(batch.accepted) == 0
        return False
    assert batch.fallback == [] and batch.accepted.to_pylist() == [0]
    reference = reference_row(value)
    assert reference is not None, f"native accepted what the reference refuses: {value!r}"
    ours = {name: batch.columns[name][0].as_py() for name in VALUE_COLUMNS}
    assert ours == reference
    return True


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_events(), st.sampled_from(["orjson", "orjson", "ascii", "duplicates"]))
def test_generated_token_events_decode_alike_natively(event: dict[str, Any], style: str) -> None:
    try:
        value = _as_logged(event, style)
    except (TypeError, orjson.JSONEncodeError):
        return
    assert_native_same(value)


@settings(max_examples=3000, deadline=None)
@given(st.data())
def test_one_field_of_a_valid_token_event_changed_decodes_alike_natively(
    data: st.DataObject,
) -> None:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/s",
        "type": TOKENS,
        "subject": "cust-1",
        "time": "2026-11-26T16:49:28.592Z",
        "data": dict(BASE_DATA),
    }
    fields = {**{f"data.{k}": v for k, v in DATA_KEYS.items()}, **ENVELOPE_VALUES}
    fields["data.provider"], fields["data.model"] = PROVIDER, MODEL
    name = data.draw(st.sampled_from(sorted(fields)))
    value = data.draw(fields[name])
    target = event["data"] if name.startswith("data.") else event
    key = name.removeprefix("data.")
    if key in ("status", "error_type") and data.draw(st.booleans()):
        target.pop("error_type")
    target[key] = value
    if data.draw(st.booleans()):
        target.pop(key)
    try:
        encoded = orjson.dumps(event)
    except orjson.JSONEncodeError:
        encoded = json.dumps(event).encode()
    assert_native_same(encoded)


@pytest.mark.parametrize(
    ("name", "event"), CONFORMANCE_EVENTS, ids=[n for n, _ in CONFORMANCE_EVENTS]
)
def test_conformance_events_decode_alike_natively(name: str, event: Any) -> None:
    variants = [event]
    if isinstance(event, dict):
        as_tokens = {**event, "type": TOKENS, "data": TOKEN_DATA}
        as_tokens.pop("data_base64", None)
        variants += [as_tokens, {**as_tokens, "subject": "cust-1"}]
    for variant in variants:
        assert_native_same(json.dumps(variant).encode())


@pytest.mark.parametrize(
    ("name", "event"), [(n, e) for n, e, _ in UNSTORABLE], ids=[n for n, _, _ in UNSTORABLE]
)
def test_dead_letter_cases_are_never_accepted_natively(name: str, event: Any) -> None:
    assert not assert_native_same(json.dumps(event).encode())


HEAD = b'{"specversion":"1.0","id":"1","source":"/s","type":"' + TOKENS.encode() + b'",'


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[]",
        b'{"specversion":"1.0"}',
        b"\xef\xbb\xbf" + HEAD + b'"subject":"c","data":{"provider":"p","model":"m"}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"\\ud800"}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m","input_tokens":1e2}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m","input_tokens":1.0}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m"}} trailing',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m","input_tokens":NaN}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m\xff"}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":"m","estimated":1}}',
        HEAD + b'"subject":"c","data":{"provider":"p","model":null}}',
        HEAD + b'"subject":"c","time":null,"data":{"provider":"p","model":"m"}}',
    ],
)
def test_malformed_values_are_never_accepted_natively(value: bytes) -> None:
    assert not assert_native_same(value)


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-26T16:49:28.592Z",
        "2024-02-29T00:00:00.000Z",
        "2023-02-29T00:00:00.000Z",
        "2100-02-29T00:00:00.000Z",
        "2000-02-29T12:00:00.000Z",
        "2026-11-26T24:00:00.000Z",
        "2026-11-26T16:49:60.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-00-01T00:00:00.000Z",
        "2026-04-31T00:00:00.000Z",
        "1999-12-31T23:59:59.999Z",
        "2000-01-01T00:00:00.000Z",
        "2099-12-31T23:59:59.999Z",
        "2100-01-01T00:00:00.000Z",
        "2026-11-26T16:49:28.5\u00b22Z",
    ],
)
def test_times_decode_alike_natively(time: str) -> None:
    accepted = assert_native_same(_token_value(time, input_tokens=3))
    assert accepted == (reference_row(_token_value(time, input_tokens=3)) is not None)


def test_the_extension_is_built() -> None:
    # CI builds it (`make setup` fails without it); a skip here would let every test
    # below pass by not running.
    assert AVAILABLE, WHY_UNAVAILABLE


def test_the_extension_imports_outside_the_repository(tmp_path: Path) -> None:
    # `meterline run` is a console script: its sys.path holds no repository. A
    # top-level extension imported only where the working directory was the
    # repository (as this suite's is), so the processor silently took the Python
    # path for anyone running it elsewhere. -P: no working directory on sys.path.
    code = (
        "from schemas.native_decode import AVAILABLE, WHY_UNAVAILABLE\n"
        "print(AVAILABLE, WHY_UNAVAILABLE)"
    )
    child = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "True \n"


def test_every_bench_token_event_is_accepted_natively() -> None:
    # Without this a decoder that refuses everything would pass every test above, and
    # one that sends a common shape back would silently cost the speed it exists for.
    from bench.data import EventStream, encode

    values = [v for _, v in encode(EventStream(seed=5, now_ms=1_795_000_000_000).take(2_000))]
    accepted = sum(assert_native_same(v) for v in values)
    tokens = [i for i, v in enumerate(values) if orjson.loads(v)["type"] == TOKENS]
    assert accepted == len(tokens) > 1_500
    # In one batch too (the processor's case): exactly the other event types go back.
    batch = decode_columns(values)
    assert batch.accepted.to_pylist() == tokens
    assert batch.fallback == sorted(set(range(len(values))) - set(tokens))


@pytest.mark.parametrize("data", [*TOKEN_PARTS, {"output_tokens": 10**12 + 1}])
def test_token_parts_at_their_totals_decode_alike_natively(data: dict[str, int]) -> None:
    value = _token_value("2026-11-26T16:49:28.592Z", **data)
    # Accepted exactly when the reference accepts: the part rules are in Rust, and an
    # event at its totals must not be sent back for nothing.
    assert assert_native_same(value) == (reference_row(value) is not None)


def test_a_batch_keeps_rows_in_order_and_sends_the_rest_to_python() -> None:
    good = [_token_value("2026-11-26T16:49:28.592Z", input_tokens=i) for i in range(5)]
    values = [good[0], b"not json", good[1], good[2], _token_value("bad"), good[3], good[4]]
    batch = decode_columns(values)
    assert batch.fallback == [1, 4]
    assert batch.accepted.to_pylist() == [0, 2, 3, 5, 6]
    assert batch.columns["input_tokens"].to_pylist() == [0, 1, 2, 3, 4]
    assert batch.columns["data"].to_pylist() == good


def test_a_label_combination_the_rules_refuse_goes_to_python() -> None:
    bad_source = orjson.loads(_token_value("2026-11-26T16:49:28.592Z"))
    bad_source["source"] = "a b"  # not a URI-reference: checked by _labels_ok, in Python
    values = [_token_value("2026-11-26T16:49:28.592Z"), orjson.dumps(bad_source)]
    batch = decode_columns(values)
    assert batch.fallback == [1]
    assert batch.accepted.to_pylist() == [0]
    assert batch.columns["source"].to_pylist() == ["/s"]


def test_a_value_that_is_not_bytes_fails_the_batch_with_a_catchable_error() -> None:
    # The processor catches it and decodes the whole batch in Python.
    with pytest.raises(NativeDecodeError, match="PyBytes"):
        decode_columns([_token_value("2026-11-26T16:49:28.592Z"), "a str"])  # type: ignore[list-item]


def test_any_sequence_of_values_decodes_like_a_list() -> None:
    values = (_token_value("2026-11-26T16:49:28.592Z"), b"not json")
    batch = decode_columns(values)
    assert batch.accepted.to_pylist() == [0] and batch.fallback == [1]


def test_holding_the_gil_decodes_the_same() -> None:
    from bench.data import EventStream, encode

    values = [v for _, v in encode(EventStream(seed=7, now_ms=1_795_000_000_000).take(300))]
    free, held = decode_columns(values), decode_columns(values, release_gil=False)
    assert free.fallback == held.fallback and free.combos == held.combos
    assert all(free.columns[n].equals(held.columns[n]) for n in VALUE_COLUMNS)


def test_an_event_without_a_media_type_has_an_empty_one_in_its_combination() -> None:
    with_media = orjson.loads(_token_value("2026-11-26T16:49:28.592Z"))
    with_media["datacontenttype"] = "application/json"
    batch = decode_columns([_token_value("2026-11-26T16:49:28.592Z"), orjson.dumps(with_media)])
    rows = [batch.combos[i] for i in batch.combo.to_pylist()]
    assert [r[1] for r in rows] == ["", "application/json"]
    assert [r[2] for r in rows] == ["openai", "openai"]  # the canonical provider


def test_a_rust_panic_is_a_catchable_error_and_the_interpreter_goes_on() -> None:
    # pyo3 raises a panic as PanicException, a BaseException that the processor's
    # `except Exception` would miss: decode_columns' wrapper turns it into
    # NativeDecodeError. With `panic = "abort"` in Cargo.toml the process would die
    # mid-commit instead: in a child process, so that regression fails this test
    # rather than killing the whole test session.
    code = (
        "from schemas import meterline_native\n"
        "from schemas.native_decode import NativeDecodeError, _native, decode_columns\n"
        "from tests.schemas.test_fast_decode_differential import _token_value\n"
        "try:\n"
        "    _native(meterline_native._panic_for_tests, 'a decoder bug')\n"
        "except NativeDecodeError as error:\n"
        "    print(error)\n"
        "print(decode_columns([_token_value('2026-11-26T16:49:28.592Z')]).fallback)\n"
    )
    root = Path(__file__).parents[2]  # the child imports tests.* from the repository
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "native decode panicked: a decoder bug\n[]\n"
