"""Recompute meters from usage_events and compare them with usage_meters.

The materialized view and the dedup settings are what keep the two equal; this
is the independent check an operator runs before invoicing (``meterline verify``).
Windows are whole minutes, so the range is widened to minute boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sinks.base import METER_KEYS, METER_SUMS, Sink

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Difference:
    group: dict[str, Any]
    column: str
    from_events: Any
    in_meters: Any


def _recomputed(database: str, start: str, end: str) -> str:
    sums = {
        "events": "count()",
        "unpriced_events": "countIf(priced = 0)",
        "estimated_events": "countIf(estimated = 1)",
    }
    columns = ", ".join(f"{sums.get(c, f'sum({c})')} AS {c}" for c in METER_SUMS)
    keys = ", ".join(METER_KEYS).replace("window_start", "toStartOfMinute(time) AS window_start")
    return (
        f"SELECT {keys}, {columns} FROM {database}.usage_events "
        f"WHERE time >= {start} AND time < {end} GROUP BY {', '.join(METER_KEYS)}"
    )


def _stored(database: str, start: str, end: str) -> str:
    columns = ", ".join(f"sum({c}) AS {c}" for c in METER_SUMS)
    return (
        f"SELECT {', '.join(METER_KEYS)}, {columns} FROM {database}.usage_meters "
        f"WHERE window_start >= {start} AND window_start < {end} GROUP BY {', '.join(METER_KEYS)}"
    )


def verify(sink: Sink, from_ms: int, to_ms: int) -> list[Difference]:
    """Every (group, column) where usage_meters differs from what usage_events implies."""
    start_ms = from_ms - from_ms % MINUTE_MS
    end_ms = to_ms + (-to_ms % MINUTE_MS)
    start = f"fromUnixTimestamp64Milli(toInt64({start_ms}), 'UTC')"
    end = f"fromUnixTimestamp64Milli(toInt64({end_ms}), 'UTC')"
    db = sink.database
    differs = " OR ".join(f"e.{c} != m.{c}" for c in METER_SUMS)
    select = ", ".join(
        [f"e.{k} AS e_{k}, m.{k} AS m_{k}" for k in METER_KEYS]
        + [f"e.{c} AS e_{c}, m.{c} AS m_{c}" for c in METER_SUMS]
        + ["e.events > 0 AS in_events", "m.events > 0 AS in_meters"]
    )
    on = " AND ".join(f"e.{k} = m.{k}" for k in METER_KEYS)
    rows = sink.query_rows(
        f"SELECT {select} FROM ({_recomputed(db, start, end)}) AS e "
        f"FULL OUTER JOIN ({_stored(db, start, end)}) AS m ON {on} "
        f"WHERE {differs} SETTINGS join_use_nulls = 0"
    )
    out = []
    for row in rows:
        side = "e_" if row["in_events"] else "m_"
        group = {k: row[side + k] for k in METER_KEYS}
        for column in METER_SUMS:
            if row[f"e_{column}"] != row[f"m_{column}"]:
                out.append(Difference(group, column, row[f"e_{column}"], row[f"m_{column}"]))
    return out
