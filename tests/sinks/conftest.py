"""One store engine per test module, parametrized over every ClickHouse path meterline has.

- ``chdb``: ``ChdbEngine``, chDB in this process;
- ``clickhouse-http``: ``ClickHouseEngine`` through clickhouse-connect and the HTTP
  front end over chDB (tests/support/clickhouse_http.py; read its docstring for
  what it does not emulate);
- ``clickhouse-server``: ``ClickHouseEngine`` against a real ClickHouse server in
  Docker (testcontainers), skipped with the reason when no Docker engine answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sinks.base import Engine
from sinks.migrations import migrate
from tests.support.clickhouse_http import ClickHouseHttp

ENGINES = ["chdb", "clickhouse-http", "clickhouse-server"]
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


def clickhouse_server() -> Iterator[str]:
    """A real server's URL, or a visible skip naming why there is none."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine: {type(exc).__name__}: {exc}"[:300])
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(CLICKHOUSE_IMAGE, port=8123) as server:
        host, port = server.get_container_host_ip(), server.get_exposed_port(8123)
        yield f"http://{server.username}:{server.password}@{host}:{port}"


@pytest.fixture(scope="module", params=ENGINES)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    database = "mtest"
    if request.param == "chdb":
        from sinks.chdb_sink import ChdbEngine

        chdb = ChdbEngine(tmp_path_factory.mktemp("chdb") / "db", database)
        migrate(chdb)
        yield chdb
        chdb.close()
        return
    from sinks.clickhouse_sink import ClickHouseEngine

    if request.param == "clickhouse-http":
        with ClickHouseHttp(tmp_path_factory.mktemp("clickhouse-http") / "db") as front:
            server = ClickHouseEngine(front.url, database)
            migrate(server)
            yield server
            server.close()
        return
    for url in clickhouse_server():
        server = ClickHouseEngine(url, database)
        migrate(server)
        yield server
        server.close()
