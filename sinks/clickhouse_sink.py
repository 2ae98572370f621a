"""A ClickHouse server (or cluster) through clickhouse-connect.

Same SQL as the chDB sink; only the transport differs. Network failures raise
``StoreUnavailable`` so the processor pauses and retries instead of dropping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from core.errors import StoreError, StoreUnavailable
from core.types import EventKey
from schemas.times import from_ms
from sinks.base import (
    EVENT_COLUMNS,
    INSERT_SETTINGS,
    LIVE_EVENTS,
    Engine,
    EventTable,
    EventWriter,
    KeyLookup,
)

_TIME_COLUMNS = ("time", "ingested_at", "processed_at")


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
        self._sql = (
            f"SELECT tenant, source, id FROM {engine.database}.{table.ids} "
            f"WHERE {where_run}id IN %(ids)s"
        )

    def stored_keys(self, keys: Sequence[EventKey]) -> set[EventKey]:
        if not keys:
            return set()
        with _translated():
            result = self._client.query(
                self._sql,
                parameters={"ids": sorted({k[2] for k in keys}), "run": self.table.run or ""},
            )
        wanted = set(keys)
        return {
            (row[0], row[1], row[2])
            for row in result.result_rows
            if (row[0], row[1], row[2]) in wanted
        }


class ClickHouseWriter(EventWriter):
    def __init__(self, engine: ClickHouseEngine, table: EventTable) -> None:
        self.table = table
        self._client = engine.client
        self._target = f"{engine.database}.{table.name}"
        self._names = list(EVENT_COLUMNS) if table.run is None else ["run", *EVENT_COLUMNS]

    def insert(self, columns: Mapping[str, list[Any]], dedup_token: str) -> None:
        data: list[list[Any]] = []
        if self.table.run is not None:
            data.append([self.table.run] * len(columns["id"]))
        for name in EVENT_COLUMNS:
            values = columns[name]
            if name in _TIME_COLUMNS:
                # timedelta keeps the milliseconds exact (a float division would not).
                values = [from_ms(ms) for ms in values]
            data.append(values)
        with _translated(f"insert into {self.table.name} failed: "):
            self._client.insert(
                self._target,
                data,
                column_names=self._names,
                column_oriented=True,
                settings={**INSERT_SETTINGS, "insert_deduplication_token": dedup_token},
            )
