"""Token events as columns (processor/token_columns.py) give the per-record path's rows, exactly.

The acceptance of the column path: the same batch through ``Pipeline.prepare``
with and without it gives the same rows (every column of the Arrow table but
``processed_at``), the same dead letters with the same reasons and details, the
same duplicate counts and the same keys for the store lookup; and through
``finish`` into the real chDB engine the same stored rows and meters. The batch
mixes the bench's events with everything the column path must hand back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bench.data import EventStream, encode
from bench.workers import headers
from core.log.base import TENANT_HEADER, Record
from pricing import CatalogPriceBook
from processor import pipeline as pipeline_module
from processor import token_columns
from processor.pipeline import LiveTables, Pipeline, Prepared
from schemas import native_decode
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

HORIZON_MS = 35 * 86_400_000


class Collected:
    def __init__(self) -> None:
        self.letters: list[Any] = []

    def publish(self, letters: Any) -> None:
        self.letters.extend(letters)


def _records(now_ms: int) -> list[Record]:
    """2,000 bench events, then one of each kind the column path must hand back."""
    as_logged = tuple(headers(now_ms))
    values = [v for _, v in encode(EventStream(seed=7, now_ms=now_ms).take(2_000))]
    token = next(orjson.loads(v) for v in values if b"usage.tokens" in v)
    data = token["data"]

    def variant(**changes: Any) -> bytes:
        event = {**token, **changes}
        event["id"] = f"{event['id']}-{len(extra)}"
        return orjson.dumps(event)

    extra: list[bytes] = []
    extra.append(variant(data={**data, "metadata": {"team": "a"}}))  # metadata: per record
    extra.append(variant(data={**data, "status": "error", "error_type": "timeout"}))
    failed = {**data, "status": "error", "error_type": "x"}
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens"):
        failed.pop(name, None)
    extra.append(variant(data=failed))  # a failed call: costs nothing
    extra.append(variant(data={**data, "model": "no-such-model-at-all"}))  # unpriced
    extra.append(variant(data={**data, "service_tier": "flex"}))
    extra.append(variant(time="2020-01-01T00:00:00.000Z"))  # beyond the dedupe horizon
    extra.append(variant(time=token["time"].replace("Z", "+00:00")))  # another time form
    no_time = {k: v for k, v in token.items() if k != "time"}
    extra.append(orjson.dumps({**no_time, "id": "no-time"}))  # the ingest time is used
    extra.append(variant(data={**data, "input_tokens": -1}))  # invalid: per record refuses
    extra.append(variant(data={**data, "provider": ""}))  # a label rule refuses
    extra.append(values[3])  # an in-batch duplicate of a bench event
    extra.append(b"{not json")
    records = [
        Record("events", i % 3, i, None, v, as_logged, now_ms)
        for i, v in enumerate([*values, *extra])
    ]
    # No tenant header on one record, another tenant (not known) on another.
    last = len(records)
    without = tuple(h for h in as_logged if h[0] != TENANT_HEADER)
    records.append(Record("events", 0, last, None, variant(), without, now_ms))
    stranger = (*without, (TENANT_HEADER, b"stranger"))
    records.append(Record("events", 1, last + 1, None, variant(), stranger, now_ms))
    return records


def _pipeline(sink: ChdbEngine, native: bool, now_s: float) -> tuple[Pipeline, Collected]:
    letters = Collected()
    known: Callable[[str], bool] = lambda tenant: tenant != "stranger"  # noqa: E731
    pipeline = Pipeline(
        LiveTables(sink),
        CatalogPriceBook(),
        letters,
        horizon_ms=HORIZON_MS,
        known_tenant=known,
        clock=lambda: now_s,
        native=native,
    )
    return pipeline, letters


def _rows(batch: Prepared) -> pa.Table:
    table: pa.Table = batch.rows
    table = table.drop_columns(["processed_at"])
    return table.sort_by([("partition", "ascending"), ("offset", "ascending")])


def _summary(batch: Prepared) -> dict[str, Any]:
    result = batch.result
    return {
        "dead": sorted((d.record.offset, d.reason, d.detail) for d in batch.dead),
        "failed": sorted((k, d.reason, d.detail) for k, d in batch.failed),
        "lookup": sorted(batch.lookup),
        "keys": sorted(zip(batch.row_keys, [r.offset for r in batch.row_records], strict=True)),
        "unpriced": sorted((batch.row_records[r].offset, t) for r, t in batch.unpriced.items()),
        "counts": (result.records, result.duplicates, result.in_batch_duplicates),
        "next": result.next_offsets,
    }


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every token table the column path built."""
    sizes: list[int] = []
    build = token_columns.table

    def table(rows: Any, *args: Any) -> pa.Table:
        sizes.append(len(rows))
        return build(rows, *args)

    monkeypatch.setattr(token_columns, "table", table)
    return sizes


def test_the_native_decoder_is_built_here() -> None:
    # CI builds it (make setup): without it every test below would compare the
    # per-record path with itself.
    assert native_decode.AVAILABLE, native_decode.WHY_UNAVAILABLE


