"""A ClickHouse server (or cluster) through clickhouse-connect.

Same SQL as the chDB sink; only the transport differs. Network failures raise
``StoreUnavailable`` so the processor pauses and retries instead of dropping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from core.errors import StoreError, StoreUnavailable
from core.types import EventKey
from sinks.arrow_rows import TIME_COLUMNS, ArrowRows
from sinks.base import (
    INSERT_SETTINGS,
    LIVE_EVENTS,
    Engine,
    EventTable,
    EventWriter,
    KeyLookup,
)


def cluster_settings(cluster: str | None, insert_quorum: int | None = None) -> dict[str, Any]:
    """What every request to a cluster carries (docs/scaling.md, "ClickHouse cluster").

    - ``distributed_foreground_insert=1``: an INSERT into a Distributed table returns
      only once every shard holds its rows. In the background mode it returns once
      they are queued on the node that took it, and the processor would commit
      offsets for rows no shard has: a node lost then loses billed usage.
    - ``load_balancing='in_order'``: every read and write of every processor goes to
      the first healthy replica of each shard, so the dedupe lookup reads the replica
      the last INSERT wrote. With the default (random) it may read one that has not
      fetched that part yet and store a duplicate send a second time.
    - ``insert_quorum`` (when given): the INSERT returns once that many replicas of
      each shard hold the part, its views' parts included. Equal to the replicas per
      shard, it closes the failover gap ``in_order`` leaves (a lookup on a replica
      that lagged the failed one): every replica then holds every acknowledged row.
    A single server gets none of these (they concern Distributed and Replicated
    tables only).
    """
    if cluster is None:
        return {}
    settings: dict[str, Any] = {"distributed_foreground_insert": 1, "load_balancing": "in_order"}
    if insert_quorum is not None:
        settings["insert_quorum"] = insert_quorum
    return settings


@contextmanager
def _translated(failing: str = "") -> Iterator[None]:
    """clickhouse-connect's errors as meterline's, the one place they are translated.

    ``OperationalError`` (connection refused, timeout, 5xx without a ClickHouse
    error) becomes ``StoreUnavailable``: the processor keeps the batch and retries,
    nothing is dead-lettered for a network blip. Any other ``DatabaseError`` is the
    server refusing the statement or the data: ``StoreError``.
    """
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailable(f"{failing}{exc}") from exc
    except DatabaseError as exc:
        raise StoreError(f"{failing}{exc}") from exc


class ClickHouseEngine(Engine):
    """ONE clickhouse-connect client; the writers and lookups built on it share it."""

    def __init__(
        self,
        url: str,
        database: str = "meterline",
        timeout_s: float = 30.0,
        *,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        verify: bool = True,
        cluster: str | None = None,
        insert_quorum: int | None = None,
    ) -> None:
        """``user``/``password`` win over the URL's; ``ca_cert``/``verify`` apply to https.

        ``cluster``/``insert_quorum``: the settings of ``cluster_settings`` go with
        every request (the migrations' DDL is rendered for the cluster elsewhere).
        """
        self.database = database
        parts = urlsplit(url)
        with _translated(f"cannot connect to ClickHouse at {parts.hostname}: "):
            self.client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=user or unquote(parts.username or "default"),
                password=password if password is not None else unquote(parts.password or ""),
                secure=parts.scheme == "https",
                verify=verify,
                ca_cert=ca_cert,
                # Keep inserts well below Kafka's max.poll.interval.ms (300 s).
                send_receive_timeout=timeout_s,
                # No server-side session: it refuses concurrent queries
                # (SESSION_IS_LOCKED; the client raises before sending), and
                # `--workers` threads and the gateway's SQL endpoint share this
                # client. Nothing here relies on session state: settings go
                # with every request, names are qualified by database.
                autogenerate_session_id=False,
                # Client-wide, so replay's and the index repair's INSERT ... SELECT
                # and verify's reads carry the cluster settings as the writer does.
                settings={
                    "output_format_json_quote_decimals": 1,
                    "output_format_json_quote_64bit_integers": 1,
                    **cluster_settings(cluster, insert_quorum),
                },
            )
        with _translated():
            self.client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        # Unqualified table names in users' SQL resolve in meterline's database.
        self.client.database = database

    def run_sql(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        # ``fmt`` is the DEFAULT output format (the X-ClickHouse-Format request
        # header), as in chDB's session.query(sql, fmt): a statement's own FORMAT
        # wins. Not raw_query(fmt=...), which appends "FORMAT x" to the text: an
        # INSERT ... VALUES then fails (the VALUES parser reads it as a row), so
        # replay could not record its run and verify's repair could not insert.
        with _translated():
            return bytes(
                self.client.raw_query(sql, transport_settings={"X-ClickHouse-Format": fmt})
            )

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return ClickHouseWriter(self, table)

    def key_lookup(self, table: EventTable = LIVE_EVENTS) -> KeyLookup:
        return ClickHouseKeyLookup(self, table)

    def close(self) -> None:
        self.client.close()


class ClickHouseKeyLookup(KeyLookup):
    def __init__(self, engine: ClickHouseEngine, table: EventTable) -> None:
        self.table = table
        self._client = engine.client
        where_run = "" if table.run is None else "run = %(run)s AND "
        source = f"SELECT tenant, source, id FROM {engine.database}.{table.ids} "
        if table.key_hash:
            # The hash first (8 bytes per stored identity), as chDB's lookup does.
            self._sql = (
                f"{source}PREWHERE key_hash IN "
                "(SELECT cityHash64(k.1, k.2, k.3) FROM (SELECT arrayJoin(%(keys)s) AS k)) "
                f"WHERE {where_run}id IN %(ids)s"
            )
        else:
            self._sql = f"{source}WHERE {where_run}id IN %(ids)s"

    def stored_keys(self, keys: Sequence[EventKey]) -> set[EventKey]:
        if not keys:
            return set()
        wanted = set(keys)
        found: set[EventKey] = set()
        for chunk in _key_chunks(sorted(wanted)):
            parameters = {
                "keys": chunk,
                "ids": sorted({k[2] for k in chunk}),
                "run": self.table.run or "",
            }
            with _translated():
                result = self._client.query(self._sql, parameters=parameters)
            found.update(
                (row[0], row[1], row[2])
                for row in result.result_rows
                if (row[0], row[1], row[2]) in wanted
            )
        return found


# The keys are bound into the statement's text (client-side), which the server parses
# only up to max_query_size (256 KiB by default): one lookup of a 50k-event batch is
# ~2 MB of ids, and the server refused it (SYNTAX_ERROR, "Max query size exceeded"),
# so every batch above ~6k events failed and was retried for ever. Chunks of at most
# this many bytes of keys (each written twice: the hash's tuples and the ids; every
# byte counted twice for quotes and escapes) stay far below.
_KEYS_PER_QUERY_BYTES = 48 * 1024


def _key_chunks(keys: list[EventKey]) -> Iterator[list[EventKey]]:
    chunk: list[EventKey] = []
    size = 0
    for key in keys:
        cost = 2 * sum(len(part.encode()) for part in key) + 12  # worst case, see above
        if chunk and size + cost > _KEYS_PER_QUERY_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(key)
        size += cost
    if chunk:
        yield chunk


class ClickHouseWriter(ArrowRows):
    """Rows go as ONE Arrow file per batch: ``INSERT INTO t (cols) FORMAT Arrow``.

    The processor builds the same Arrow table as for chDB (sinks/arrow_rows.py), so its
    token column path serves this path too. Rows sent as Python lists through
    clickhouse-connect's Native writer cost the processor ~2x the CPU per event
    (every value a Python object, every time a datetime). A plain INSERT with data,
    not ``INSERT ... SELECT FROM input()``: block dedup by our token is then the one
    every ClickHouse version applies to inserts (``deduplicate_insert_select`` does
    not come into it), so the few conversions chDB does in its SELECT are made here,
    in Arrow (``_server_table``).
    """

    def __init__(self, engine: ClickHouseEngine, table: EventTable) -> None:
        self.table = table
        self._client = engine.client
        self._target = f"{engine.database}.{table.name}"

    def insert_encoded(self, rows: pa.Table, dedup_token: str) -> None:
        table = _server_table(rows, self.table.run)
        with _translated(f"insert into {self.table.name} failed: "):
            # LZ4-compressed Arrow buffers (the client's write compression).
            self._client.insert_arrow(
                self._target,
                table,
                settings={**INSERT_SETTINGS, "insert_deduplication_token": dedup_token},
            )


_TIME = pa.timestamp("ms", tz="UTC")  # read into DateTime64(3, 'UTC') as is, ms exact
_METADATA = pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False))


def _server_table(rows: pa.Table, run: str | None) -> pa.Table:
    """``rows`` (arrow_rows.SCHEMA) in the types the server reads into usage_events'
    columns without a SELECT: times as timestamps, metadata as a map. The values are
    the ones chDB's SELECT makes (tests/sinks/test_engines.py checks both)."""
    fields: list[pa.Field] = []
    arrays: list[Any] = []
    if run is not None:
        fields.append(pa.field("run", pa.string(), nullable=False))
        arrays.append(pa.repeat(pa.scalar(run, pa.string()), rows.num_rows))
    for field in rows.schema:
        column = rows[field.name]
        if field.name in TIME_COLUMNS:
            field, column = field.with_type(_TIME), column.cast(_TIME)
        elif field.name == "metadata":
            field, column = field.with_type(_METADATA), _maps(column)
        fields.append(field)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _maps(texts: pa.ChunkedArray) -> pa.Array:
    """The metadata JSON objects (``{}`` for most events) as an Arrow map."""
    n = len(texts)
    if pc.all(pc.equal(texts, "{}")).as_py() in (True, None):  # None: no rows
        empty = pa.array([], pa.string())
        return pa.MapArray.from_arrays(pa.array([0] * (n + 1), pa.int32()), empty, empty, _METADATA)
    objects = [{} if t == "{}" else orjson.loads(t) for t in texts.to_pylist()]
    return pa.array([list(o.items()) for o in objects], _METADATA)
