"""ClickHouseEngine's transport: how a batch goes over the wire, and its failures (a
server that cannot be reached is ``StoreUnavailable``: the processor keeps the batch
and retries, never ``StoreError``, which would dead-letter billable events)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import StoreUnavailable
from sinks.arrow_rows import SCHEMA
from sinks.clickhouse_sink import ClickHouseEngine
from sinks.migrations import migrate
from tests.sinks.test_engines import columns
from tests.support.clickhouse_http import ClickHouseHttp, _free_port


def test_a_server_nobody_answers_at_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=r"cannot connect to ClickHouse at 127\.0\.0\.1"):
        ClickHouseEngine(f"http://default:@127.0.0.1:{_free_port()}", "mdown", timeout_s=2)


def test_a_server_gone_between_two_inserts_makes_the_insert_store_unavailable(
    tmp_path: Path,
) -> None:
    with ClickHouseHttp(tmp_path / "db") as front:
        engine = ClickHouseEngine(front.url, "mgone", timeout_s=2)
        migrate(engine)
        writer = engine.writer()
        writer.insert(columns(["before"]), "tok-before")
    with pytest.raises(StoreUnavailable):
        writer.insert(columns(["after"]), "tok-after")
    with pytest.raises(StoreUnavailable):
        engine.key_lookup().stored_keys([("t", "/s", "before")])
    engine.close()


def test_a_batch_goes_to_the_server_as_one_arrow_file(tmp_path: Path) -> None:
    # The same Arrow rows and SELECT as the chDB writer, so the processor's token
    # column path serves the server path too (processor/pipeline.py takes it whenever
    # the writer has an arrow_schema). Its values are checked on every engine by
    # tests/sinks/test_engines.py.
    with ClickHouseHttp(tmp_path / "db") as front:
        engine = ClickHouseEngine(front.url, "marrow")
        migrate(engine)
        writer = engine.writer()
        assert writer.arrow_schema == SCHEMA
        rows = writer.encode(columns(["a1", "a2"]))
        assert isinstance(rows, pa.Table)
        start = len(front.received())
        writer.insert_encoded(rows, "tok-arrow")
        sent = [r for r in front.received()[start:] if r["statement"].startswith("INSERT")]
        stored = engine.sql.query_rows(
            "SELECT id, toString(time) AS time, toString(cost_usd) AS cost FROM "
            "marrow.usage_events ORDER BY id"
        )
        engine.close()
    assert len(sent) == 1
    assert sent[0]["statement"].startswith("INSERT INTO marrow.usage_events (`tenant`, `id`")
    assert sent[0]["data_format"] == "Arrow"
    assert sent[0]["settings"]["insert_deduplication_token"] == "tok-arrow"
    assert stored == [
        {"id": i, "time": "2025-01-01 00:00:00.123", "cost": "0.000000000001"} for i in ("a1", "a2")
    ]


def test_the_http_front_reads_every_block_of_a_streamed_insert(tmp_path: Path) -> None:
    # clickhouse-connect sends an insert as one LZ4 frame per 4,096-row block; the
    # front read only the first frame, so any test inserting more through it lost rows.
    with ClickHouseHttp(tmp_path / "db") as front:
        engine = ClickHouseEngine(front.url, "mblocks")
        engine.client.command("CREATE TABLE mblocks.n (v UInt64, s String) ENGINE = Memory")
        engine.client.insert("mblocks.n", [[i, "x" * 100] for i in range(10_000)], ["v", "s"])
        assert engine.sql.scalar("SELECT count() FROM mblocks.n") == 10_000
        assert engine.sql.scalar("SELECT sum(v) FROM mblocks.n") == sum(range(10_000))
        engine.close()
