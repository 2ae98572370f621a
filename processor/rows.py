"""Build the column-oriented batch for usage_events from decoded, priced events.

Columns, not row objects: both sinks insert column lists directly, which is
several times faster than row strings (docs/design.md#clickhouse).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from operator import attrgetter, itemgetter
from typing import Any

from pricing.base import Priced
from processor.decode import Decoded
from schemas.usage import (
    TOKEN_FIELDS,
    CallUsage,
    ChargeUsage,
    ImageUsage,
    TokenUsage,
    UnitsUsage,
    UsageData,
)
from sinks.base import EVENT_COLUMNS

ONE = Decimal(1)
ZERO = Decimal(0)
# The columns are Decimal(38, 12). Rounding here, half-even and explicit, makes
# the stored value deterministic instead of leaving it to the engine's cast.
SCALE = Decimal("1e-12")
# ... in a context as precise as the column: the default one (28 digits) raised
# InvalidOperation, and stopped the processor, for any cost of 10**16 and up,
# which the column holds. A value the column cannot hold still raises.
COLUMN_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
_NO_TOKENS = (0,) * len(TOKEN_FIELDS)
_NOT_MEASURED = ("", "", 0, 0)


class EventColumns:
    """usage_events rows being collected for one insert, built column by column.

    ``add`` does only the per-event work that can fail (the two roundings, and
    the general path of the rare non-token types) and keeps the event: a row
    that raises is left out whole and its record dead-lettered, as before.
    ``columns`` then builds each column in one pass over the batch (``map`` of an
    attribute getter, in C) and the columns that are constant for token events
    (images .. charge_currency, price_book, processed_at) as ``[value] * n``:
    no 38-value tuple per event and no transpose (issue 17: ~3.5 µs per event
    before).
    """

    def __init__(self) -> None:
        self._items: list[Decoded] = []
        self._priced: list[Priced] = []
        self._cost: list[Decimal] = []
        self._price: list[Decimal] = []
        self._books: list[str] = []  # one per event, as add() is given; one value in practice
        self._now: list[int] = []
        # Index in this batch -> (head, estimated, call) of an event that is not a
        # plain TokenUsage (images, units, charges, custom, subclasses): built in add().
        self._other: dict[int, tuple[tuple[Any, ...], int, tuple[Any, ...]]] = {}
        self._columns: dict[str, list[Any]] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Decoded, priced: Priced, price_book: str, now_ms: int) -> None:
        # Everything that can raise comes before the first append: a failing event
        # leaves no partial row (the pipeline dead-letters it, "row_failed").
        cost = priced.cost_usd.quantize(SCALE, context=COLUMN_CONTEXT)
        # Without a rate card the price IS the cost (one object): one rounding
        # (~0.4 µs) instead of two.
        price = (
            cost
            if priced.price_usd is priced.cost_usd
            else priced.price_usd.quantize(SCALE, context=COLUMN_CONTEXT)
        )
        usage = item.usage
        if type(usage) is not TokenUsage:
            self._other[len(self._items)] = (_other_head(item), 0, _call_outcome(usage))
        self._items.append(item)
        self._priced.append(priced)
        self._cost.append(cost)
        self._price.append(price)
        self._books.append(price_book)
        self._now.append(now_ms)

    @property
    def columns(self) -> dict[str, list[Any]]:
        if self._columns is None or len(self._columns["id"]) != len(self._items):
            self._columns = self._build()
        return self._columns

    def _build(self) -> dict[str, list[Any]]:
        items = self._items
        n = len(items)
        if n == 0:
            return {name: [] for name in EVENT_COLUMNS}
        envelopes = list(map(_ENVELOPE, items))
        usages = list(map(_USAGE, items))
        records = list(map(_RECORD, items))
        priced = self._priced
        # Every event as a plain TokenUsage first; then the few others (images,
        # units, charges, custom: ~6% of the bench data) are written over at their
        # positions, a stand-in with the token columns' defaults taking their place
        # in the first pass. The values are read from each usage's __dict__ (where
        # pydantic keeps a model's fields) in one C call per event and transposed
        # in C: a pydantic attribute read costs ~100 ns, 16 of them per event was
        # most of the row building.
        other = self._other
        fields = list(map(_DICT, usages))
        if other:
            for i in other:
                fields[i] = _STAND_IN
        token_values = list(zip(*map(_TOKEN_VALUES, fields), strict=True))
        head = [
            *map(list, token_values[:_HEAD_END]),
            [0] * n,  # images
            [""] * n,
            [""] * n,
            ["token"] * n,
            [ONE] * n,  # quantity
            [ZERO] * n,  # charge_amount
            [""] * n,
        ]
        call = list(map(list, token_values[_HEAD_END:-1]))
        estimated = [1 if flag else 0 for flag in token_values[-1]]
        for i, (values, flag, outcome) in other.items():
            for column, value in zip(head, values, strict=True):
                column[i] = value
            estimated[i] = flag
            for column, value in zip(call, outcome, strict=True):
                column[i] = value
        columns = [
            list(map(_TENANT, items)),
            list(map(_ID, envelopes)),
            list(map(_SOURCE, envelopes)),
            list(map(_TYPE, envelopes)),
            [s or "" for s in map(_SUBJECT, envelopes)],
            list(map(_TIME, items)),
            *head,
            self._cost[:],  # copies: a later add() must not change a batch handed out
            self._price[:],
            [1 if p.priced else 0 for p in priced],
            estimated,
            list(map(_MATCHED, priced)),
            self._books[:],
            list(map(_TOPIC, records)),
            list(map(_PARTITION, records)),
            list(map(_OFFSET, records)),
            list(map(_INGESTED, records)),
            self._now[:],
            list(map(_METADATA, usages)),  # the usage's own dict: sinks only read it
            list(map(_VALUE, records)),  # the logged bytes: a Decoded record always has a value
            list(map(_SOURCE_OF_PRICE, priced)),
            *call,
        ]
        return dict(zip(EVENT_COLUMNS, columns, strict=True))


_ENVELOPE = attrgetter("envelope")
_USAGE = attrgetter("usage")
_RECORD = attrgetter("record")
_TENANT = attrgetter("tenant")
_TIME = attrgetter("time_ms")
_ID = attrgetter("id")
_SOURCE = attrgetter("source")
_TYPE = attrgetter("type")
_SUBJECT = attrgetter("subject")
_MATCHED = attrgetter("matched_model")
_SOURCE_OF_PRICE = attrgetter("source")
_TOPIC = attrgetter("topic")
_PARTITION = attrgetter("partition")
_OFFSET = attrgetter("offset")
_INGESTED = attrgetter("timestamp_ms")
_METADATA = attrgetter("metadata")
_VALUE = attrgetter("value")
_DICT = attrgetter("__dict__")
# provider .. output_audio_tokens, then status .. latency_ms and estimated of a
# TokenUsage, in EVENT_COLUMNS order.
_HEAD = ("provider", "model", "feature", "user", *TOKEN_FIELDS)
_HEAD_END = len(_HEAD)
_TOKEN_VALUES = itemgetter(*_HEAD, "status", "error_type", "http_status", "latency_ms", "estimated")

# The token columns' values for an event that is not a TokenUsage (written over
# afterwards). Built from TOKEN_FIELDS: a usage field added there is read from it
# too, where a missing attribute would fail the whole batch's columns.
_STAND_IN: dict[str, Any] = {
    **dict.fromkeys(("provider", "model", "feature", "user"), ""),
    **dict.fromkeys(TOKEN_FIELDS, 0),
    "status": "",
    "error_type": "",
    "http_status": 0,
    "latency_ms": 0,
    "estimated": False,
}


def _call_outcome(usage: UsageData) -> tuple[Any, ...]:
    """status .. latency_ms: measured by a provider wrapper; charges have none."""
    if isinstance(usage, CallUsage):
        return (usage.status, usage.error_type, usage.http_status, usage.latency_ms)
    return _NOT_MEASURED


def _other_head(item: Decoded) -> tuple[Any, ...]:
    """provider .. charge_currency for every type but tokens (the rare ones)."""
    usage = item.usage
    provider = model = unit = image_size = image_quality = currency = ""
    images = 0
    quantity = ONE
    amount = ZERO
    if isinstance(usage, TokenUsage):  # a subclass: take the general path
        provider, model, unit = usage.provider, usage.model, "token"
        tokens = tuple(getattr(usage, f) for f in TOKEN_FIELDS)
        return (
            provider,
            model,
            usage.feature,
            usage.user,
            *tokens,
            0,
            "",
            "",
            "token",
            ONE,
            ZERO,
            "",
        )
    if isinstance(usage, ImageUsage):
        provider, model, unit = usage.provider, usage.model, "image"
        images, image_size, image_quality = usage.images, usage.size, usage.quality
        quantity = Decimal(usage.images)
    elif isinstance(usage, UnitsUsage):
        provider, model, unit, quantity = usage.provider, usage.model, usage.unit, usage.quantity
    elif isinstance(usage, ChargeUsage):
        unit, amount, currency = "charge", usage.amount, usage.currency
    return (
        provider,
        model,
        usage.feature,
        usage.user,
        *_NO_TOKENS,
        images,
        image_size,
        image_quality,
        unit,
        quantity,
        amount,
        currency,
    )
