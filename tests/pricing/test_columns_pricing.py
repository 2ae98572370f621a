"""pricing/columns.py must give, row for row, what the per-event path gives.

The per-event path (the reference here): ``book.price`` + ``book.per_call.adjust``
+ processor/rows.py's half-even rounding to 12 places. Each test compares the
covered rows AND asserts which rows must be covered, so a function that covers
nothing (or too little) fails as surely as one that misprices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, Rounded, localcontext
from typing import Any

import pyarrow as pa
import pytest
from genai_prices import data_snapshot

from bench.data import EventStream
from pricing import BookPriceBook, CatalogPriceBook
from pricing import columns as columns_module
from pricing._yaml import load_yaml
from pricing.book import parse_book
from pricing.columns import COST_TYPE, ColumnPrices, price_token_columns
from pricing.engine import BookPriceBook as Engine
from pricing.fast import FastPricer
from processor.rows import COLUMN_CONTEXT, SCALE
from schemas.usage import MAX_TOKENS, TOKEN_FIELDS, EventType, TokenUsage
from tests.pricing.test_pricing_golden import CASES, JULY_2025

TOKENS = EventType.TOKENS.value
DAY_MS = 86_400_000
NOV_27_2026 = 1_795_737_600_000  # 2026-11-27T00:00:00Z


@dataclass(frozen=True)
class Row:
    usage: TokenUsage
    time_ms: int
    subject: str = ""


@dataclass(frozen=True)
class Expected:
    """The per-event outcome of one row; ``cost`` None = rows.py raised (row dead-lettered)."""

    cost: Decimal | None
    price: Decimal | None
    priced: int
    matched_model: str
    source: str
    fast: bool  # priced exactly by a FastPricer, or not priced at all: must be covered


def _token(**fields: Any) -> TokenUsage:
    return TokenUsage.model_validate(fields)


def _columns(rows: list[Row]) -> dict[str, pa.Array]:
    """The decoder's columns for these events (from the validated usage, as it does)."""
    out: dict[str, pa.Array] = {
        name: pa.array([getattr(r.usage, name) for r in rows], pa.string())
        for name in ("provider", "model", "service_tier", "status", "feature")
    }
    out["subject"] = pa.array([r.subject for r in rows], pa.string())
    out["time"] = pa.array([r.time_ms for r in rows], pa.int64())
    for name in TOKEN_FIELDS:
        out[name] = pa.array([getattr(r.usage, name) for r in rows], pa.int64())
    out["estimated"] = pa.array([int(r.usage.estimated) for r in rows], pa.int64())
    return out


def _reference(book: BookPriceBook, row: Row) -> Expected:
    priced = book.price(TOKENS, row.usage, row.time_ms, row.subject)
    priced = book.per_call.adjust("tenant", row.usage, priced)
    usage = row.usage
    entry = book._tokens.get((usage.provider, usage.model, usage.service_tier))
    pricer = None if entry is None else entry.segment.pricer
    fast = pricer is None or type(pricer) is FastPricer
    # Again with the pricers built (their price / 10**6 may round, by design): does the
    # per-event arithmetic itself round to its 28 digits (even if only zeros go)? Such
    # a row may be left uncovered ("prefer not covered to any doubt"); any other may not.
    with localcontext() as context:
        context.traps[Rounded] = True
        try:
            book.per_call.adjust(
                "tenant", usage, book.price(TOKENS, usage, row.time_ms, row.subject)
            )
        except Rounded:
            fast = False
    try:
        cost = priced.cost_usd.quantize(SCALE, context=COLUMN_CONTEXT)
        price = (
            cost
            if priced.price_usd is priced.cost_usd
            else priced.price_usd.quantize(SCALE, context=COLUMN_CONTEXT)
        )
    except InvalidOperation:
        return Expected(None, None, 0, "", "", False)
    return Expected(
        cost, price, int(priced.priced), priced.matched_model, priced.source, fast and cost >= 0
    )


