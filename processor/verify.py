"""Recompute meters from usage_events and compare them with usage_meters.

The materialized view and the dedup settings are what keep the two equal; this
is the independent check an operator runs before invoicing (``meterline verify``).
Windows are whole minutes, so the range is widened to minute boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from schemas.times import parse_ms
from sinks.base import METER_KEYS, METER_SUMS, Sink, quote

MINUTE_MS = 60_000


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Decimal):
        return f"toDecimal128('{value}', 12)"
    return str(int(value))


@dataclass(frozen=True)
class Difference:
    group: dict[str, Any]
    column: str
    from_events: Any
    in_meters: Any


def _recomputed(database: str, start: str, end: str, windows: str = "") -> str:
    sums = {
        "events": "count()",
        "unpriced_events": "countIf(priced = 0)",
        "estimated_events": "countIf(estimated = 1)",
    }
    columns = ", ".join(f"{sums.get(c, f'sum({c})')} AS {c}" for c in METER_SUMS)
    keys = ", ".join(METER_KEYS).replace("window_start", "toStartOfMinute(time) AS window_start")
    return (
        f"SELECT {keys}, {columns} FROM {database}.usage_events "
        f"WHERE time >= {start} AND time < {end}"
        + (f" AND toStartOfMinute(time) IN ({windows})" if windows else "")
        + f" GROUP BY {', '.join(METER_KEYS)}"
    )


def _stored(database: str, start: str, end: str, windows: str = "") -> str:
    columns = ", ".join(f"sum({c}) AS {c}" for c in METER_SUMS)
    return (
        f"SELECT {', '.join(METER_KEYS)}, {columns} FROM {database}.usage_meters "
        f"WHERE window_start >= {start} AND window_start < {end}"
        + (f" AND window_start IN ({windows})" if windows else "")
        + f" GROUP BY {', '.join(METER_KEYS)}"
    )


def verify(sink: Sink, from_ms: int, to_ms: int, windows: str = "") -> list[Difference]:
    """Every (group, column) where usage_meters differs from what usage_events implies.

    ``windows``, a SQL subquery of window starts, narrows the check to those minutes.
    """
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
        f"SELECT {select} FROM ({_recomputed(db, start, end, windows)}) AS e "
        f"FULL OUTER JOIN ({_stored(db, start, end, windows)}) AS m ON {on} "
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


def repair_recent(sink: Sink, processed_since_ms: int) -> list[Difference]:
    """Make usage_meters whole again for windows written to since ``processed_since_ms``.

    Why: one INSERT writes the usage_events part first and the meter view's part
    after it. A process killed between the two leaves events whose meters are
    missing, and the replayed batch cannot fix it (its ids are stored, so it is
    skipped). Meters are additive, so a correction row with the missing amounts
    restores them exactly. Run at start-up, before any worker inserts.

    Only missing amounts are repaired; a meter ABOVE its events (which no crash
    can cause) is returned untouched for a human to look at.
    """
    windows = sink.query_rows(
        f"SELECT min(time) AS first, max(time) AS last FROM {sink.database}.usage_events "
        f"WHERE processed_at >= fromUnixTimestamp64Milli(toInt64({processed_since_ms}), 'UTC')"
    )
    if not windows or windows[0]["first"].startswith("1970-01-01 00:00:00.000"):
        return []  # min() over no rows is the epoch
    first = parse_ms(windows[0]["first"])  # engine output is UTC without a zone
    last = parse_ms(windows[0]["last"]) + 1
    # Only the minutes those events fall in: a late event must not turn this
    # start-up check into a scan of every window between it and now.
    touched = (
        f"SELECT DISTINCT toStartOfMinute(time) FROM {sink.database}.usage_events "
        f"WHERE processed_at >= fromUnixTimestamp64Milli(toInt64({processed_since_ms}), 'UTC')"
    )
    differences = verify(sink, first, last, touched)
    by_group: dict[tuple[Any, ...], dict[str, Any]] = {}
    refused: list[Difference] = []
    for d in differences:
        key = tuple(d.group[k] for k in METER_KEYS)
        if d.in_meters > d.from_events:
            refused.append(d)
            continue
        by_group.setdefault(key, {})[d.column] = d.from_events - d.in_meters
    for key, deltas in by_group.items():
        columns = list(METER_KEYS) + list(deltas)
        values = [_literal(v) for v in key] + [_literal(v) for v in deltas.values()]
        sink.query_raw(
            f"INSERT INTO {sink.database}.usage_meters ({', '.join(columns)}) "
            f"VALUES ({', '.join(values)})",
            "CSV",
        )
    return refused
