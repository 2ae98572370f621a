"""Build the column-oriented batch for usage_events from decoded, priced events.

Columns, not row objects: both sinks insert column lists directly, which is
several times faster than row strings (docs/design.md#clickhouse).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, cast

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
    """usage_events rows being collected for one insert.

    Each event becomes one tuple in ``EVENT_COLUMNS`` order (one allocation
    instead of 38 dict lookups and appends); ``columns`` transposes them once,
    in C, when the batch is handed to the sink.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._columns: dict[str, list[Any]] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, start: int, stop: int) -> EventColumns:
        """Rows ``start:stop`` as a batch of their own (the halves of a refused insert)."""
        part = EventColumns()
        part._rows = self._rows[start:stop]
        return part

    @property
    def columns(self) -> dict[str, list[Any]]:
        if self._columns is None or len(self._columns["id"]) != len(self._rows):
            if self._rows:
                self._columns = {
                    name: list(values)
                    for name, values in zip(
                        EVENT_COLUMNS, zip(*self._rows, strict=True), strict=True
                    )
                }
            else:
                self._columns = {name: [] for name in EVENT_COLUMNS}
        return self._columns

    def add(self, item: Decoded, priced: Priced, price_book: str, now_ms: int) -> None:
        env = item.envelope
        usage = item.usage
        record = item.record
        kind = type(usage)
        if kind is TokenUsage:
            usage = cast(TokenUsage, usage)  # `type(...) is` above is the (fast) test
            head: tuple[Any, ...] = (
                usage.provider,
                usage.model,
                usage.feature,
                usage.user,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.cache_write_1h_tokens,
                usage.reasoning_tokens,
                usage.input_audio_tokens,
                usage.output_audio_tokens,
                0,  # images
                "",
                "",
                "token",
                ONE,  # quantity
                ZERO,  # charge_amount
                "",
            )
            estimated = 1 if usage.estimated else 0
            call: tuple[Any, ...] = (
                usage.status,
                usage.error_type,
                usage.http_status,
                usage.latency_ms,
            )
        else:
            head, estimated = _other_head(item), 0
            call = _call_outcome(usage)
        value = record.value
        self._rows.append(
            (
                item.tenant,
                env.id,
                env.source,
                env.type,
                env.subject or "",
                item.time_ms,
                *head,
                priced.cost_usd.quantize(SCALE, context=COLUMN_CONTEXT),
                priced.price_usd.quantize(SCALE, context=COLUMN_CONTEXT),
                1 if priced.priced else 0,
                estimated,
                priced.matched_model,
                price_book,
                record.topic,
                record.partition,
                record.offset,
                record.timestamp_ms,
                now_ms,
                dict(usage.metadata),
                value,  # the logged bytes: a Decoded record always has a JSON value
                priced.source,
                *call,
            )
        )


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