def test_the_column_path_prepares_the_rows_the_per_record_path_does(
    sink: ChdbEngine, spied: list[int]
) -> None:
    now_s = time.time()
    records = _records(int(now_s * 1000))
    slow, _ = _pipeline(sink, native=False, now_s=now_s)
    fast, _ = _pipeline(sink, native=True, now_s=now_s)
    assert fast.native and not slow.native
    expected = slow.prepare(records)
    got = fast.prepare(records)
    assert _summary(got) == _summary(expected)
    assert _rows(got).equals(_rows(expected))
    # The column path did take the bench's token events (~94% of them), not
    # hand everything back: 2,000 bench events, of which > 1,800 are tokens.
    assert sum(spied) > 1_800
    reasons = {d.reason for d in got.dead}
    assert {"invalid_event", "invalid_json", "beyond_dedupe_horizon"} <= reasons
    assert {"missing_tenant", "unknown_tenant"} <= reasons


def test_the_column_path_stores_what_the_per_record_path_stores(tmp_path: Path) -> None:
    now_s = time.time()
    records = _records(int(now_s * 1000))
    stored: dict[bool, Any] = {}
    for native in (False, True):
        sink = ChdbEngine(tmp_path / f"chdb-{native}", "mtest")
        migrate(sink)
        try:
            pipeline, letters = _pipeline(sink, native=native, now_s=now_s)
            first = pipeline.run(records)
            again = pipeline.run(records)  # every candidate is stored now: all duplicates
            rows = sink.sql.query_raw(
                "SELECT * EXCEPT processed_at FROM mtest.usage_events ORDER BY partition, offset",
                "JSONCompact",
            )
            meters = sink.sql.query_raw(
                "SELECT * FROM mtest.usage_meters FINAL ORDER BY ALL", "JSONCompact"
            )
            stored[native] = (
                orjson.loads(rows)["data"],
                orjson.loads(meters)["data"],
                (first.stored, first.duplicates, first.dead, first.unpriced),
                (again.stored, again.duplicates, again.dead),
                sorted((d.record.offset, d.reason) for d in letters.letters),
            )
        finally:
            sink.close()
    assert stored[True] == stored[False]
    assert stored[True][2][0] > 1_800  # rows were stored at all
    assert stored[True][3][0] == 0  # the second run stored nothing


@pytest.mark.parametrize("broken", ["decoder", "pricing", "rows"])
def test_a_failing_column_path_hands_the_batch_to_the_per_record_path(
    sink: ChdbEngine, monkeypatch: pytest.MonkeyPatch, spied: list[int], broken: str
) -> None:
    now_s = time.time()
    records = _records(int(now_s * 1000))
    slow, _ = _pipeline(sink, native=False, now_s=now_s)
    expected = slow.prepare(records)

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise native_decode.NativeDecodeError("a bug (test)")

    if broken == "decoder":
        monkeypatch.setattr(native_decode, "decode_columns", fails)
    elif broken == "pricing":
        monkeypatch.setattr(pipeline_module, "price_token_columns", fails)
    else:
        monkeypatch.setattr(token_columns, "table", fails)  # replaces the spy: it stays []
    fast, _ = _pipeline(sink, native=True, now_s=now_s)
    got = fast.prepare(records)
    assert spied == []  # nothing went the column way ...
    assert _summary(got) == _summary(expected)  # ... and nothing was lost or refused
    assert _rows(got).equals(_rows(expected))


def test_a_handed_back_record_the_per_record_decode_raises_on_is_a_dead_letter(
    sink: ChdbEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    now_s = time.time()
    records = _records(int(now_s * 1000))
    victim = next(r for r in records if b"usage.tokens" in r.value)
    real_prices, real_decode = pipeline_module.price_token_columns, pipeline_module.decode

    def nothing_covered(book: Any, columns: Any) -> Any:
        prices = real_prices(book, columns)
        prices.covered = pa.repeat(pa.scalar(False), len(prices.covered))
        return prices

    def decode(record: Record, mappings: Any = None) -> Any:
        if record is victim:
            raise RuntimeError("decoder bug (test)")
        return real_decode(record, mappings)

    monkeypatch.setattr(pipeline_module, "price_token_columns", nothing_covered)
    monkeypatch.setattr(pipeline_module, "decode", decode)
    fast, _ = _pipeline(sink, native=True, now_s=now_s)
    got = fast.prepare(records)  # no exception out of the batch
    letters = [d for d in got.dead if d.record is victim]
    assert [(d.reason, d.detail) for d in letters] == [
        ("decode_failed", "RuntimeError: decoder bug (test)")
    ]
    assert len(got.row_keys) > 1_800  # the others were priced one by one and kept


def test_a_tenant_check_that_raises_makes_dead_letters_on_both_paths(sink: ChdbEngine) -> None:
    now_s = time.time()
    records = _records(int(now_s * 1000))

    def broken(tenant: str) -> bool:
        raise OSError("the key file is unreadable (test)")

    got = []
    for native in (False, True):
        pipeline = Pipeline(
            LiveTables(sink), CatalogPriceBook(), Collected(), known_tenant=broken, native=native
        )
        got.append(_summary(pipeline.prepare(records)))  # no exception out of the batch
    assert got[1] == got[0]
    assert {reason for _, reason, _ in got[1]["dead"]} >= {"decode_failed"}
