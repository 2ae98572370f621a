"""Price token events held as Arrow columns, exactly as the per-event path does (issue 17).

The native decoder hands the processor one Arrow array per field, with no Python
object per event. ``price_token_columns`` prices those rows once per group of rows
that share a price: (provider, model, service tier), then the price segment of
their times (a book period, a catalog day), then, when a rate card applies,
(card, feature). The per-event path it must equal, row for row, is::

    priced = book.price("io.meterline.usage.tokens", usage, time_ms, subject)
    priced = book.per_call.adjust(tenant, usage, priced)
    # processor/rows.py: cost and price rounded half-even to 12 places

What it covers, and what it hands back (``covered`` False) to that path:

- catalog and book prices whose pricer is a ``FastPricer`` (linear per usage field,
  by input-token band), with the book's own cached pricers and segment resolution
  (``BookPriceBook._entry`` / ``_move`` / ``_pricer`` / ``_card_pricer``), so the
  matching, effective dating and service-tier rules are not re-implemented here;
- unknown models (stored unpriced) and models with no price at that time;
- rate cards: markup, discount, per-request fee, and overrides with token prices
  when their customer pricer is a ``FastPricer`` too;
- the failed-call rule of pricing/per_call.py (``status == "error"`` with zero
  usage: cost 0, price 0, priced). The client-price rule never applies: these
  rows carry no ``unit_prices`` (the decoder refuses them).

Not covered: genai-prices ``FallbackPricer`` shapes, a negative cost (the book's
``usage_not_priceable``), counts outside 0..MAX_TOKENS, a value the per-event
``Decimal`` context (28 digits) would round or the 38-digit column could not
hold, a rate card whose rule filters on ``feature`` when no ``feature`` column
is given, and any price book that is not a plain ``BookPriceBook``.

The arithmetic is on Python-integer semantics: every price is turned into an
exact integer of a common scale (``c * 10**S``) and every row's value is
``sum(C_k * n_k) + C_fee``, in numpy int64 when a bound proves no intermediate
exceeds 2**62, else in numpy object arrays of Python ints (exact, slower, only
for huge values). Integers rather than Arrow decimal128 compute because their
exactness needs no argument (Arrow's decimal kernels grow the precision with
every add and refuse past 38 digits) and the half-even rounding to 12 places is
four lines that a test can break. The per-event path computes in ``Decimal``'s
default context (28 significant digits): a row whose bound shows that context
could round is not covered, so "exact" and "as the per-event path" agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pricing.base import PriceBook
from pricing.engine import BookPriceBook, Segment, _TokenEntry
from pricing.fast import FastPricer
from pricing.per_call import PerCall
from pricing.ratecard import Card
from schemas.usage import MAX_TOKENS, TOKEN_FIELDS

COST_TYPE = pa.decimal128(38, 12)
_STRINGS = ("provider", "model", "service_tier", "subject", "status")
_INTS = ("time", *TOKEN_FIELDS)
_OPTIONAL_STRINGS = ("feature",)  # needed only when a rate-card rule filters on it
# int64 arithmetic is used only when every intermediate is proven below this bound;
# a value past 2**63 would wrap silently and bill a wrong amount.
_INT64_BOUND = 2**62
# Decimal's default context (the per-event path): a result of more significant
# digits is rounded there, so the exact value here would differ from it.
_CONTEXT_BOUND = 10**28
# The per-row test of that bound is done in float64: a sum of at most 10 positive
# terms, each within ~2**-52 relative of the exact one, so a 1e-9 margin keeps an
# estimate just under the bound from hiding a true size just over it.
_CONTEXT_ESTIMATE = 1e28 * (1 - 1e-9)
# Below this group bound the rows' own sizes are not worked out: 12 more digits of a
# markup x discount x fee still leave them under 28 digits (_times / _plus check).
_SIZES_FROM = 10**16
# decimal128(38, 12): rows.py's quantize raises (the row is dead-lettered) past it.
_COLUMN_BOUND = 10**38
_FRACTION = 12  # digits after the point in the cost and price columns
_LOW_64 = 2**64 - 1

Ints = npt.NDArray[Any]  # int64, or object (Python ints) when int64 could overflow


@dataclass
class ColumnPrices:
    """One value per input row; where ``covered`` is False the other values mean nothing."""

    covered: pa.Array  # bool: False = price this row the per-event way
    cost_usd: pa.Array  # decimal128(38, 12), rounded as processor/rows.py rounds
    price_usd: pa.Array  # decimal128(38, 12)
    priced: pa.Array  # int64 0/1 (Priced.priced)
    matched_model: pa.Array  # string (Priced.matched_model)
    price_source: pa.Array  # string (Priced.source)

    def take(self, index: pa.Array) -> ColumnPrices:
        """These rows' prices, in this order."""
        return ColumnPrices(
            self.covered.take(index),
            self.cost_usd.take(index),
            self.price_usd.take(index),
            self.priced.take(index),
            self.matched_model.take(index),
            self.price_source.take(index),
        )


