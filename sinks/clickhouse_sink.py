"""A ClickHouse server (or cluster) through clickhouse-connect.

Same SQL as the chDB sink; only the transport differs. Network failures raise
``StoreUnavailable`` so the processor pauses and retries instead of dropping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from core.errors import StoreError, StoreUnavailable
from core.types import EventKey
from schemas.times import from_ms
from sinks import ddl
from sinks.base import EVENT_COLUMNS, INSERT_SETTINGS, Sink

_TIME_COLUMNS = ("time", "ingested_at", "processed_at")


class ClickHouseSink(Sink):
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
    ) -> None:
        """``user``/``password`` win over the URL's; ``ca_cert``/``verify`` apply to https."""
        self.database = database
        parts = urlsplit(url)
        try:
            self._client = clickhouse_connect.get_client(
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
                settings={
                    "output_format_json_quote_decimals": 1,
                    "output_format_json_quote_64bit_integers": 1,
                },
            )
        except OperationalError as exc:
            raise StoreUnavailable(f"ClickHouse at {parts.hostname} is unreachable: {exc}") from exc
        # Unqualified table names in users' SQL resolve in meterline's database.
        self._command(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._client.database = database

    def migrate(self, billing_timezone: str = "UTC") -> None:
        for statement in ddl.statements(self.database, billing_timezone):
            self._command(statement)

    def _command(self, sql: str, **kwargs: Any) -> Any:
        try:
            return self._client.command(sql, **kwargs)
        except OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc

    def stored_keys(self, keys: Sequence[EventKey], run: str | None = None) -> set[EventKey]:
        if not keys:
            return set()
        try:
            table = "usage_event_ids" if run is None else "billing_run_events"
            where_run = "" if run is None else "run = %(run)s AND "
            result = self._client.query(
                f"SELECT tenant, source, id FROM {self.database}.{table} "
                f"WHERE {where_run}id IN %(ids)s",
                parameters={"ids": sorted({k[2] for k in keys}), "run": run or ""},
            )
        except OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc
        wanted = set(keys)
        return {
            (row[0], row[1], row[2])
            for row in result.result_rows
            if (row[0], row[1], row[2]) in wanted
        }

    def insert_events(
        self, columns: Mapping[str, list[Any]], dedup_token: str, run: str | None = None
    ) -> None:
        data: list[list[Any]] = []
        names = list(EVENT_COLUMNS)
        if run is not None:
            data.append([run] * len(columns["id"]))
            names.insert(0, "run")
        for name in EVENT_COLUMNS:
            values = columns[name]
            if name in _TIME_COLUMNS:
                # timedelta keeps the milliseconds exact (a float division would not).
                values = [from_ms(ms) for ms in values]
            data.append(values)
        try:
            self._client.insert(
                f"{self.database}.{'usage_events' if run is None else 'billing_run_events'}",
                data,
                column_names=names,
                column_oriented=True,
                settings={**INSERT_SETTINGS, "insert_deduplication_token": dedup_token},
            )
        except OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc

    def query_raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        try:
            return bytes(self._client.raw_query(sql, fmt=fmt))
        except OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()
