"""Token events as columns: from the log's bytes to usage_events' Arrow rows, no object per event.

The common event (token usage, ~94% of real traffic) is decoded by the native
decoder (``schemas.native_decode``, Rust) straight into Arrow arrays, priced over
those arrays once per price (``pricing.columns``) and turned into the INSERT's
table here. Everything this path is not sure about goes back to the per-record
path (``processor.decode``) as a record index, never to a dead letter: the
decoder only ever accepts, and so does this module (a record without a tenant
header, of a tenant not known, beyond the dedupe horizon, or whose pricing is
not covered, is handed back, and the per-record path decides, with its own
reasons). So every refusal and dead-letter reason still comes from one place.

Used with a writer that takes Arrow rows (``EventWriter.arrow_schema``): chDB's
and the ClickHouse server's (sinks/arrow_rows.py). Issue 17: decode + rows + the
Arrow table cost ~11-12 µs per token event in Python, ~3 here (docs/benchmarks.md,
round 7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.log.base import TENANT_HEADER, Record
from core.types import EventKey
from pricing.columns import ColumnPrices
from schemas import native_decode

log = logging.getLogger(__name__)

# The index of service_tier in a label combination (schemas/native_decode.py).
_TIER = 6


@dataclass
class TokenRows:
    """The token events of one batch that the native decoder accepted, as columns.

    ``at[i]`` is the index in the batch's records of row ``i`` (rising), ``keys[i]``
    its dedupe key. ``columns`` are the decoder's (schemas.native_decode.VALUE_COLUMNS)
    plus ``service_tier``.
    """

    at: list[int]
    tenants: list[str]
    keys: list[EventKey]
    columns: dict[str, pa.Array]

    def __len__(self) -> int:
        return len(self.at)

    def take(self, rows: Sequence[int]) -> TokenRows:
        """These rows (positions in this object: ascending, each once)."""
        if len(rows) == len(self.at):
            return self  # ascending and each once: every row, in order
        index = pa.array(rows, pa.int64())
        return TokenRows(
            [self.at[r] for r in rows],
            [self.tenants[r] for r in rows],
            [self.keys[r] for r in rows],
            {name: array.take(index) for name, array in self.columns.items()},
        )


def split(
    records: Sequence[Record],
    known_tenant: Callable[[str], bool] | None,
    oldest_ms: int | None,
) -> tuple[TokenRows | None, list[int]]:
    """The batch's token rows the native path takes, and the record indexes it hands back.

    An exception from the decoder (a bug, a panic turned into an exception) hands
    the whole batch back: the per-record path is slower, never less exact.
    """
    try:
        batch = native_decode.decode_columns([r.value for r in records])
    except Exception:
        # A bug in the decoder (NativeDecodeError, a Rust panic included) costs this
        # batch the fast path, never the process or a record.
        log.exception("the native decoder failed on a batch; the batch takes the Python path")
        return None, list(range(len(records)))
    back = list(batch.fallback)
    at: list[int] = batch.accepted.to_pylist()
    if not at:
        return None, back
    # The tenant is the record's header, not the event's: the gateway wrote it.
    tenants: list[str] = []
    drop: list[int] = []
    for row, index in enumerate(at):
        raw = records[index].header(TENANT_HEADER)
        if not raw:
            drop.append(row)  # the per-record path dead-letters it: missing_tenant
            tenants.append("")
        else:
            tenants.append(raw.decode("utf-8", "replace"))
    if known_tenant is not None:
        unknown = {t for t in set(tenants) if t and not _known(known_tenant, t)}
        if unknown:
            drop.extend(row for row, t in enumerate(tenants) if t in unknown)
    times = batch.columns["time"]
    if oldest_ms is not None:
        old = pc.indices_nonzero(pc.less(times, oldest_ms)).to_pylist()
        drop.extend(old)  # the per-record path dead-letters them: beyond_dedupe_horizon
    columns = dict(batch.columns)
    tiers = pa.array([c[_TIER] for c in batch.combos], pa.string())
    columns["service_tier"] = tiers.take(batch.combo)
    sources: list[str] = columns["source"].to_pylist()
    ids: list[str] = columns["id"].to_pylist()
    rows = TokenRows(at, tenants, list(zip(tenants, sources, ids, strict=True)), columns)
    if drop:
        gone = set(drop)
        back.extend(at[row] for row in gone)
        back.sort()
        rows = rows.take([row for row in range(len(at)) if row not in gone])
    return (rows if len(rows) else None), back


def _known(known_tenant: Callable[[str], bool], tenant: str) -> bool:
    """False also when the check raises: its rows go back to the per-record path, whose
    admission (inside its per-record try) turns the same exception into a dead letter."""
    try:
        return known_tenant(tenant)
    except Exception:
        return False


def table(
    rows: TokenRows,
    prices: ColumnPrices,
    records: Sequence[Record],
    price_book: str,
    now_ms: int,
    schema: pa.Schema,
) -> pa.Table:
    """usage_events' Arrow table for ``rows`` (all covered by ``prices``), in ``schema``.

    The columns a token row has constant (images .. charge_currency) are what
    processor/rows.py writes for a TokenUsage; tests/processor/test_token_columns.py
    compares the whole table with the per-record path's, column by column.
    """
    n = len(rows)
    mine = [records[i] for i in rows.at]
    arrays: dict[str, Any] = dict(rows.columns)
    arrays["tenant"] = pa.array(rows.tenants, pa.string())
    arrays["topic"] = pa.array([r.topic for r in mine], pa.string())
    arrays["partition"] = pa.array([r.partition for r in mine], pa.int64())
    arrays["offset"] = pa.array([r.offset for r in mine], pa.int64())
    arrays["ingested_at"] = pa.array([r.timestamp_ms for r in mine], pa.int64())
    arrays["images"] = pa.repeat(pa.scalar(0, pa.int64()), n)
    for name in ("image_size", "image_quality", "charge_currency"):
        arrays[name] = pa.repeat(pa.scalar("", pa.string()), n)
    arrays["unit"] = pa.repeat(pa.scalar("token", pa.string()), n)
    one = pa.scalar(1, pa.decimal128(38, 12))
    arrays["quantity"] = pa.repeat(one, n)
    arrays["charge_amount"] = pa.repeat(pa.scalar(0, pa.decimal128(38, 12)), n)
    arrays["cost_usd"] = prices.cost_usd
    arrays["price_usd"] = prices.price_usd
    arrays["priced"] = prices.priced
    arrays["matched_model"] = prices.matched_model
    arrays["price_source"] = prices.price_source
    arrays["price_book"] = pa.repeat(pa.scalar(price_book, pa.string()), n)
    arrays["processed_at"] = pa.repeat(pa.scalar(now_ms, pa.int64()), n)
    out = []
    for field in schema:
        array = arrays[field.name]
        if array.type != field.type:
            array = array.cast(field.type)  # e.g. int64 0/1 kept as int64; strings to binary
        out.append(array)
    return pa.Table.from_arrays(out, schema=schema)


__all__ = ["TokenRows", "split", "table"]
