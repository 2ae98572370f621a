"""With METERLINE_CLICKHOUSE_CLUSTER set, the processor's requests carry the cluster
settings (docs/scaling.md, "ClickHouse cluster"); on a single server they carry none.

Checked on the wire: the HTTP front end records the settings of every request it
receives. It runs one chDB engine, not a cluster (its schema here is the single-node
one: ON CLUSTER DDL cannot run on it), so this proves what is SENT, not what a
cluster does with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import ConfigError
from core.settings import load_settings
from meterline import runtime
from sinks.clickhouse_sink import ClickHouseEngine
from sinks.migrations import migrate
from tests.sinks.test_engines import columns
from tests.support.clickhouse_http import ClickHouseHttp

CLUSTER = {"distributed_foreground_insert": "1", "load_balancing": "in_order"}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path_factory.mktemp("cluster-settings") / "db") as server:
        single = ClickHouseEngine(server.url, "mcluster")
        migrate(single)
        single.close()
        yield server


def _requests_since(front: ClickHouseHttp, start: int) -> list[dict[str, Any]]:
    return front.received()[start:]


def _insert_and_lookup(
    engine: ClickHouseEngine, front: ClickHouseHttp, event_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    start = len(front.received())
    engine.writer().insert(columns([event_id]), f"tok-{event_id}")
    assert engine.key_lookup().stored_keys([("t", "/s", event_id)]) == {("t", "/s", event_id)}
    seen = _requests_since(front, start)
    insert = next(r for r in seen if r["statement"].startswith("INSERT INTO mcluster.usage_events"))
    lookup = next(r for r in seen if "FROM mcluster.usage_event_ids" in r["statement"])
    return insert["settings"], lookup["settings"]


def test_a_cluster_processor_inserts_in_the_foreground_and_reads_the_replica_it_wrote(
    front: ClickHouseHttp,
) -> None:
    settings = load_settings(
        store="clickhouse",
        clickhouse_url=front.url,
        database="mcluster",
        clickhouse_cluster="billing",
        clickhouse_insert_quorum=2,
    )
    # As `meterline processor` builds it (migrate=False: the front end cannot run
    # the ON CLUSTER DDL that the cluster's migrations render).
    engine = runtime.build_engine(settings, migrate=False)
    assert isinstance(engine, ClickHouseEngine)
    try:
        insert, lookup = _insert_and_lookup(engine, front, "on-a-cluster")
    finally:
        engine.close()
    assert insert.items() >= {**CLUSTER, "insert_quorum": "2"}.items()
    # The insert's own guards are still there beside them.
    assert insert["insert_deduplication_token"] == "tok-on-a-cluster"
    assert insert["async_insert"] == "0"
    assert lookup.items() >= CLUSTER.items()


def test_without_a_quorum_setting_no_insert_quorum_is_sent(front: ClickHouseHttp) -> None:
    engine = ClickHouseEngine(front.url, "mcluster", cluster="billing")
    try:
        insert, _ = _insert_and_lookup(engine, front, "no-quorum")
    finally:
        engine.close()
    assert insert.items() >= CLUSTER.items()
    assert "insert_quorum" not in insert


def test_a_single_server_gets_no_cluster_settings(front: ClickHouseHttp) -> None:
    engine = ClickHouseEngine(front.url, "mcluster")
    try:
        insert, lookup = _insert_and_lookup(engine, front, "single")
    finally:
        engine.close()
    for name in (*CLUSTER, "insert_quorum"):
        assert name not in insert and name not in lookup


def test_an_insert_quorum_without_a_cluster_is_refused_naming_both_settings() -> None:
    with pytest.raises(
        ConfigError,
        match="METERLINE_CLICKHOUSE_INSERT_QUORUM needs METERLINE_CLICKHOUSE_CLUSTER",
    ):
        load_settings(store="clickhouse", clickhouse_insert_quorum=2)


def test_an_insert_quorum_below_two_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"METERLINE_CLICKHOUSE_INSERT_QUORUM: .*2"):
        load_settings(store="clickhouse", clickhouse_cluster="billing", clickhouse_insert_quorum=1)