def _check(
    book: BookPriceBook, rows: list[Row], must_cover: bool = True, near_28_digits: float = 0.0
) -> ColumnPrices:
    """Compare every covered row with the per-event path; every 'fast' row must be covered.

    ``near_28_digits``: the share of 'fast' rows with a count of 10**10 or more that may
    be left uncovered: there a price of 17 significant digits (the catalog has them)
    times the count nears the 28 digits of the per-event Decimal context, and the
    function refuses on a bound (sum of |terms|) rather than on the exact digits.
    """
    result = price_token_columns(book, _columns(rows))
    assert result.cost_usd.type == COST_TYPE and result.price_usd.type == COST_TYPE
    covered = result.covered.to_pylist()
    costs = result.cost_usd.to_pylist()
    prices = result.price_usd.to_pylist()
    flags = result.priced.to_pylist()
    matched = result.matched_model.to_pylist()
    sources = result.price_source.to_pylist()
    huge_fast = huge_uncovered = 0
    for i, row in enumerate(rows):
        expected = _reference(book, row)
        if expected.cost is None:
            assert not covered[i], (i, row)  # rows.py would fail the row: not ours to store
            continue
        if must_cover and expected.fast:
            if max(getattr(row.usage, name) for name in TOKEN_FIELDS) >= 10**10:
                huge_fast += 1
                huge_uncovered += not covered[i]
            else:
                assert covered[i], (i, row, expected)
        if covered[i]:
            got = (costs[i], prices[i], flags[i], matched[i], sources[i])
            want = (
                expected.cost,
                expected.price,
                expected.priced,
                expected.matched_model,
                expected.source,
            )
            assert got == want, (i, row)
    assert huge_uncovered <= near_28_digits * huge_fast, (huge_uncovered, huge_fast)
    return result


def _coverage(result: ColumnPrices) -> float:
    flags: list[bool] = result.covered.to_pylist()
    return sum(flags) / len(flags)


# --- the golden table ------------------------------------------------------------------


def test_golden_token_cases_equal_the_per_event_path_and_are_all_covered() -> None:
    book = CatalogPriceBook()
    rows = [
        Row(_token(provider=provider, model=model, **usage), JULY_2025, "someone")
        for provider, model, usage, _cost in CASES
    ]
    result = _check(book, rows)
    assert _coverage(result) == 1.0
    # And the golden answers themselves (rounded as rows.py rounds).
    for (_p, _m, _u, cost), got in zip(CASES, result.cost_usd.to_pylist(), strict=True):
        assert got == cost.quantize(SCALE, context=COLUMN_CONTEXT)


# --- the whole catalog -----------------------------------------------------------------

DATES = [
    int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000),
    JULY_2025,
    NOV_27_2026 + 3_600_000,
]


