"""ClickHouseEngine's transport failures: a server that cannot be reached is
``StoreUnavailable`` (the processor keeps the batch and retries), never ``StoreError``
(which would dead-letter billable events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import StoreUnavailable
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
