"""Hostile input through the real gateway and processor: refused at the edge or billed once.

A client may send anything. Hypothesis generates batches that mix valid events with
every kind of hostile value (the reported poison cases, huge and exotic numbers,
control characters, far and malformed times, deep nesting, random JSON, odd ids),
posts them to a real ``meterline run`` (embedded log, chDB), and checks what a
billing system owes its tenants:

- no request is answered with a 5xx, and the process never dies;
- every accepted event is stored exactly once, or dead-lettered with a reason the
  gateway could not have known (only ``beyond_dedupe_horizon``: the gateway and the
  processor apply the same schema, so no other reason may appear);
- a valid event sent afterwards still reaches ``usage_meters``, and
  ``meterline verify`` finds the meters equal to the events.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MeterlineFactory
from tests.support.cli import meterline_cli
from tests.support.unstorable import UNSTORABLE

NOW = datetime.now(UTC)
_ids = itertools.count()

# Strings with what breaks naive code: controls (C0, C1), NUL, bidi, surrogates-free
# astral characters, quotes and backslashes (SQL literals), very long ones.
nasty_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
) | st.sampled_from(["", "\x00", "a\nb", "\x85", "\u202e", "'", "\\'", "🙂" * 300, "x" * 5000])
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["1e400", "1_000", "١٢", "NaN", "-1", "0.0000000000001", " 1", "+1", "1."]),
    nasty_text,
)
times = st.one_of(
    # Mostly recent (inside the dedupe horizon), so most accepted events are stored.
    st.integers(min_value=0, max_value=20 * 86_400_000).map(
        lambda ms: (NOW - timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.isoformat() + "Z"
    ),
    nasty_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=20,
)
deep = st.integers(min_value=1, max_value=600).map(
    lambda depth: {"quantity": 1, "nested": orjson.loads("[" * depth + "]" * depth)}
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "io.meterline.usage.tokens",
                "io.meterline.usage.units",
                "io.meterline.usage.image",
                "io.meterline.usage.charge",
                "com.acme.custom",
            ]
        )
    )
    data: dict[str, Any] = {
        "io.meterline.usage.tokens": {
            "provider": draw(st.sampled_from(["openai", "anthropic"]) | nasty_text),
            "model": draw(st.sampled_from(["gpt-4o", "claude-sonnet-4-5"]) | nasty_text),
            "input_tokens": draw(st.integers(0, 5000) | numbers),
            "output_tokens": draw(st.integers(0, 5000) | numbers),
        },
        "io.meterline.usage.units": {
            "unit": draw(st.just("page") | nasty_text),
            "quantity": draw(st.just("2") | numbers),
        },
        "io.meterline.usage.image": {
            "provider": "openai",
            "model": "dall-e-3",
            "images": draw(st.integers(1, 4) | numbers),
        },
        "io.meterline.usage.charge": {
            "amount": draw(st.just("4.99") | numbers),
            "currency": draw(st.sampled_from(["USD", "XXX", "ZZZ"]) | nasty_text),
        },
        "com.acme.custom": draw(st.just({"quantity": 1}) | deep | json_values),
    }[kind]
    if isinstance(data, dict) and draw(st.booleans()):
        data["metadata"] = draw(st.dictionaries(nasty_text, nasty_text, max_size=3))
    event: dict[str, Any] = {
        "specversion": "1.0",
        # Unique per drawn event (so "first copy wins" needs no bookkeeping) yet hostile.
        "id": f"h{next(_ids)}-{draw(nasty_text)}",
        "source": draw(st.just("/hostile") | nasty_text),
        "type": kind,
        "subject": draw(st.just("acme") | nasty_text),
        "time": draw(times),
        "data": data,
    }
    return event


def valid_units(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/hostile",
        "type": "io.meterline.usage.units",
        "subject": "acme",
        "time": NOW.isoformat().replace("+00:00", "Z"),
        "data": {"unit": "page", "quantity": "2"},
    }


def test_hostile_batches_are_refused_or_billed_exactly_once_and_never_stop_the_pipeline(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    stack = meterline_factory(data_dir, METERLINE_LOG="embedded", METERLINE_STORE="chdb")
    accepted: list[dict[str, Any]] = []

    def post(batch: list[dict[str, Any]]) -> None:
        # json, not orjson: orjson writes at most ~254 levels, and deep nesting is a case.
        response = stack.post(batch, body=json.dumps(batch).encode())
        assert response.status_code < 500, (response.status_code, response.text, batch)
        assert response.status_code in (202, 400, 413), (response.status_code, response.text)
        if response.status_code == 202:
            accepted.extend(batch)

    # The reported cases first, each alone and each beside a valid event.
    for _name, event, _problems in UNSTORABLE:
        post([event])
        post([valid_units(f"valid-beside-{next(_ids)}"), event])

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(events(), min_size=1, max_size=4))
    def send(batch: list[dict[str, Any]]) -> None:
        post(batch)

    send()
    assert stack.proc is not None and stack.proc.poll() is None, "the process died"
    post([valid_units("sentinel")])
    stack.wait_caught_up(timeout_s=120)
    assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200

    # Every accepted event exactly once, or dead-lettered beyond the horizon.
    rows = stack.sql("SELECT source, id, count() AS n FROM usage_events GROUP BY source, id")
    assert all(int(row["n"]) == 1 for row in rows), [r for r in rows if int(r["n"]) != 1]
    stored = {(row["source"], row["id"]) for row in rows}
    letters = _dead_letters(data_dir)
    dead = {(orjson.loads(x["value"])["source"], x["key"]): x["reason"] for x in letters}
    assert set(dead.values()) <= {"beyond_dedupe_horizon"}, dead
    expected = {(e["source"], e["id"]) for e in accepted}
    assert stored | set(dead) == expected
    assert not stored & set(dead)
    meters = stack.sql(
        "SELECT sum(events) AS n FROM usage_meters WHERE subject = 'acme' AND type = "
        "'io.meterline.usage.units' AND quantity > 0"
    )
    assert int(meters[0]["n"]) >= 1  # the sentinel (at least) reached the meters

    stack.stop()  # chDB: one process per folder; verify opens it itself
    verified = _cli(data_dir, "verify", "--from", "2000-01-01", "--to", "2100-01-01")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return meterline_cli(data_dir, *args)


def _dead_letters(data_dir: Path) -> list[dict[str, Any]]:
    listed = _cli(data_dir, "dlq", "list", "--json", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    return [orjson.loads(line) for line in listed.stdout.splitlines()]