@dataclass(frozen=True)
class _Exact:
    """Row values ``values / 10**scale``, exact.

    ``bound`` (an int) is at least every |value| and intermediate of every row, in
    10**-scale units: it chooses int64 or Python ints. The per-event ``Decimal``
    of a row has its own, smaller scale (``row_scale``: the largest scale of the
    prices its nonzero counts meet); ``size`` (float64, over-estimated) bounds the
    coefficients of its intermediates at that scale, and ``ok`` is False where it
    reaches the per-event context's 28 digits (that arithmetic would round).
    """

    values: Ints
    scale: int
    bound: int
    row_scale: Ints | None  # None: ``bound`` alone proves every row exact
    size: npt.NDArray[np.float64] | None
    ok: npt.NDArray[np.bool_]


class _Out:
    """The result columns being filled, group by group, at the rows' own positions."""

    def __init__(self, n: int) -> None:
        self.covered = np.zeros(n, dtype=np.bool_)
        # decimal128 as Arrow lays it out: low, high 64-bit words, little-endian ("<i8"
        # on any machine: a big-endian word order would store other amounts).
        self.cost = np.zeros((n, 2), dtype="<i8")
        self.price = np.zeros((n, 2), dtype="<i8")
        self.priced = np.zeros(n, dtype=np.int64)
        self.label = np.zeros(n, dtype=np.int32)
        self.labels: dict[str, int] = {"": 0}

    def unpriced(self, rows: Ints) -> None:
        """Stored unpriced: cost 0, price 0 (UNKNOWN_MODEL, NO_PRICE_YET)."""
        self.covered[rows] = True

    def money(self, rows: Ints, cost: Ints, price: Ints, label: str) -> None:
        """Covered, priced rows; ``cost``/``price`` are 12-place scaled integers below 10**38."""
        self.covered[rows] = True
        self.priced[rows] = 1
        self.label[rows] = self.labels.setdefault(label, len(self.labels))
        self.cost[rows] = _words(cost)
        self.price[rows] = _words(price)

    def columns(self) -> ColumnPrices:
        n = len(self.covered)
        labels = pa.array(list(self.labels), pa.string())
        return ColumnPrices(
            covered=pa.array(self.covered, pa.bool_()),
            cost_usd=pa.Array.from_buffers(COST_TYPE, n, [None, pa.py_buffer(self.cost)]),
            price_usd=pa.Array.from_buffers(COST_TYPE, n, [None, pa.py_buffer(self.price)]),
            priced=pa.array(self.priced, pa.int64()),
            matched_model=labels.take(pa.array(self.label, pa.int32())),
            price_source=pa.repeat(pa.scalar("book", pa.string()), n),
        )