def _usage_fields(rnd: random.Random, starts: list[int]) -> list[dict[str, int]]:
    """Zero, the 10**12 bounds, every band edge (start, start + 1) and random counts."""
    out: list[dict[str, int]] = [
        {},
        {"input_tokens": MAX_TOKENS},
        {"output_tokens": MAX_TOKENS},
        {
            "input_tokens": MAX_TOKENS,
            "output_tokens": MAX_TOKENS,
            "cache_read_tokens": MAX_TOKENS // 4,
            "cache_write_tokens": MAX_TOKENS // 4,
            "cache_write_1h_tokens": MAX_TOKENS // 4,
            "input_audio_tokens": MAX_TOKENS // 4,
            "reasoning_tokens": MAX_TOKENS // 2,
            "output_audio_tokens": MAX_TOKENS // 2,
        },
    ]
    for start in starts:
        for n in (start, start + 1):
            out.append({"input_tokens": n, "output_tokens": 7, "cache_read_tokens": n // 3})
    for _ in range(3):
        i = rnd.choice([1, 999, rnd.randint(0, 10**6), rnd.randint(0, MAX_TOKENS)])
        cr = rnd.randint(0, i) if rnd.random() < 0.6 else 0
        cw = rnd.randint(0, i - cr) if rnd.random() < 0.5 else 0
        cw1 = rnd.randint(0, i - cr - cw) if rnd.random() < 0.3 else 0
        audio = rnd.randint(0, i - cr - cw - cw1) if rnd.random() < 0.3 else 0
        o = rnd.randint(0, 100_000)
        r = rnd.randint(0, o) if rnd.random() < 0.5 else 0
        ao = rnd.randint(0, o - r) if rnd.random() < 0.2 else 0
        out.append(
            {
                "input_tokens": i,
                "output_tokens": o,
                "cache_read_tokens": cr,
                "cache_write_tokens": cw,
                "cache_write_1h_tokens": cw1,
                "input_audio_tokens": audio,
                "reasoning_tokens": r,
                "output_audio_tokens": ao,
            }
        )
    return out


def _band_starts(book: BookPriceBook, key: tuple[str, str, str], time_ms: int) -> list[int]:
    entry = book._tokens.get(key) if key in book._tokens else book._entry(key)
    if entry is None:
        return []
    pricer = book._move(entry, time_ms).pricer
    return [start for start, _ in pricer.bands] if type(pricer) is FastPricer else []


def test_every_catalog_token_model_equals_the_per_event_path() -> None:
    book = CatalogPriceBook()
    rnd = random.Random(17)
    rows: list[Row] = []
    bands = 0
    for provider in data_snapshot.get_snapshot().providers:
        for info in provider.models:
            for when in DATES:
                for tier in ("", "batch", "priority", "flex"):
                    key = (provider.id, info.id, tier)
                    starts = _band_starts(book, key, when)
                    bands += len(starts)
                    for fields in _usage_fields(rnd, starts):
                        usage = _token(
                            provider=provider.id, model=info.id, service_tier=tier, **fields
                        )
                        rows.append(Row(usage, when + rnd.randint(0, 3_600_000), "s"))
    rnd.shuffle(rows)  # groups and segments interleaved, as in a real batch
    assert bands > 20  # the tiered models are in
    result = _check(book, rows, near_28_digits=0.01)
    assert _coverage(result) > 0.95


# --- rate cards, tiers, periods, failed calls, unknown models -------------------------

CARD_BOOK = """
models:
  - provider: selfhosted
    model: llama-70b
    prices:
      - input_mtok: 0.20
        output_mtok: 0.60
        requests_kcount: 0.4
      - from: 2026-11-27T00:00:00Z
        input_mtok: 0.15
        output_mtok: 0.45
        requests_kcount: 0.3
        service_tiers:
          batch: {input_mtok: 0.075}
      - from: 2026-11-27T12:00:00Z
        input_mtok: {base: 0.1, tiers: [{start: 1000, price: 0.3}, {start: 5000, price: 0.7}]}
        output_mtok: 0.333333
  - provider: later
    model: future-model
    prices:
      - from: 2027-01-01T00:00:00Z
        input_mtok: 1
        output_mtok: 2
rate_cards:
  "*": {markup_pct: 20}
  acme:
    markup_pct: 10
    discount_pct: 5
    request_fee_usd: 0.0001
    overrides:
      - {model: gpt-4o, feature: support, input_mtok: 2, output_mtok: 8}
      - {model: gpt-4o, input_mtok: 3}
      - {feature: cheap, markup_pct: 0}
      - {model: llama-70b, input_mtok: {base: 0.5, tiers: [{start: 2000, price: 0.9}]}}
  beta:
    discount_pct: 33.3333
    request_fee_usd: 0.000123456789
  plain: {}
"""

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("selfhosted", "llama-70b"),
    ("later", "future-model"),
    ("nobody", "no-such-model"),
]


def _mixed_rows(seed: int, n: int) -> list[Row]:
    """Rate-card subjects, tiers, features, and times either side of a price change
    (2026-11-27T12:00Z in the book), a UTC day boundary, late events, failed calls."""
    rnd = random.Random(seed)
    times = [
        NOV_27_2026 - 1,  # the day before (the previous book period, another catalog day)
        NOV_27_2026,
        NOV_27_2026 + 12 * 3_600_000 - 1,
        NOV_27_2026 + 12 * 3_600_000,
        NOV_27_2026 + DAY_MS - 1,
        NOV_27_2026 + DAY_MS,  # the next UTC day
        NOV_27_2026 - 5 * DAY_MS,  # late
    ]
    rows: list[Row] = []
    for _ in range(n):
        provider, model = rnd.choice(MODELS)
        failed = rnd.random() < 0.1
        i = 0 if failed else rnd.choice([0, 1, 999, 1000, 1001, 2000, 2001, 5000, 5001, 10**6])
        o = 0 if failed else rnd.randint(0, 5000)
        usage = _token(
            provider=provider,
            model=model,
            service_tier=rnd.choice(["", "", "batch", "priority"]),
            feature=rnd.choice(["", "support", "cheap", "chat"]),
            status=rnd.choice(["error", "error", ""])
            if failed
            else rnd.choice(["", "ok", "error"]),
            input_tokens=i,
            output_tokens=o,
            cache_read_tokens=i // 2 if rnd.random() < 0.3 else 0,
            reasoning_tokens=o // 3 if rnd.random() < 0.3 else 0,
        )
        subject = rnd.choice(["acme", "beta", "plain", "anyone", ""])
        rows.append(Row(usage, rnd.choice(times), subject))
    return rows


def _card_book() -> BookPriceBook:
    return BookPriceBook(parse_book(load_yaml(CARD_BOOK)), "test")


def test_rate_cards_tiers_periods_and_day_boundary_in_one_call_equal_the_per_event_path() -> None:
    result = _check(_card_book(), _mixed_rows(5, 3000))
    assert _coverage(result) == 1.0
    # The cases this test is about really occurred: card prices differ from cost,
    # unpriced rows and failed calls are in.
    prices = result.price_usd.to_pylist()
    costs = result.cost_usd.to_pylist()
    assert sum(p != c for p, c in zip(prices, costs, strict=True)) > 1000
    assert 0 < sum(result.priced.to_pylist()) < len(prices)


def test_failed_calls_cost_and_charge_nothing_even_with_a_request_fee() -> None:
    book = _card_book()
    failed = [
        Row(_token(provider=p, model=m, status="error"), NOV_27_2026 + 60_000, subject)
        for p, m in MODELS
        for subject in ("acme", "beta", "")
    ]
    billed = [  # status error WITH usage is billed: the rule is for zero usage only
        Row(_token(provider="selfhosted", model="llama-70b", status="error", output_tokens=1), t)
        for t in (NOV_27_2026 + 60_000,)
    ]
    result = _check(book, failed + billed)
    assert _coverage(result) == 1.0
    assert set(result.cost_usd.to_pylist()[: len(failed)]) == {Decimal(0)}
    assert set(result.price_usd.to_pylist()[: len(failed)]) == {Decimal(0)}
    assert set(result.priced.to_pylist()[: len(failed)]) == {1}
    # The fee of the period (0.3 per thousand requests) plus one output token.
    assert result.cost_usd.to_pylist()[-1] == Decimal("0.0003") + Decimal("0.45") / 10**6


def test_unknown_models_and_models_with_no_price_yet_are_stored_unpriced() -> None:
    book = _card_book()
    rows = [
        Row(_token(provider="nobody", model="no-such-model", input_tokens=5), NOV_27_2026),
        Row(_token(provider="later", model="future-model", input_tokens=5), NOV_27_2026),
        Row(_token(provider="later", model="future-model", input_tokens=5), 1_798_761_600_000),
    ]
    result = _check(book, rows)
    assert result.covered.to_pylist() == [True, True, True]
    assert result.priced.to_pylist() == [0, 0, 1]
    assert result.matched_model.to_pylist()[:2] == ["", ""]


def test_values_the_per_event_decimal_context_would_round_are_not_covered() -> None:
    # 10**12 tokens at a price of 18 significant digits: more than the 28 digits the
    # per-event Decimal arithmetic keeps. Exact integers here would differ from it.
    book = BookPriceBook(
        parse_book(
            load_yaml(
                """
models:
  - provider: huge
    model: m
    prices:
      - input_mtok: 123456.789012345678
        output_mtok: 1
"""
            )
        ),
        "h",
    )
    big = Row(_token(provider="huge", model="m", input_tokens=MAX_TOKENS), NOV_27_2026)
    small = Row(_token(provider="huge", model="m", output_tokens=3), NOV_27_2026 - 5 * DAY_MS)
    result = _check(book, [big, small], must_cover=False)
    assert result.covered.to_pylist() == [False, True]


def test_rounding_to_12_places_is_half_even_on_exact_ties() -> None:
    # 0.0000005 USD per million tokens = 5E-13 per token: n tokens is a tie at 12 places
    # for every odd n; half-even sends 0.5 to 0, 1.5 to 2, 2.5 to 2, 3.5 to 4 (x 1E-12).
    book = BookPriceBook(
        parse_book(
            load_yaml(
                """
models:
  - provider: tiny
    model: m
    prices:
      - input_mtok: 0.0000005
rate_cards:
  half: {markup_pct: 50}
"""
            )
        ),
        "t",
    )
    rows = [
        Row(_token(provider="tiny", model="m", input_tokens=n), NOV_27_2026, subject)
        for subject in ("", "half")
        for n in (1, 3, 5, 7)
    ]
    result = _check(book, rows)
    assert _coverage(result) == 1.0
    ties = [Decimal(v) * Decimal("1E-12") for v in (0, 2, 2, 4)]
    assert result.cost_usd.to_pylist() == ties + ties
    # x 1.5: 0.75, 2.25, 3.75, 5.25 -> 1, 2, 4, 5 (no ties: half-even and half-up agree)
    assert result.price_usd.to_pylist()[4:] == [Decimal(v) * Decimal("1E-12") for v in (1, 2, 4, 5)]


# --- 20k bench events -------------------------------------------------------------------


def _bench_rows(n: int, seed: int = 12) -> list[Row]:
    rows: list[Row] = []
    stream = EventStream(seed=seed, now_ms=NOV_27_2026 + 300_000)
    for event in stream.take(n):
        if event["type"] != TOKENS:
            continue
        when = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        rows.append(
            Row(
                TokenUsage.model_validate(event["data"]),
                int(when.timestamp() * 1000),
                event.get("subject") or "",
            )
        )
    return rows


def test_20k_bench_events_are_all_covered_and_equal_the_per_event_path() -> None:
    rows = _bench_rows(20_000)
    assert len(rows) > 18_000
    result = _check(CatalogPriceBook(), rows)
    assert _coverage(result) == 1.0


def test_20k_bench_events_with_rate_cards_are_all_covered() -> None:
    result = _check(_card_book(), _bench_rows(20_000, seed=3))
    assert _coverage(result) == 1.0


# --- input and books it must not price ------------------------------------------------


def test_a_missing_or_mistyped_column_is_a_clear_error() -> None:
    columns = _columns(_bench_rows(50))
    del columns["model"]
    with pytest.raises(ValueError, match="column 'model' is missing"):
        price_token_columns(CatalogPriceBook(), columns)
    columns = _columns(_bench_rows(50))
    columns["output_tokens"] = columns["output_tokens"].cast(pa.int32())
    with pytest.raises(ValueError, match="column 'output_tokens' must be int64, not int32"):
        price_token_columns(CatalogPriceBook(), columns)
    columns = _columns(_bench_rows(50))
    columns["input_tokens"] = pa.array([None] * len(columns["time"]), pa.int64())
    with pytest.raises(ValueError, match="column 'input_tokens' holds"):
        price_token_columns(CatalogPriceBook(), columns)


def test_counts_the_usage_model_refuses_are_not_covered() -> None:
    # The decoder refuses these; should one slip through, the per-event path would
    # dead-letter it (TokenUsage validation), so it must not be priced here.
    rows = [Row(_token(provider="openai", model="gpt-4o", input_tokens=10), NOV_27_2026)] * 5
    columns = _columns(rows)
    columns["cache_read_tokens"] = pa.array([0, 11, 0, 0, 0], pa.int64())
    columns["reasoning_tokens"] = pa.array([0, 0, 1, 0, 0], pa.int64())  # output is 0
    columns["output_tokens"] = pa.array([0, 0, 0, -1, MAX_TOKENS + 1], pa.int64())
    result = price_token_columns(CatalogPriceBook(), columns)
    assert result.covered.to_pylist() == [True, False, False, False, False]


def test_a_book_that_prices_tokens_its_own_way_is_not_covered() -> None:
    class Doubled(Engine):
        def price(self, event_type: str, usage: Any, time_ms: int, subject: str = "") -> Any:
            return super().price(event_type, usage, time_ms, subject)

    result = price_token_columns(Doubled(), _columns(_bench_rows(50)))
    assert not any(result.covered.to_pylist())


def test_a_rule_on_feature_without_the_feature_column_is_not_covered() -> None:
    rows = [
        Row(_token(provider="openai", model="gpt-4o", input_tokens=9, feature="support"), 0, s)
        for s in ("acme", "beta")
    ]
    columns = _columns(rows)
    del columns["feature"]
    result = price_token_columns(_card_book(), columns)
    # acme's card has rules on feature: unknown without it; beta's has none.
    assert result.covered.to_pylist() == [False, True]


# --- the native decoder's own columns, end to end -------------------------------------


def test_the_native_decoders_columns_price_as_the_per_event_path_does() -> None:
    """Bench records (plus service tiers and failed calls) through decode_columns, with
    service_tier built from the batch's combinations (the decoder has no such column),
    against decode_slow + the per-event path on the same records."""
    import orjson

    from bench.data import encode
    from processor.decode import Decoded, decode_slow
    from schemas.native_decode import AVAILABLE, WHY_UNAVAILABLE, decode_columns
    from tests.schemas.test_fast_decode_differential import record

    assert AVAILABLE, WHY_UNAVAILABLE  # never a skip: a missing decoder must fail here
    rnd = random.Random(9)
    events = EventStream(seed=4, now_ms=NOV_27_2026 + 300_000).take(5_000)
    for event in events:
        if event["type"] == TOKENS and rnd.random() < 0.2:
            event["data"]["service_tier"] = rnd.choice(["batch", "priority", "flex"])
        if event["type"] == TOKENS and rnd.random() < 0.05:
            event["data"] = {**event["data"], "status": "error", "input_tokens": 0}
            event["data"].update(output_tokens=0, cache_read_tokens=0, reasoning_tokens=0)
    values = [v for _, v in encode(events)]
    batch = decode_columns(values)
    assert len(batch.accepted) > 4_000
    columns = dict(batch.columns)
    tiers = pa.array([combo[6] for combo in batch.combos], pa.string())
    columns["service_tier"] = tiers.take(batch.combo)
    book = _card_book()
    result = price_token_columns(book, columns)
    assert _coverage(result) == 1.0
    rows = []
    for index in batch.accepted.to_pylist():
        decoded = decode_slow(record(values[index]), "acme")
        assert isinstance(decoded, Decoded) and type(decoded.usage) is TokenUsage
        rows.append(Row(decoded.usage, decoded.time_ms, decoded.envelope.subject or ""))
    assert {r.usage.service_tier for r in rows} == {"", "batch", "priority", "flex"}
    assert any(r.usage.status == "error" for r in rows)
    for i, row in enumerate(rows):
        expected = _reference(book, row)
        got = (
            result.cost_usd[i].as_py(),
            result.price_usd[i].as_py(),
            result.priced[i].as_py(),
            result.matched_model[i].as_py(),
            result.price_source[i].as_py(),
        )
        assert got == (
            expected.cost,
            expected.price,
            expected.priced,
            expected.matched_model,
            expected.source,
        ), (i, orjson.loads(values[batch.accepted[i].as_py()]))


_TWO_PERIODS = """
models:
  - provider: selfhosted
    model: llama-70b
    prices:
      - input_mtok: 0.20
        output_mtok: 0.60
      - from: 2026-11-27T00:00:00Z
        input_mtok: 0.15
        output_mtok: 0.45
"""


def test_another_worker_moving_the_shared_entry_mid_call_does_not_change_the_bill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """meterline/serve.py runs several workers on ONE book. Here a second worker prices
    a late event (the earlier period) exactly between this call's segment resolution
    and its arithmetic: the batch must still be priced at its own period's prices."""
    change = 1_795_737_600_000  # 2026-11-27T00:00:00Z
    book = BookPriceBook(parse_book(load_yaml(_TWO_PERIODS)), "t")
    usage = {
        "provider": "selfhosted",
        "model": "llama-70b",
        "input_tokens": 1000,
        "output_tokens": 1000,
    }
    late = TokenUsage.model_validate(usage)
    columns: dict[str, pa.Array] = {
        name: pa.array([""] * 3) for name in ("service_tier", "subject", "status", "feature")
    }
    columns["provider"] = pa.array(["selfhosted"] * 3)
    columns["model"] = pa.array(["llama-70b"] * 3)
    columns["time"] = pa.array([change + 3_600_000] * 3, pa.int64())
    for name in TOKEN_FIELDS:
        columns[name] = pa.array([usage.get(name, 0)] * 3, pa.int64())
    real = columns_module._price_segment

    def interleaved(*args: Any) -> None:
        book.price(TOKENS, late, change - 3_600_000)  # the other worker, a late event
        real(*args)

    monkeypatch.setattr(columns_module, "_price_segment", interleaved)
    prices = price_token_columns(book, columns)
    assert prices.covered.to_pylist() == [True] * 3
    # 1000 x 0.15/M + 1000 x 0.45/M (the second period); 0.0008 would be the first's.
    assert [str(v) for v in prices.cost_usd.to_pylist()] == ["0.000600000000"] * 3
