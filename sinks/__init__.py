"""Where priced events go: the ClickHouse engine, embedded (chDB) or a server.

``Sink`` (``base.py``) is the contract the processor relies on; ``chdb_sink``
and ``clickhouse_sink`` implement it with identical SQL (the DDL in
``schemas/sql``), so the chDB tests cover the server path's SQL too.
"""

from core.types import EventKey
from sinks.base import EVENT_COLUMNS, Sink

__all__ = ["EVENT_COLUMNS", "EventKey", "Sink"]
