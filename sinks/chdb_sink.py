"""The embedded ClickHouse engine (chDB), in this process, data in a local folder.

A chDB folder belongs to ONE process (a second one fails with "Cannot lock file
.../status"), so while meterline runs, other readers go through its HTTP SQL
endpoint (``meterline sql`` does that for you). Inside the process one lock
serialises statements: chDB's session is not safe for concurrent use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

# chDB's engine allocates with its own jemalloc, which keeps freed pages (dirty,
# then muzzy) for ~10 s by default: after each INSERT and background merge the
# process kept up to ~60 MB more than it used (issue 17's peak RSS). Returning
# them at once cost no measurable CPU in `meterline bench --stages`. Read by
# jemalloc at its first allocation, so it must be set before chDB loads; a value
# the operator set wins.
os.environ.setdefault("JE_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from chdb import session as chdb_session  # after JE_MALLOC_CONF: see above

from core.errors import StoreError
from core.types import EventKey
from sinks.arrow_rows import TIME_COLUMNS, ArrowRows
from sinks.base import (
    EVENT_COLUMNS,
    INSERT_SETTINGS,
    LIVE_EVENTS,
    Engine,
    EventTable,
    EventWriter,
    KeyLookup,
    quote,
)
from sinks.changes import MeterChanges

_SETTINGS_SQL = ", ".join(f"{k} = {v}" for k, v in INSERT_SETTINGS.items())


def _select_expr(name: str, kind: type) -> str:
    """How an Arrow column becomes a ClickHouse value: exact, no float anywhere."""
    if kind is dict:
        return f"JSONExtract({name}, 'Map(String, String)') AS {name}"
    if name in TIME_COLUMNS:
        return f"fromUnixTimestamp64Milli(toInt64({name}), 'UTC') AS {name}"
    if kind is Decimal:
        return f"toDecimal128({name}, 12) AS {name}"
    return f"`{name}`"


# The SELECT list over the Arrow table, in EVENT_COLUMNS order (the tables' order).
_SELECT = ", ".join(_select_expr(n, k) for n, k in EVENT_COLUMNS.items())


def _select_for(run: str | None) -> str:
    """The SELECT list for a table; a billing run's rows carry its name first."""
    return _SELECT if run is None else f"{quote(run)} AS run, {_SELECT}"


def _late_tenants(rows: pa.Table, cut_ms: int) -> set[str]:
    """Tenants with an event in closed time (before ``cut_ms``, read after the INSERT)."""
    late = pc.less(rows["time"], cut_ms)
    if not pc.any(late).as_py():
        return set()
    return set(pc.unique(rows["tenant"].filter(late)).to_pylist())


