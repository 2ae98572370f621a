# ruff: noqa: E501 - the table of refused statements reads best one case a line
"""``POST /v1/sql`` runs one read, nothing else (issue 11), on the real engine (chDB).

Each refused statement is one that worked before this guard: it dropped a table,
wrote a file, or read ``/etc/passwd``. Every test also proves the tables are
still there and still hold their row afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from core.errors import StoreError
from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from ingest.app import Gateway, create_app
from query import Reader
from query import routes as read_routes
from query.readonly import read_only_statement
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

TOKEN = "admin-token"
TABLES = {"usage_events", "usage_meters", "usage_event_ids", "usage_meters_daily"}


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    sink = ChdbEngine(tmp_path_factory.mktemp("chdb") / "db", "meterline")
    migrate(sink)
    sink.sql.query_raw(
        "INSERT INTO usage_meters (tenant, window_start, subject, model, events, cost_usd) "
        "VALUES ('t1', '2025-01-01 00:00:00', 'cust', 'gpt-4o', 1, 0.5)"
    )
    yield sink
    sink.close()


@pytest.fixture
async def client(sink: ChdbEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    EmbeddedAdmin(tmp_path / "log").ensure_topic("events", 1)
    producer = EmbeddedProducer(tmp_path / "log", "events")
    gateway = Gateway(
        producer, tenant="t1", max_body_bytes=10_000, max_event_bytes=10_000, max_batch_events=10
    )
    app = create_app(gateway, mounts=read_routes(Reader(sink.sql, gateway.guard, sql_token=TOKEN)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gw",
        headers={"authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client
    producer.close()


async def sql(client: httpx.AsyncClient, query: str, fmt: str = "JSONEachRow") -> httpx.Response:
    return await client.post("/v1/sql", params={"format": fmt}, content=query.encode())


def assert_intact(sink: ChdbEngine) -> None:
    tables = {
        r["name"]
        for r in sink.sql.query_rows("SELECT name FROM system.tables WHERE database = 'meterline'")
    }
    assert tables >= TABLES
    assert sink.sql.scalar("SELECT sum(events) FROM usage_meters") == 1


REFUSED = [
    # (statement, problem code, words the detail must contain)
    ("SELECT 1; DROP TABLE meterline.usage_meters", "sql-not-single-statement", "one statement"),
    ("select 1; drop table usage_meters;", "sql-not-single-statement", "drop table usage_meters"),
    ("SELECT 1 -- harmless\n; DROP TABLE usage_meters", "sql-not-single-statement", "DROP"),
    ("SELECT 1 /* ; */ ; TRUNCATE TABLE usage_events", "sql-not-single-statement", "TRUNCATE"),
    ("DROP TABLE usage_meters", "sql-not-read-only", "DROP TABLE"),
    ("drop table meterline.usage_events", "sql-not-read-only", "DROP TABLE"),
    ("TRUNCATE TABLE usage_events", "sql-not-read-only", "TRUNCATE"),
    ("CREATE TABLE x (a Int8) ENGINE = Memory", "sql-not-read-only", "CREATE TABLE"),
    ("ALTER TABLE usage_meters DELETE WHERE 1", "sql-not-read-only", "ALTER TABLE"),
    ("INSERT INTO usage_meters (tenant) VALUES ('x')", "sql-not-read-only", "INSERT INTO"),
    ("INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV') SELECT 1", "sql-not-read-only", "INSERT"),
    ("WITH 1 AS x INSERT INTO usage_meters (tenant) SELECT 'x'", "sql-not-read-only", "INSERT"),
    ("EXPLAIN PIPELINE INSERT INTO usage_meters SELECT * FROM usage_meters", "sql-not-read-only", "INSERT"),
    ("SET readonly = 0", "sql-not-read-only", "SET readonly"),
    ("SYSTEM DROP MARK CACHE", "sql-not-read-only", "SYSTEM"),
    ("OPTIMIZE TABLE usage_meters FINAL", "sql-not-read-only", "OPTIMIZE TABLE"),
    ("SELECT 1 SETTINGS readonly = 0", "sql-settings-not-allowed", "SETTINGS"),
    ("SELECT * FROM (SELECT 1 SETTINGS readonly = 0)", "sql-settings-not-allowed", "SETTINGS"),
    ("SELECT 1 INTO OUTFILE '/tmp/meterline-outfile.csv'", "sql-not-read-only", "INTO OUTFILE"),
    ("SELECT 1 FORMAT JSON", "sql-format-clause", "?format="),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "sql-function-not-allowed", "file()"),
    ("select file('/etc/passwd')", "sql-function-not-allowed", "function file()"),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')", "sql-function-not-allowed", "url()"),
    ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "sql-function-not-allowed", "remote()"),
    ("SELECT * FROM remoteSecure('h:9440', db, t)", "sql-function-not-allowed", "remoteSecure()"),
    ("SELECT * FROM s3('http://h/b/k.csv')", "sql-function-not-allowed", "s3()"),
    ("SELECT * FROM hdfs('hdfs://h/f', 'CSV', 'a String')", "sql-function-not-allowed", "hdfs()"),
    ("SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')", "sql-function-not-allowed", "mysql()"),
    ("SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')", "sql-function-not-allowed", "postgresql()"),
    ("SELECT * FROM jdbc('jdbc:x', 't')", "sql-function-not-allowed", "jdbc()"),
    ("SELECT * FROM odbc('DSN=x', 't')", "sql-function-not-allowed", "odbc()"),
    ("SELECT * FROM executable('x.sh', 'TSV', 'a String')", "sql-function-not-allowed", "executable()"),
    ("SELECT * FROM input('a String')", "sql-function-not-allowed", "input()"),
    ("SELECT * FROM cluster('default', system.one)", "sql-function-not-allowed", "cluster()"),
    ("SELECT * FROM Python(sql)", "sql-function-not-allowed", "Python()"),
    # Hidden one level down: a subquery, an IN, a JOIN, a DESCRIBE.
    ("SELECT * FROM numbers(3) WHERE number IN (SELECT 1 FROM file('/etc/passwd'))", "sql-function-not-allowed", "file()"),
    ("SELECT * FROM usage_meters AS m JOIN url('http://h/x', 'CSV', 'a String') AS u ON 1", "sql-function-not-allowed", "url()"),
    ("WITH (SELECT file('/etc/passwd')) AS p SELECT p", "sql-function-not-allowed", "file()"),
    ("DESCRIBE file('/etc/passwd')", "sql-function-not-allowed", "file()"),
    ("  ", "sql-empty", "no SQL"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("statement", "code", "detail"), REFUSED)
async def test_statement_that_is_not_one_read_is_refused_naming_the_rule(
    client: httpx.AsyncClient, sink: ChdbEngine, statement: str, code: str, detail: str
) -> None:
    response = await sql(client, statement)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/" + code)
    assert detail in body["detail"]
    assert_intact(sink)


@pytest.mark.anyio
async def test_outfile_and_file_functions_leave_no_file_and_leak_nothing(
    client: httpx.AsyncClient, sink: ChdbEngine, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    wrote = await sql(client, f"SELECT * FROM usage_meters INTO OUTFILE '{target}'")
    write_through_function = await sql(
        client, f"INSERT INTO FUNCTION file('{target}', 'CSV') SELECT * FROM usage_meters"
    )
    read = await sql(client, "SELECT file('/etc/passwd')")
    assert (wrote.status_code, write_through_function.status_code, read.status_code) == (
        400,
        400,
        400,
    )
    assert not target.exists()
    assert "root:" not in read.text


README_QUERIES = [
    "SELECT subject, model, sum(events), sum(cost_usd) FROM usage_meters GROUP BY ALL ORDER BY ALL",
    "SELECT * FROM usage_meters_daily",
    "SELECT count() AS n FROM usage_events",
    "select subject, sum(cost_usd) as c from usage_meters group by subject -- per customer",
    "WITH sum(events) AS n SELECT subject, n FROM usage_meters GROUP BY subject",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT number FROM numbers(3) WHERE number IN (SELECT toUInt64(events) FROM usage_meters)",
    "SHOW TABLES",
    "DESCRIBE TABLE usage_events",
    "EXPLAIN SELECT count() FROM usage_events",
]


@pytest.mark.anyio
@pytest.mark.parametrize("statement", README_QUERIES)
async def test_reads_the_docs_use_still_answer(client: httpx.AsyncClient, statement: str) -> None:
    response = await sql(client, statement)
    assert response.status_code == 200, response.text
    assert response.content.strip()


@pytest.mark.anyio
async def test_read_answers_the_rows_in_the_requested_format(client: httpx.AsyncClient) -> None:
    response = await sql(
        client,
        "SELECT subject, sum(events) AS events, sum(cost_usd) AS cost FROM usage_meters GROUP BY subject",
    )
    csv = await sql(client, "SELECT subject FROM usage_meters", "CSVWithNames")
    assert [orjson.loads(line) for line in response.content.splitlines()] == [
        {"subject": "cust", "events": "1", "cost": "0.5"}
    ]
    assert csv.text == '"subject"\n"cust"\n'


def test_statement_runs_with_readonly_set_per_query_not_on_the_session(sink: ChdbEngine) -> None:
    statement = read_only_statement(sink.sql, "SELECT getSetting('readonly') AS r")
    assert statement.endswith("SETTINGS readonly = 1")
    assert sink.sql.query_rows(statement) == [{"r": 1}]
    # The processor's inserts share the session: it must stay writable.
    assert sink.sql.scalar("SELECT getSetting('readonly')") == 0


@pytest.mark.parametrize(
    "write",
    [
        "INSERT INTO usage_meters (tenant) SELECT 'x'",
        "DROP TABLE usage_meters",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    ],
)
def test_engine_itself_refuses_writes_and_external_reads_under_readonly(
    sink: ChdbEngine, write: str
) -> None:
    """The second guard, alone: if the parse-tree check ever missed one, readonly=1 holds."""
    with pytest.raises(StoreError, match="READONLY"):
        sink.sql.query_raw(f"{write} SETTINGS readonly = 1")
    assert_intact(sink)