def price_token_columns(book: PriceBook, columns: Mapping[str, pa.Array]) -> ColumnPrices:
    """Price every row as the per-event path would, or mark it not covered.

    ``columns``: one row per token event, no nulls: the string columns
    ``provider`` (canonical), ``model``, ``service_tier``, ``subject``, ``status``,
    optionally ``feature``; the int64 columns ``time`` (epoch ms, UTC) and the 8
    ``TOKEN_FIELDS``. Raises ``ValueError`` naming the column when one is missing,
    of another type or length, or holds a null.
    """
    n = _check(columns)
    out = _Out(n)
    if n == 0 or not _plain(book):
        return out.columns()
    assert isinstance(book, BookPriceBook)  # _plain checked the methods are the engine's
    counts = np.stack([_ints(columns[name]) for name in TOKEN_FIELDS])
    times = _ints(columns["time"])
    in_range = _valid_usage(counts)
    cards = _RowCards(book, columns)
    table = pa.table(
        {
            "provider": columns["provider"],
            "model": columns["model"],
            "service_tier": columns["service_tier"],
            "row": pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    groups = table.group_by(["provider", "model", "service_tier"], use_threads=False).aggregate(
        [("row", "list")]
    )
    keys = zip(
        groups["provider"].to_pylist(),
        groups["model"].to_pylist(),
        groups["service_tier"].to_pylist(),
        strict=True,
    )
    for key, group in zip(keys, _lists(groups["row_list"]), strict=True):
        rows = group[in_range[group]]
        if len(rows) == 0:
            continue
        if key not in book._tokens:
            book._entry(key)  # the engine's own match, once per (provider, model, tier)
        entry = book._tokens[key]
        if entry is None:
            out.unpriced(rows)  # UNKNOWN_MODEL
            continue
        _price_entry(book, entry, rows, times, counts, cards, out)
    _failed_calls(columns, counts, out)
    return out.columns()


def _check(columns: Mapping[str, pa.Array]) -> int:
    """The row count; a ValueError naming the first bad column."""
    lengths: set[int] = set()
    for name in (*_STRINGS, *_INTS, *_OPTIONAL_STRINGS):
        if name not in columns:
            if name in _OPTIONAL_STRINGS:
                continue
            raise ValueError(f"price_token_columns: column {name!r} is missing")
        array = columns[name]
        wanted = pa.int64() if name in _INTS else pa.string()
        if not isinstance(array, pa.Array) or array.type != wanted:
            got = array.type if isinstance(array, pa.Array) else type(array).__name__
            raise ValueError(f"price_token_columns: column {name!r} must be {wanted}, not {got}")
        if array.null_count:
            raise ValueError(f"price_token_columns: column {name!r} holds {array.null_count} nulls")
        lengths.add(len(array))
    if len(lengths) > 1:
        raise ValueError(f"price_token_columns: columns of different lengths {sorted(lengths)}")
    return lengths.pop()


def _valid_usage(counts: Ints) -> Ints:
    """Rows TokenUsage would accept: counts in 0..MAX_TOKENS, parts within their totals.

    The decoder refuses the others; a row that slipped through never reaches book.price
    on the per-event path (a dead letter there), so it is not ours to price.
    """
    inside = ((counts >= 0) & (counts <= MAX_TOKENS)).all(axis=0)
    field = {name: counts[k] for k, name in enumerate(TOKEN_FIELDS)}
    cached = field["cache_read_tokens"] + field["cache_write_tokens"]
    cached = cached + field["cache_write_1h_tokens"] + field["input_audio_tokens"]
    produced = field["reasoning_tokens"] + field["output_audio_tokens"]
    parts = (cached <= field["input_tokens"]) & (produced <= field["output_tokens"])
    result: Ints = np.asarray(inside & parts)
    return result


def _plain(book: PriceBook) -> bool:
    """The engine's own token pricing and per-call rules, not a subclass's changed ones.

    This function reproduces BookPriceBook's token path; a subclass that prices
    differently would be billed by the engine's rules here: not covered instead.
    """
    kind = type(book)
    return (
        isinstance(book, BookPriceBook)
        and all(
            getattr(kind, name) is getattr(BookPriceBook, name)
            for name in ("price", "_price_tokens", "_entry", "_move", "_pricer", "_card_pricer")
        )
        and type(book.per_call) is PerCall
    )


def _ints(array: pa.Array) -> Ints:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)


def _lists(lists: pa.ChunkedArray) -> Iterator[Ints]:
    """Each group's row positions, from the group_by's list column."""
    combined = lists.combine_chunks()
    offsets = combined.offsets.to_numpy()
    values = combined.flatten().to_numpy()
    offsets = offsets - offsets[0]  # flatten() starts at the first list's values
    for start, end in pairwise(offsets.tolist()):
        yield values[start:end]


class _RowCards:
    """Each row's rate card (index into ``cards``, -1 = none) and, where a rule of
    that card filters on it, its feature (a code into ``features``)."""

    def __init__(self, book: BookPriceBook, columns: Mapping[str, pa.Array]) -> None:
        self.cards: list[Card] = []
        self.any = bool(book._cards) or book._default_card is not None
        self.card_of_row: Ints = np.zeros(0, dtype=np.int64)
        self.features: list[str] = []
        self.feature_of_row: Ints | None = None
        self.by_feature: Ints = np.zeros(1, dtype=np.bool_)
        if not self.any:
            return
        subjects = pc.dictionary_encode(columns["subject"])
        ids: list[int] = []
        for subject in subjects.dictionary.to_pylist():
            card = book._cards.get(subject, book._default_card)
            found = next((i for i, c in enumerate(self.cards) if c is card), None)
            if card is not None and found is None:
                found = len(self.cards)
                self.cards.append(card)
            ids.append(-1 if found is None else found)
        self.card_of_row = np.asarray(ids, dtype=np.int64)[_ints(subjects.indices.cast(pa.int64()))]
        # Per card, then False for "no card" (index -1 reads the last element).
        self.by_feature = np.asarray(
            [any(rule.feature for rule in card.rules) for card in self.cards] + [False]
        )
        if "feature" in columns:
            features = pc.dictionary_encode(columns["feature"])
            self.features = features.dictionary.to_pylist()
            self.feature_of_row = _ints(features.indices.cast(pa.int64()))

    def groups(self, rows: Ints) -> Iterator[tuple[Card | None, str | None, Ints]]:
        """(card, feature, positions in ``rows``) per distinct pair. The feature is ""
        for a card with no rule on it (one group, whatever the feature), None when
        a rule filters on it and there is no ``feature`` column."""
        cards = self.card_of_row[rows]
        none = len(self.features)  # the code of "feature irrelevant or unknown"
        features = np.full(len(rows), none, dtype=np.int64)
        if self.feature_of_row is not None:
            features = np.where(self.by_feature[cards], self.feature_of_row[rows], none)
        keys = cards * (none + 1) + features
        distinct, inverse = np.unique(keys, return_inverse=True)
        for index, key in enumerate(distinct.tolist()):
            card_id, feature_id = divmod(key, none + 1)  # card -1: divmod floors
            card = self.cards[card_id] if card_id >= 0 else None
            feature: str | None = ""
            if feature_id < none:
                feature = self.features[feature_id]
            elif card is not None and self.by_feature[card_id]:
                feature = None
            yield card, feature, np.flatnonzero(inverse == index)


def _price_entry(
    book: BookPriceBook,
    entry: _TokenEntry,
    rows: Ints,
    times: Ints,
    counts: Ints,
    cards: _RowCards,
    out: _Out,
) -> None:
    """One (provider, model, tier): its rows split by price segment.

    The segment of the latest row first: it holds the live traffic, found with one
    pass and no sort; then the rest (late events, the other side of a day boundary
    or price change: few rows) in time order.
    """
    # The engine's own segment resolution (book period, catalog day, time-of-day
    # cuts): the same code the per-event path runs, so the same prices and label.
    # Each segment is taken ONCE, as the value _move returns (an immutable Segment):
    # another worker moving the shared entry meanwhile cannot change it under us.
    at = times[rows]
    segment = book._move(entry, int(at.max()))
    inside = (at >= segment.start) & (at < segment.end)
    if not inside.any():
        return  # a segment that does not hold its own time: leave the rows uncovered
    _price_segment(book, segment, rows[inside], counts, cards, out)
    rows = rows[~inside]
    rows = rows[np.argsort(times[rows], kind="stable")]
    at = times[rows]
    pos = 0
    while pos < len(rows):
        segment = book._move(entry, int(at[pos]))
        end = int(np.searchsorted(at, segment.end, side="left"))
        if not segment.start <= at[pos] < segment.end or end <= pos:
            return  # as above
        _price_segment(book, segment, rows[pos:end], counts, cards, out)
        pos = end


def _price_segment(
    book: BookPriceBook, segment: Segment, rows: Ints, counts: Ints, cards: _RowCards, out: _Out
) -> None:
    pricer = segment.pricer
    if pricer is None:
        out.unpriced(rows)  # NO_PRICE_YET
        return
    if type(pricer) is not FastPricer:
        return  # genai-prices' own calculation per event: not covered
    usage = counts[:, rows]
    cost = _linear(pricer, usage)
    cost12, stored = _round12(cost)
    # A negative cost is the book's usage_not_priceable (stored unpriced): left to it.
    ok = stored & np.asarray(cost.values >= 0, dtype=np.bool_)
    if not cards.any:
        out.money(rows[ok], cost12[ok], cost12[ok], segment.label)
        return
    for card, feature, part in cards.groups(rows):
        if card is None:
            price12, keep = cost12[part], ok[part]
        else:
            priced = _card_price(book, segment, card, feature, _subset(cost, part), usage[:, part])
            if priced is None:
                continue
            price12, keep = priced[0], priced[1] & ok[part]
        out.money(rows[part][keep], cost12[part][keep], price12[keep], segment.label)


def _card_price(
    book: BookPriceBook,
    segment: Segment,
    card: Card,
    feature: str | None,
    cost: _Exact,
    usage: Ints,
) -> tuple[Ints, npt.NDArray[np.bool_]] | None:
    """The customer price of rows sharing (card, feature), rounded, and which rows
    are exact; None = none covered."""
    if feature is None:
        return None  # a rule of the card filters on the feature, which we were not given
    rule = card.rule_for(segment.names, feature)
    if rule is None or not rule.token_prices:
        # Card.marked_up: (list price x markup) x discount + fee.
        markup = rule.markup if rule is not None and rule.markup is not None else card.markup
        price = _times(cost, markup)
    else:
        assert segment.prices is not None  # a pricer comes only with prices
        customer = book._card_pricer(card, rule, segment.prices)
        if type(customer) is not FastPricer:
            return None
        price = _linear(customer, usage)
    # Card.finish: x discount + fee.
    return _round12(_plus(_times(price, card.discount), card.fee))


def _failed_calls(columns: Mapping[str, pa.Array], counts: Ints, out: _Out) -> None:
    """per_call's rule: a failed call with zero usage costs and charges nothing, priced."""
    error = np.asarray(pc.equal(columns["status"], "error").to_numpy(zero_copy_only=False))
    failed = error & ~counts.any(axis=0) & out.covered
    out.cost[failed] = 0
    out.price[failed] = 0
    out.priced[failed] = 1


# --- exact integer arithmetic -----------------------------------------------------------


def _int_of(value: Decimal) -> tuple[int, int]:
    """(integer, scale) with value == integer / 10**scale, exactly; scale >= 0."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"price {value} is not a finite number")
    integer = int("".join(map(str, digits)) or "0")
    if exponent > 0:
        integer *= 10**exponent
    return (-integer if sign else integer), max(0, -exponent)


def _scaled(value: Decimal, scale: int) -> int:
    integer, own = _int_of(value)
    return int(integer * 10 ** (scale - own))


def _widen(values: Ints, bound: int) -> Ints:
    """Python ints when ``bound`` could overflow int64 arithmetic."""
    if bound >= _INT64_BOUND and values.dtype != object:
        return values.astype(object)
    return values


@dataclass(frozen=True)
class _Prepared:
    """A FastPricer's prices as integers of one scale, per band (base first), built once."""

    scale: int
    starts: Ints  # band thresholds, ascending; band b > 0 is starts[b - 1]
    ints: tuple[tuple[int, ...], ...]  # [band][k]: price k x 10**scale, k = 8 is per request
    scales: tuple[tuple[int, ...], ...]  # [band][k]: the price's own scale


# repr((base, bands)) -> prepared: keyed by the prices as written, as the book keys its
# pricers (by repr), so no pricer is kept alive here. Not by Decimal equality: 1.0 and
# 1.00 are equal but give the per-event result another scale, which the 28-digit check
# reads. Cleared when large (a rebuilt book's new prices).
_PREPARED: dict[str, _Prepared] = {}
_PREPARED_MAX = 4096


def _prepared(pricer: FastPricer) -> _Prepared:
    key = repr((pricer.base, pricer.bands))
    cached = _PREPARED.get(key)
    if cached is not None:
        return cached
    bands = sorted(pricer.bands, key=lambda band: band[0])
    table = [pricer.base, *(coefs for _start, coefs in bands)]
    scales = tuple(tuple(_int_of(c)[1] for c in coefs) for coefs in table)
    scale = max(max(row) for row in scales)
    prepared = _Prepared(
        scale=scale,
        starts=np.asarray([start for start, _coefs in bands], dtype=np.int64),
        ints=tuple(tuple(_scaled(c, scale) for c in coefs) for coefs in table),
        scales=scales,
    )
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.clear()
    _PREPARED[key] = prepared
    return prepared


def _linear(pricer: FastPricer, usage: Ints) -> _Exact:
    """FastPricer.cost of every column of ``usage`` (8 x rows), exact.

    Band by input tokens: the highest ``start`` below the row's input tokens, else
    the base prices (FastPricer.cost's rule, ``input_tokens > start``).
    """
    prep = _prepared(pricer)
    ints = prep.ints
    rows = usage.shape[1]
    most = [int(m) for m in usage.max(axis=1)] if rows else [0] * len(TOKEN_FIELDS)
    # Every partial sum and product of every row is at most this (in 10**-scale units).
    bound = max(
        abs(coefs[-1]) + sum(abs(c) * m for c, m in zip(coefs, most, strict=False))
        for coefs in ints
    )
    kind: Any = object if bound >= _INT64_BOUND else np.int64
    band: Ints | None = None
    if len(ints) > 1:
        band = np.searchsorted(prep.starts, usage[0], side="left")  # starts < input_tokens

    def column(k: int) -> Ints | int:
        """Price k of each row: one int when every band has the same."""
        values = [coefs[k] for coefs in ints]
        if band is None or len(set(values)) == 1:
            return values[0]
        return np.asarray(values, dtype=kind)[band]

    total: Ints = np.zeros(rows, dtype=kind) + column(len(TOKEN_FIELDS))
    for k in range(len(TOKEN_FIELDS)):
        coef = column(k)
        if isinstance(coef, int) and coef == 0:
            continue
        total = total + coef * usage[k].astype(kind)
    if bound < _SIZES_FROM:
        # Every row's coefficients are below the bound, far from 28 digits: all exact,
        # and a markup, discount and fee (_times, _plus) cannot bring them there.
        return _Exact(total, prep.scale, bound, None, None, np.ones(rows, dtype=np.bool_))
    row_scale, size = _sizes(prep, usage, band)
    # Below 10**28 (digits of the coefficient at its scale) the per-event Decimal
    # arithmetic is exact, so it equals ours; above, it rounds: not covered.
    return _Exact(total, prep.scale, bound, row_scale, size, size < _CONTEXT_ESTIMATE)


def _sizes(prep: _Prepared, usage: Ints, band: Ints | None) -> tuple[Ints, npt.NDArray[np.float64]]:
    """Per row: the scale of its per-event Decimal, and its intermediates' coefficients."""
    rows = usage.shape[1]
    which = band if band is not None else np.zeros(rows, dtype=np.int64)

    def column(k: int) -> tuple[npt.NDArray[np.float64], Ints]:
        sizes = np.asarray([float(abs(coefs[k])) for coefs in prep.ints])[which]
        return sizes, np.asarray([row[k] for row in prep.scales], dtype=np.int64)[which]

    size, row_scale = column(len(TOKEN_FIELDS))
    for k in range(len(TOKEN_FIELDS)):
        coef_size, own = column(k)
        # FastPricer.cost always adds the input and output terms, the others only
        # for a nonzero count: a term's scale sets the scale of the Decimal sum.
        row_scale = np.maximum(row_scale, own if k < 2 else np.where(usage[k] != 0, own, 0))
        size = size + coef_size * usage[k].astype(np.float64)
    return row_scale, size * np.power(10.0, row_scale - prep.scale)  # in the row's units


def _subset(value: _Exact, part: Ints) -> _Exact:
    return _Exact(
        value.values[part],
        value.scale,
        value.bound,
        None if value.row_scale is None else value.row_scale[part],
        None if value.size is None else value.size[part],
        value.ok[part],
    )


def _times(value: _Exact, factor: Decimal) -> _Exact:
    integer, scale = _int_of(factor)
    bound = value.bound * abs(integer)
    values = _widen(value.values, bound) * integer
    if value.size is None or value.row_scale is None:
        # No row sizes (the bound was small): still exact below 28 digits; past them
        # (a factor of 10**12 digits: not a real card) nothing is covered.
        ok = value.ok if bound < _CONTEXT_BOUND else value.ok & False
        return _Exact(values, value.scale + scale, bound, None, None, ok)
    size = value.size * float(abs(integer))
    ok = value.ok & (size < _CONTEXT_ESTIMATE)  # else the per-event product is rounded
    return _Exact(values, value.scale + scale, bound, value.row_scale + scale, size, ok)


def _plus(value: _Exact, addend: Decimal) -> _Exact:
    integer, scale = _int_of(addend)
    common = max(value.scale, scale)
    shift, other = 10 ** (common - value.scale), integer * 10 ** (common - scale)
    bound = value.bound * shift + abs(other)
    values = _widen(value.values, bound) * shift + other
    if value.size is None or value.row_scale is None:
        ok = value.ok if bound < _CONTEXT_BOUND else value.ok & False  # as in _times
        return _Exact(values, common, bound, None, None, ok)
    row_scale = np.maximum(value.row_scale, scale)
    size = value.size * np.power(10.0, row_scale - value.row_scale) + float(
        abs(integer)
    ) * np.power(10.0, row_scale - scale)
    ok = value.ok & (size < _CONTEXT_ESTIMATE)  # else the per-event sum is rounded
    return _Exact(values, common, bound, row_scale, size, ok)


def _round12(value: _Exact) -> tuple[Ints, npt.NDArray[np.bool_]]:
    """Half-even to 12 places, as rows.py's quantize(SCALE, COLUMN_CONTEXT), scaled by
    10**12; and ``ok`` without the rows the column (38 digits) cannot hold (rows.py
    raises there, and the row is dead-lettered)."""
    if value.scale <= _FRACTION:
        factor = 10 ** (_FRACTION - value.scale)
        bound = value.bound * factor
        rounded = _widen(value.values, bound) * factor
    else:
        divisor = 10 ** (value.scale - _FRACTION)
        bound = value.bound
        values = _widen(value.values, max(bound, 2 * divisor))
        quotient = values // divisor  # floor: remainder in [0, divisor) for either sign
        remainder = values - quotient * divisor
        half = divisor // 2
        up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
        rounded = quotient + up.astype(np.int64)
    ok = value.ok
    if bound >= _COLUMN_BOUND:
        ok = ok & np.asarray(np.abs(rounded) < _COLUMN_BOUND, dtype=np.bool_)
    result: Ints = rounded
    return result, ok


def _words(values: Ints) -> Ints:
    """12-place scaled integers as decimal128's little-endian (low, high) 64-bit words."""
    if values.dtype == object:
        low = (values & _LOW_64).astype(np.uint64).view(np.int64)
        high = (values >> 64).astype(np.int64)
    else:
        values = values.astype(np.int64)
        low, high = values, values >> 63
    return np.stack([low, high], axis=1)


__all__ = ["ColumnPrices", "price_token_columns"]