class ChdbEngine(Engine):
    """ONE chDB session over a data folder; the writers and lookups built on it share its lock."""

    def __init__(self, path: Path, database: str = "meterline") -> None:
        self.database = database
        # One process owns the folder and every write goes through this object, so
        # it can tell the read side which past meters changed (sinks/changes.py).
        self.meter_changes = MeterChanges()
        self.changes = self.meter_changes
        path.mkdir(mode=0o700, parents=True, exist_ok=True)  # billing rows: the owner's alone
        self._lock = threading.Lock()
        try:
            self._session = chdb_session.Session(str(path))
        except Exception as exc:  # chDB raises a bare Exception for the folder lock
            raise StoreError(
                f"cannot open chDB folder {path}: {exc}. Is another meterline process using it? "
                "Use `meterline sql` (it goes through the running instance)."
            ) from exc
        # Exact decimals and 64-bit integers in JSON output (as strings), UTC everywhere.
        self.run_sql("SET output_format_json_quote_decimals = 1", "CSV")
        self.run_sql("SET output_format_json_quote_64bit_integers = 1", "CSV")
        self.run_sql("SET session_timezone = 'UTC'", "CSV")
        # Unqualified table names in users' SQL resolve in meterline's database.
        self.run_sql(f"CREATE DATABASE IF NOT EXISTS {database}", "CSV")
        self.run_sql(f"USE {database}", "CSV")

    @contextmanager
    def session(self, failing: str = "") -> Iterator[chdb_session.Session]:
        """The session, alone (it is not safe for concurrent use), with chDB's errors translated.

        The one place chDB exceptions become ``StoreError``: chDB raises bare
        ``Exception`` (or ``RuntimeError``) for refused SQL and bad data alike, and
        an in-process engine is never "unreachable", so nothing here is
        ``StoreUnavailable``. ``failing`` prefixes the message ("insert into ... failed").
        """
        with self._lock:
            try:
                yield self._session
            except Exception as exc:
                raise StoreError(f"{failing}{exc}") from exc

    def run_sql(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        try:
            with self.session() as session:
                result = session.query(sql, fmt)
        finally:
            # Also after a failure: a refused statement may have written part of it.
            self.meter_changes.statement_ran(sql)
        return bytes(result.bytes()) if result is not None else b""

    def writer(self, table: EventTable = LIVE_EVENTS) -> EventWriter:
        return ChdbWriter(self, table)

    def key_lookup(self, table: EventTable = LIVE_EVENTS) -> KeyLookup:
        return ChdbKeyLookup(self, table)

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ChdbKeyLookup(KeyLookup):
    def __init__(self, engine: ChdbEngine, table: EventTable) -> None:
        self.table = table
        self._engine = engine
        if table.key_hash:
            # Random ids fall in every granule, so the lookup reads every stored
            # identity: 8 bytes of each (the hash) first, the strings only where it
            # matches (3x less CPU at 4M-16M stored ids; migration 150). Only the
            # hash in SQL: an exact `(tenant, source, id) IN` would read the batch's
            # keys a second time and build a set of their string triples in the
            # engine, for the few rows whose hash matched (2.75 vs 1.95 µs a key at
            # 1M stored ids, issue 17 round 11, on the writer thread). stored_keys
            # drops the rare collision in Python, as ClickHouseKeyLookup does.
            run = "" if table.run is None else f" WHERE run = {quote(table.run)}"
            self._sql = (
                f"SELECT tenant, source, id FROM {engine.database}.{table.ids} "
                "PREWHERE key_hash IN (SELECT cityHash64(tenant, source, id) FROM Python(lookup))"
                f"{run}"
            )
        else:
            where_run = "" if table.run is None else f"run = {quote(table.run)} AND "
            exact = "(tenant, source, id) IN (SELECT tenant, source, id FROM Python(lookup))"
            self._sql = (
                f"SELECT tenant, source, id FROM {engine.database}.{table.ids} "
                f"WHERE {where_run}id IN (SELECT id FROM Python(lookup)) AND {exact}"
            )

    def stored_keys(self, keys: Sequence[EventKey]) -> set[EventKey]:
        if not keys:
            return set()
        # chDB's Python() table function finds `lookup` by name in this frame.
        # An Arrow table, not a dict of lists: chDB turns a dict into a pandas
        # frame first, which made this lookup ~5x slower (11.5 vs 2.4 µs a key
        # against 2M stored ids).
        lookup = pa.table(  # noqa: F841 - read by chDB's Python(lookup) below
            {
                "tenant": [k[0] for k in keys],
                "source": [k[1] for k in keys],
                "id": [k[2] for k in keys],
            }
        )
        with self._engine.session() as session:
            result = session.query(self._sql, "JSONCompactEachRow")
        lines = bytes(result.bytes()).splitlines()
        if not lines:  # the common answer: no key of the batch is stored
            return set()
        found: set[EventKey] = set()
        for line in lines:
            tenant, source, id_ = orjson.loads(line)
            found.add((tenant, source, id_))
        if self.table.key_hash:
            # Only the asked identities: another one with the same hash is not stored.
            found &= set(keys)
        return found


class ChdbWriter(ArrowRows):
    def __init__(self, engine: ChdbEngine, table: EventTable) -> None:
        self.table = table
        self._engine = engine
        self._sql = (
            f"INSERT INTO {engine.database}.{table.name} SELECT {_select_for(table.run)} "
            f"FROM Python(rows) SETTINGS {_SETTINGS_SQL}, insert_deduplication_token = "
        )

    def insert_encoded(self, rows: pa.Table, dedup_token: str) -> None:
        # chDB's Python() table function finds `rows` by name in this frame.
        try:
            with self._engine.session(f"insert into {self.table.name} failed: ") as session:
                session.query(self._sql + quote(dedup_token))
        finally:
            if self.table == LIVE_EVENTS:
                # After the INSERT (landed or torn): a cached answer of closed time
                # read before this point may lack these rows. Without this mark a late
                # event would be missing from GET /v1/usage until the process restarts.
                changes = self._engine.meter_changes
                changes.tenants_wrote_late(_late_tenants(rows, changes.cut_ms()))
