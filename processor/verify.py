"""Check what the processor stored, and mend what a crash between parts can tear.

``meterline verify`` (the independent check an operator runs before invoicing):
meters recomputed from usage_events must equal usage_meters (windows are whole
minutes, so the range is widened to minute boundaries); every (tenant, source,
id) must be stored once; the dedupe index must hold every stored id.

Start-up repair (``repair_at_start``): one INSERT writes the usage_events part
first and each view's part after it (usage_event_ids, usage_meters). A crash
between them leaves stored events the dedupe index does not know, and meters,
rollups or running totals short of them. All are mended from usage_events (the
rollups from the meters) before any worker reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.types import EventKey
from schemas.times import parse_ms
from sinks.base import METER_KEYS, METER_SUMS, quote
from sinks.reader import SqlReader

MINUTE_MS = 60_000
# How far before the newest write a torn INSERT can be: inserts are the last
# step of a batch, so a torn one was written seconds before the crash.
RECENT_MS = 10 * MINUTE_MS
EXAMPLES = 5


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


def verify(sql: SqlReader, from_ms: int, to_ms: int, windows: str = "") -> list[Difference]:
    """Every (group, column) where usage_meters differs from what usage_events implies.

    ``windows``, a SQL subquery of window starts, narrows the check to those minutes.
    """
    start_ms = from_ms - from_ms % MINUTE_MS
    end_ms = to_ms + (-to_ms % MINUTE_MS)
    start = f"fromUnixTimestamp64Milli(toInt64({start_ms}), 'UTC')"
    end = f"fromUnixTimestamp64Milli(toInt64({end_ms}), 'UTC')"
    db = sql.database
    differs = " OR ".join(f"e.{c} != m.{c}" for c in METER_SUMS)
    select = ", ".join(
        [f"e.{k} AS e_{k}, m.{k} AS m_{k}" for k in METER_KEYS]
        + [f"e.{c} AS e_{c}, m.{c} AS m_{c}" for c in METER_SUMS]
        + ["e.events > 0 AS in_events", "m.events > 0 AS in_meters"]
    )
    on = " AND ".join(f"e.{k} = m.{k}" for k in METER_KEYS)
    rows = sql.query_rows(
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


def repair_recent(sql: SqlReader, processed_since_ms: int) -> list[Difference]:
    """Make usage_meters whole again for windows written to since ``processed_since_ms``.

    Why: one INSERT writes the usage_events part first and the meter view's part
    after it. A process killed between the two leaves events whose meters are
    missing, and the replayed batch cannot fix it (its ids are stored, so it is
    skipped). Meters are additive, so a correction row with the missing amounts
    restores them exactly. Run at start-up, before any worker inserts.

    Only missing amounts are repaired; a meter ABOVE its events (which no crash
    can cause) is returned untouched for a human to look at.
    """
    windows = sql.query_rows(
        f"SELECT min(time) AS first, max(time) AS last FROM {sql.database}.usage_events "
        f"WHERE processed_at >= fromUnixTimestamp64Milli(toInt64({processed_since_ms}), 'UTC')"
    )
    if not windows or windows[0]["first"].startswith("1970-01-01 00:00:00.000"):
        return []  # min() over no rows is the epoch
    first = parse_ms(windows[0]["first"])  # engine output is UTC without a zone
    last = parse_ms(windows[0]["last"]) + 1
    # Only the minutes those events fall in: a late event must not turn this
    # start-up check into a scan of every window between it and now.
    touched = (
        f"SELECT DISTINCT toStartOfMinute(time) FROM {sql.database}.usage_events "
        f"WHERE processed_at >= fromUnixTimestamp64Milli(toInt64({processed_since_ms}), 'UTC')"
    )
    return _correct(sql, "usage_meters", METER_KEYS, verify(sql, first, last, touched))


def _correct(
    sql: SqlReader, table: str, keys: tuple[str, ...], differences: list[Difference]
) -> list[Difference]:
    """Add to ``table`` what each group lacks; return the differences ABOVE their source.

    Shared by the minute repair and every rollup's: one correction row per group
    (the group's ``keys`` and the missing amounts). A table above its source is
    never lowered (that needs negative counts, a human's decision).
    """
    by_group: dict[tuple[Any, ...], dict[str, Any]] = {}
    refused: list[Difference] = []
    for d in differences:
        if d.in_meters > d.from_events:
            refused.append(d)
            continue
        key = tuple(d.group[k] for k in keys)
        by_group.setdefault(key, {})[d.column] = d.from_events - d.in_meters
    for key, deltas in by_group.items():
        _add_correction(sql, table, keys, key, deltas)
    return refused


def _add_correction(
    sql: SqlReader, table: str, keys: tuple[str, ...], key: tuple[Any, ...], deltas: dict[str, Any]
) -> None:
    """One correction row: the group's key and the amounts it lacks (SummingMergeTree adds it).

    The meter tables dedup blocks (their dedup window is there for the processor's
    token), and a second correction identical to an earlier one (another torn INSERT
    of the same group with the same usage) would be dropped as a retried block,
    leaving the meters short for good: hence a token of its own (``_unique_token``).
    """
    columns = [*keys, *deltas]
    values = [_literal(v) for v in key] + [_literal(v) for v in deltas.values()]
    sql.query_raw(
        f"INSERT INTO {sql.database}.{table} ({', '.join(columns)}) "
        f"SETTINGS async_insert = 0, {_unique_token()} VALUES ({', '.join(values)})",
        "CSV",
    )


def _unique_token() -> str:
    """Insert settings that keep a block from ever being dropped as a duplicate.

    A fresh ``insert_deduplication_token``, not ``insert_deduplicate = 0``: since
    ClickHouse 26 ``deduplicate_insert`` supersedes that setting (on chDB 26.9 a
    second identical VALUES block with ``insert_deduplicate = 0`` was still dropped:
    tests/processor/test_meter_repair.py), and older servers do not know the new
    setting. A token no other block carries works on both.
    """
    return f"insert_deduplication_token = 'meterline-repair-{uuid.uuid4().hex}'"


def _ms(value: int) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({value}), 'UTC')"


HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class _Level:
    """A coarser table and the finer one it must sum (schemas/sql/120, 121; and the
    running totals of 070, which sum usage_events itself)."""

    table: str
    source: str
    start_of: str  # SQL: the coarser window's start, from the finer one's `source_time`
    grain_ms: int
    # The dimensions the coarser table keeps besides its window (the tenant-wide
    # tables of 122/123 drop `subject`: the finer rows are summed over it).
    keys: tuple[str, ...] = tuple(k for k in METER_KEYS if k != "window_start")
    sums: tuple[str, ...] = METER_SUMS
    # The sums not recomputed as sum(column) of the source: a count of its rows.
    recount: tuple[tuple[str, str], ...] = ()
    time: str = "window_start"  # the coarser table's window column
    source_time: str = "window_start"
    # Columns with one value in every row of this level (usage_running_totals keeps
    # both scopes in one table: scope 1 is tenant-wide, subject ''). The stored side
    # is read with them as a filter and a correction row carries them.
    fixed: tuple[tuple[str, Any], ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The key columns of a correction row."""
        return (self.time, *(name for name, _ in self.fixed), *self.keys)


_HOURS = _Level("usage_meters_1h", "usage_meters", "toStartOfHour(window_start)", HOUR_MS)
_DAYS = _Level("usage_meters_1d", "usage_meters_1h", "toStartOfDay(window_start, 'UTC')", DAY_MS)
_TENANT_KEYS = tuple(k for k in METER_KEYS if k not in ("window_start", "subject"))
# Both compared with the minutes, the one table they are fed from (schemas/sql/122, 123).
_TENANT_HOURS = _Level(
    "usage_meters_1h_tenant", "usage_meters", "toStartOfHour(window_start)", HOUR_MS, _TENANT_KEYS
)
_TENANT_DAYS = _Level(
    "usage_meters_1d_tenant",
    "usage_meters",
    "toStartOfDay(window_start, 'UTC')",
    DAY_MS,
    _TENANT_KEYS,
)


QUARTER_MS = 15 * MINUTE_MS
# usage_running_totals (schemas/sql/070) against usage_events, the one table its views
# are fed from: per subject (scope 0) and tenant-wide (scope 1, subject '').
_TOTALS_SUMS = ("events", "cost_usd", "price_usd")
_SUBJECT_TOTALS = _Level(
    "usage_running_totals",
    "usage_events",
    "toStartOfFifteenMinutes(time)",
    QUARTER_MS,
    ("tenant", "subject", "feature", "model"),
    _TOTALS_SUMS,
    (("events", "count()"),),
    time="bucket",
    source_time="time",
    fixed=(("scope", 0),),
)
_TENANT_TOTALS = _Level(
    "usage_running_totals",
    "usage_events",
    "toStartOfFifteenMinutes(time)",
    QUARTER_MS,
    ("tenant", "feature", "model"),
    _TOTALS_SUMS,
    (("events", "count()"),),
    time="bucket",
    source_time="time",
    fixed=(("scope", 1), ("subject", "")),
)


def verify_hours(sql: SqlReader, from_ms: int, to_ms: int, hours: str = "") -> list[Difference]:
    """Every (hour group, column) where usage_meters_1h differs from usage_meters' minutes.

    The hourly table (schemas/sql/120_usage_meters_1h.sql) answers the whole hours of
    ``GET /v1/usage``: a difference is a wrong invoice page. Its view and its backfill
    keep it equal to the meters on one node; a rolling upgrade of a server (an old
    processor writing while the migration backfills) or a crash between the parts of
    one INSERT can leave it off, and this names where. ``from_ms``/``to_ms`` widen to
    whole hours; ``hours``, a SQL subquery of hour starts, narrows the check.
    """
    return _verify_level(sql, _HOURS, from_ms, to_ms, hours)


def verify_days(sql: SqlReader, from_ms: int, to_ms: int, days: str = "") -> list[Difference]:
    """Every (UTC day group, column) where usage_meters_1d differs from usage_meters_1h."""
    return _verify_level(sql, _DAYS, from_ms, to_ms, days)


def verify_tenant_hours(
    sql: SqlReader, from_ms: int, to_ms: int, hours: str = ""
) -> list[Difference]:
    """Every (hour group, column) where usage_meters_1h_tenant differs from the minutes
    summed over subject. GET /v1/usage answers from it whenever a query names no
    subject (schemas/sql/122): a difference is a wrong tenant-wide total. Its group
    has no ``subject`` key."""
    return _verify_level(sql, _TENANT_HOURS, from_ms, to_ms, hours)


def verify_tenant_days(
    sql: SqlReader, from_ms: int, to_ms: int, days: str = ""
) -> list[Difference]:
    """Every (UTC day group, column) where usage_meters_1d_tenant differs from the
    minutes summed over subject (schemas/sql/123)."""
    return _verify_level(sql, _TENANT_DAYS, from_ms, to_ms, days)


def _verify_level(
    sql: SqlReader, level: _Level, from_ms: int, to_ms: int, only: str
) -> list[Difference]:
    start = _ms(from_ms - from_ms % level.grain_ms)
    end = _ms(to_ms + (-to_ms % level.grain_ms))
    db = sql.database
    recount = dict(level.recount)
    recomputed = ", ".join(f"{recount.get(c, f'sum({c})')} AS {c}" for c in level.sums)
    sums = ", ".join(f"sum({c}) AS {c}" for c in level.sums)
    fixed = "".join(f" AND {name} = {_literal(value)}" for name, value in level.fixed)
    rest = ", ".join(level.keys)
    at = level.source_time
    from_finer = (
        f"SELECT {level.start_of} AS bucket, {rest}, {recomputed}, 1 AS present "
        f"FROM {db}.{level.source} "
        f"WHERE {at} >= {start} AND {at} < {end}"
        + (f" AND {level.start_of} IN ({only})" if only else "")
        + f" GROUP BY bucket, {rest}"
        # The projection of migration 100 would answer from hourly states: read the
        # finer rows themselves, the independent side of the comparison.
        + " SETTINGS optimize_use_projections = 0"
    )
    stored = (
        f"SELECT {level.time} AS bucket, {rest}, {sums}, 1 AS present FROM {db}.{level.table} "
        f"WHERE {level.time} >= {start} AND {level.time} < {end}{fixed}"
        + (f" AND {level.time} IN ({only})" if only else "")
        + f" GROUP BY bucket, {rest}"
    )
    keys = ("bucket", *level.keys)
    differs = " OR ".join(f"e.{c} != m.{c}" for c in level.sums)
    select = ", ".join(
        [f"e.{k} AS e_{k}, m.{k} AS m_{k}" for k in keys]
        + [f"e.{c} AS e_{c}, m.{c} AS m_{c}" for c in level.sums]
        # `present`, not events > 0: a correction row may carry sums without events.
        + ["e.present = 1 AS in_events"]
    )
    on = " AND ".join(f"e.{k} = m.{k}" for k in keys)
    rows = sql.query_rows(
        f"SELECT {select} FROM ({from_finer}) AS e FULL OUTER JOIN ({stored}) AS m ON {on} "
        f"WHERE {differs} SETTINGS join_use_nulls = 0"
    )
    out = []
    for row in rows:
        side = "e_" if row["in_events"] else "m_"
        group = {k: row[side + k] for k in level.keys}
        group.update(level.fixed)
        group[level.time] = row[side + "bucket"]
        for column in level.sums:
            if row[f"e_{column}"] != row[f"m_{column}"]:
                # from_events: what the finer table says the window holds.
                out.append(Difference(group, column, row[f"e_{column}"], row[f"m_{column}"]))
    return out


def repair_hours(sql: SqlReader, from_ms: int, to_ms: int, hours: str = "") -> list[Difference]:
    """Add to usage_meters_1h what it lacks against the minute meters; return the rest.

    Only shortfalls are mended (a correction row with the missing amounts, exact:
    SummingMergeTree adds it; it reaches usage_meters_1d through its view). An hour
    ABOVE its minutes (a backfill counted twice) is returned untouched: undoing it
    needs negative counts, a human's decision. Not safe while workers insert (an
    INSERT between its meter part and its hour part looks short): start-up, or a
    stopped pipeline.
    """
    return _repair_level(sql, _HOURS, verify_hours(sql, from_ms, to_ms, hours))


def repair_days(sql: SqlReader, from_ms: int, to_ms: int, days: str = "") -> list[Difference]:
    """Add to usage_meters_1d what it lacks against usage_meters_1h (as ``repair_hours``)."""
    return _repair_level(sql, _DAYS, verify_days(sql, from_ms, to_ms, days))


def repair_tenant_hours(
    sql: SqlReader, from_ms: int, to_ms: int, hours: str = ""
) -> list[Difference]:
    """Add to usage_meters_1h_tenant what it lacks against the minutes (as
    ``repair_hours``; the table has no views, so a correction lands there only)."""
    return _repair_level(sql, _TENANT_HOURS, verify_tenant_hours(sql, from_ms, to_ms, hours))


def repair_tenant_days(
    sql: SqlReader, from_ms: int, to_ms: int, days: str = ""
) -> list[Difference]:
    """Add to usage_meters_1d_tenant what it lacks against the minutes."""
    return _repair_level(sql, _TENANT_DAYS, verify_tenant_days(sql, from_ms, to_ms, days))


def verify_running_totals(
    sql: SqlReader, from_ms: int, to_ms: int, buckets: str = ""
) -> list[Difference]:
    """Every (group, column) where usage_running_totals differs from usage_events.

    The budgets' entitlement check and alerts read this table (query/running_totals.py,
    query/alerts.py): a group short of its events under-enforces a hard budget and
    misses alerts. Both scopes: per subject (``scope`` 0) and tenant-wide (1, subject
    ''); events, cost_usd and price_usd. ``from_ms``/``to_ms`` widen to whole 15-minute
    buckets; ``buckets``, a SQL subquery of bucket starts, narrows the check.
    """
    return [
        difference
        for level in (_SUBJECT_TOTALS, _TENANT_TOTALS)
        for difference in _verify_level(sql, level, from_ms, to_ms, buckets)
    ]


def repair_running_totals(
    sql: SqlReader, from_ms: int, to_ms: int, buckets: str = ""
) -> list[Difference]:
    """Add to usage_running_totals what it lacks against usage_events; return the rest.

    Only shortfalls are mended, one correction row per group (the table has no views:
    it lands there only). A group ABOVE its events is returned untouched: lowering it
    needs negative counts, a human's decision. Not safe while workers insert (an INSERT
    between its events part and its running-totals parts looks short): start-up, or a
    stopped pipeline.
    """
    refused: list[Difference] = []
    for level in (_SUBJECT_TOTALS, _TENANT_TOTALS):
        refused += _repair_level(sql, level, _verify_level(sql, level, from_ms, to_ms, buckets))
    return refused


def _repair_level(sql: SqlReader, level: _Level, differences: list[Difference]) -> list[Difference]:
    return _correct(sql, level.table, level.columns, differences)


def repair_dedupe_index(sql: SqlReader, processed_since_ms: int) -> int:
    """Add to usage_event_ids every event written since then that it lacks; return how many.

    Why: a crash (or a failed view) after the usage_events part of an INSERT
    and before the usage_event_ids part leaves events the dedupe lookup cannot
    see. The replayed batch, cut at other offsets, carries another dedup token
    and would store them a second time (and a replay with the SAME token pushes
    the views again, doubling meters a start-up repair had already restored).
    With the index whole again, the replay finds every id stored and writes
    nothing. Safe at any time, also while other workers insert: it only adds
    identities that usage_events holds, and a second copy of an index row is
    harmless (ReplacingMergeTree; the lookup returns a set).
    """
    db = sql.database
    recent = f"{db}.usage_events WHERE processed_at >= {_ms(processed_since_ms)}"
    missing = (
        f"SELECT id, source, tenant, time, partition, offset FROM {recent} "
        "AND (id, source, tenant) NOT IN (SELECT id, source, tenant "
        f"FROM {db}.usage_event_ids WHERE id IN (SELECT id FROM {recent}))"
    )
    count = int(sql.scalar(f"SELECT count() FROM ({missing})") or 0)
    if count:
        # A repeated repair block must never be dropped as a "duplicate block" of
        # an earlier one (``_unique_token``).
        sql.query_raw(
            f"INSERT INTO {db}.usage_event_ids (id, source, tenant, time, partition, offset) "
            f"{missing} SETTINGS async_insert = 0, {_unique_token()}",
            "CSV",
        )
    return count


@dataclass(frozen=True)
class StartupRepair:
    ids_restored: int = 0
    refused: list[Difference] = field(default_factory=list)


def repair_at_start(sql: SqlReader) -> StartupRepair:
    """Mend what a crash may have torn; call before any worker reads the log.

    The dedupe index first: meters or running totals repaired while an id is still
    missing would be doubled by the replayed batch. The other repairs are not safe
    while workers insert (an INSERT between its parts looks torn), hence start-up.
    """
    last = sql.scalar(
        f"SELECT toUnixTimestamp64Milli(max(processed_at)) FROM {sql.database}.usage_events"
    )
    if not last:
        return StartupRepair()
    since = int(last) - RECENT_MS
    ids = repair_dedupe_index(sql, since)
    refused = repair_recent(sql, since)

    def touched(start_of: str) -> str:
        # Only the windows the recent events fall in: a late event must not turn this
        # start-up check into a scan of every window between it and now.
        return (
            f"SELECT DISTINCT {start_of} FROM {sql.database}.usage_events "
            f"WHERE processed_at >= {_ms(since)}"
        )

    span = sql.query_rows(
        f"SELECT toUnixTimestamp64Milli(min(time)) AS first, "
        f"toUnixTimestamp64Milli(max(time)) AS last FROM {sql.database}.usage_events "
        f"WHERE processed_at >= {_ms(since)}"
    )
    if span and int(span[0]["last"]) > 0:
        first, last = int(span[0]["first"]), int(span[0]["last"]) + 1
        # After the minute repair (whose correction rows reach usage_meters_1h through
        # its view): an INSERT torn between its meter part and its hour part leaves the
        # hour short of its minutes.
        hours = touched("toStartOfHour(time)")
        refused += repair_hours(sql, first, last, hours)
        # Then the days (an INSERT torn between its hour part and its day part).
        days = touched("toStartOfDay(time, 'UTC')")
        refused += repair_days(sql, first, last, days)
        # The tenant-wide tables (122, 123), each against the minutes it is fed from:
        # an INSERT torn between its meter part and their parts.
        refused += repair_tenant_hours(sql, first, last, hours)
        refused += repair_tenant_days(sql, first, last, days)
        # The running totals (070), against usage_events itself (their views read it,
        # not the meters): an INSERT torn between its events part and their parts
        # leaves a hard budget under-enforced and its alerts unsent, and the replayed
        # batch skips those events as stored. After the dedupe index, like the rest.
        refused += repair_running_totals(sql, first, last, touched("toStartOfFifteenMinutes(time)"))
    return StartupRepair(ids, refused)


@dataclass(frozen=True)
class IdentityProblems:
    """Events stored more than once, and stored events the dedupe index lacks."""

    duplicated: int = 0  # identities with more than one row
    duplicate_examples: list[tuple[EventKey, int]] = field(default_factory=list)
    unindexed: int = 0  # identities in usage_events, not in usage_event_ids
    unindexed_examples: list[EventKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.duplicated or self.unindexed)


def check_identities(sql: SqlReader, from_ms: int, to_ms: int) -> IdentityProblems:
    """(tenant, source, id) of events in [from_ms, to_ms) is stored once and indexed.

    Copies are counted over the whole table, not only the range: a re-send
    can carry another event time than the copy stored first.
    """
    db = sql.database
    window = f"time >= {_ms(from_ms)} AND time < {_ms(to_ms)}"
    in_range = f"SELECT id FROM {db}.usage_events WHERE {window}"
    copies = (
        f"SELECT tenant, source, id, count() AS copies FROM {db}.usage_events "
        f"WHERE id IN ({in_range}) GROUP BY tenant, source, id HAVING copies > 1"
    )
    unindexed = (
        f"SELECT DISTINCT tenant, source, id FROM {db}.usage_events "
        f"WHERE {window} AND (id, source, tenant) NOT IN (SELECT id, source, tenant "
        f"FROM {db}.usage_event_ids WHERE id IN ({in_range}))"
    )
    order = "ORDER BY tenant, source, id"
    return IdentityProblems(
        duplicated=int(sql.scalar(f"SELECT count() FROM ({copies})") or 0),
        duplicate_examples=[
            ((r["tenant"], r["source"], r["id"]), int(r["copies"]))
            for r in sql.query_rows(f"{copies} {order} LIMIT {EXAMPLES}")
        ],
        unindexed=int(sql.scalar(f"SELECT count() FROM ({unindexed})") or 0),
        unindexed_examples=[
            (r["tenant"], r["source"], r["id"])
            for r in sql.query_rows(f"{unindexed} {order} LIMIT {EXAMPLES}")
        ],
    )
