"""Where priced events go: the ClickHouse engine, embedded (chDB) or a server.

One ``Engine`` per connection (``chdb_sink.ChdbEngine``: one chDB session;
``clickhouse_sink.ClickHouseEngine``: one clickhouse-connect client) and small
roles on top of it, each with one job:

- ``engine.writer(table)``: an ``EventWriter`` bound to ``usage_events`` or a billing run;
- ``engine.key_lookup(table)``: a ``KeyLookup``, the dedupe guard's stored identities;
- ``engine.sql``: a ``SqlReader`` (``reader.py``) for query/, verify, replay and the CLI;
- ``migrations.migrate(engine)``: the DDL in ``schemas/sql``.

Both engines run identical SQL, so the chDB tests cover the server path's SQL
too; tests/sinks runs the same tests against ``ClickHouseEngine`` through an HTTP
front end over chDB (tests/support/clickhouse_http.py).
"""

from core.types import EventKey
from sinks.base import (
    EVENT_COLUMNS,
    LIVE_EVENTS,
    Engine,
    EventTable,
    EventWriter,
    KeyLookup,
    billing_run,
)
from sinks.reader import SqlReader

__all__ = [
    "EVENT_COLUMNS",
    "LIVE_EVENTS",
    "Engine",
    "EventKey",
    "EventTable",
    "EventWriter",
    "KeyLookup",
    "SqlReader",
    "billing_run",
]
