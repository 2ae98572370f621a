"""The stored row behind an ``Idempotency-Key`` of ``POST /api/usage``, for the gateway.

Built by the shell from the sink and handed to ``Gateway(stored_usage=...)``:
the write path never imports the store (docs/architecture.md).
"""

from __future__ import annotations

import orjson

from ingest.usage_api import REQUEST_HASH, SOURCE, StoredUsage
from sinks.base import quote
from sinks.reader import SqlReader


class StoredUsageLookup:
    def __init__(self, sink: SqlReader) -> None:
        self.sink = sink

    def __call__(self, tenant: str, event_id: str) -> StoredUsage | None:
        db = self.sink.database
        rows = self.sink.query_rows(
            f"SELECT data, cost_usd, priced, "
            f"formatDateTime(time, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC') AS time "
            f"FROM {db}.usage_events WHERE id = {quote(event_id)} "
            f"AND tenant = {quote(tenant)} AND source = {quote(SOURCE)} LIMIT 1"
        )
        if not rows:
            return None
        row = rows[0]
        event = orjson.loads(row["data"])
        # An event stored before request hashes existed matches no request: 409,
        # never a silent second answer for the same key.
        return StoredUsage(
            str(event.get(REQUEST_HASH, "")), row["cost_usd"], bool(row["priced"]), row["time"]
        )
