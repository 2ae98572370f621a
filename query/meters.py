"""``GET /v1/usage``: totals from the meters, by window and grouping (docs/query.md).

Answered from ``usage_meters`` (1-minute windows summed by the processor's
INSERT through a materialized view), never from raw events: a month of one
tenant is ~43,200 minute rows per group instead of every event.

The tenant is the caller's (API key or portal token), never a parameter. A
portal token also fixes the subject (and possibly the features): asking for
another one is 403, not an empty answer, so a page cannot probe who exists.

SQL is built from allowlisted identifiers (group and column names are checked
against ``GROUPS`` / ``COLUMNS`` before they reach the text) and ``quote``d
literals for every caller value (filters, timezone); instants are integers.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, UNAVAILABLE, USAGE_INVALID
from query.principal import Principal, read_principal
from query.reader import Reader
from query.sealed_answers import Answer, SealedAnswers, closed_cut, merge, split
from schemas.problems import Problem
from schemas.times import EPOCH, format_ms
from sinks.base import quote
from sinks.reader import SqlReader

WINDOWS = ("minute", "hour", "day", "month", "none")
# Dimensions of usage_meters (schemas/sql/030_usage_meters.sql), in its key order.
GROUPS = ("subject", "model", "feature", "provider", "type", "unit")
# Asked for by issue 13 but not a meter dimension: usage_events has `user`, the
# meters do not (one meter row per end user would multiply the table by the
# users of every customer). Refused with 422 saying so, never answered from raw events.
NOT_METERED = {
    "user": "`user` is not a meter dimension (usage_meters has no per-user rows); "
    "per-user totals are not served by this API"
}
COUNTS = (
    "events",
    "unpriced_events",
    "estimated_events",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "images",
)
DECIMALS = ("quantity", "cost_usd", "price_usd")
COLUMNS = COUNTS + DECIMALS
# More rows than this is a mistake (minute windows over months): refused with a
# 422 naming `window` rather than built in memory and sent.
MAX_ROWS = 100_000
_MAX_VALUE_CHARS = 256
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_KNOWN = frozenset({"from", "to", "window", "timezone", "group_by", "columns", "format"})
_KNOWN |= frozenset(GROUPS) | frozenset(NOT_METERED)
CSV_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class MeterQuery:
    """A checked ``GET /v1/usage`` request."""

    tenant: str
    start: datetime | None
    end: datetime | None  # exclusive
    window: str
    timezone: str
    group_by: tuple[str, ...]
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    columns: tuple[str, ...] = COLUMNS


def parse_query(
    params: QueryParams, principal: Principal, default_timezone: str
) -> tuple[MeterQuery, list[Problem]]:
    """The request's query, or the problems that name each bad parameter."""
    problems: list[Problem] = []
    for name in sorted(set(params.keys()) - _KNOWN):
        problems.append(Problem("unknown", name, "not a parameter of GET /v1/usage"))
    timezone = _single(params, "timezone", problems) or default_timezone
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem("invalid", "timezone", "must be an IANA timezone name"))
        zone, timezone = ZoneInfo("UTC"), "UTC"
    window = _single(params, "window", problems) or "none"
    if window not in WINDOWS:
        problems.append(Problem("invalid", "window", f"must be one of {', '.join(WINDOWS)}"))
    start = _instant(params, "from", zone, problems)
    end = _instant(params, "to", zone, problems)
    if start is not None and end is not None and start >= end:
        problems.append(Problem("invalid", "to", "must be after `from` (`to` is exclusive)"))
    group_by = _names(params, "group_by", GROUPS, problems)
    columns = _names(params, "columns", COLUMNS, problems) or COLUMNS
    filters: dict[str, tuple[str, ...]] = {}
    for name in (*GROUPS, *NOT_METERED):
        values = params.getlist(name)
        if not values:
            continue
        if name in NOT_METERED:
            problems.append(Problem("not-metered", name, NOT_METERED[name]))
            continue
        bad = [v for v in values if not 0 <= len(v) <= _MAX_VALUE_CHARS or not v.isprintable()]
        if bad:
            problems.append(
                Problem("invalid", name, f"each value must be 0-{_MAX_VALUE_CHARS} printable chars")
            )
            continue
        filters[name] = tuple(dict.fromkeys(values))
    query = MeterQuery(principal.tenant, start, end, window, timezone, group_by, filters, columns)
    return query, problems


def _single(params: QueryParams, name: str, problems: list[Problem]) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        problems.append(Problem("repeated", name, "give this parameter once"))
    return values[0] if values else None


def _names(
    params: QueryParams, name: str, allowed: Sequence[str], problems: list[Problem]
) -> tuple[str, ...]:
    # Repeated (group_by=a&group_by=b) or comma-separated (group_by=a,b), both common.
    names = [n.strip() for v in params.getlist(name) for n in v.split(",") if n.strip()]
    wrong = [n for n in names if n not in allowed]
    for n in wrong:
        if n in NOT_METERED:
            problems.append(Problem("not-metered", name, NOT_METERED[n]))
        else:
            problems.append(
                Problem("invalid", name, f"{n[:64]!r} is not one of {', '.join(allowed)}")
            )
    return tuple(dict.fromkeys(n for n in names if n in allowed))


def _instant(
    params: QueryParams, name: str, zone: ZoneInfo, problems: list[Problem]
) -> datetime | None:
    """A date (its midnight in ``timezone``) or an RFC 3339 instant, on a whole minute."""
    raw = _single(params, name, problems)
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            moment = datetime.combine(date.fromisoformat(raw), time(), zone).astimezone(UTC)
        else:
            moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                # "2025-01-01T10:00" means nothing exact; guessing a zone would be a
                # silent off-by-hours total.
                problems.append(Problem("invalid", name, "give the UTC offset (Z or +hh:mm)"))
                return None
            moment = moment.astimezone(UTC)
    except ValueError:
        problems.append(Problem("invalid", name, "must be YYYY-MM-DD or an RFC 3339 timestamp"))
        return None
    except OverflowError:
        problems.append(Problem("invalid", name, "must be between 1970 and 2200"))
        return None
    if not EPOCH <= moment < _LATEST:
        problems.append(Problem("invalid", name, "must be between 1970 and 2200"))
        return None
    if moment.second or moment.microsecond:
        # Meters hold whole minutes: a bound inside one would count all of that
        # minute or none of it, either way not what was asked.
        problems.append(Problem("invalid", name, "must be on a whole minute (the meters' grain)"))
        return None
    return moment


def window_sql(window: str, timezone: str) -> str | None:
    """The window's start as epoch seconds, in SQL (None: no window).

    The same expression for minute, hour and day rows (every meter table names its
    start ``window_start``): a coarser row's start is in the same window as its
    minutes whenever ``_pieces`` reads that table at all.
    """
    tz = quote(timezone)
    return {
        "minute": "toUnixTimestamp(window_start)",
        "hour": f"toUnixTimestamp(toStartOfHour(window_start, {tz}))",
        "day": f"toUnixTimestamp(toStartOfDay(window_start, {tz}))",
        # toStartOfMonth returns a Date: its midnight in the zone is the instant.
        "month": f"toUnixTimestamp(toDateTime(toStartOfMonth(window_start, {tz}), {tz}))",
        "none": None,
    }[window]


_HOUR = timedelta(hours=1)
# Checking a zone's offsets costs ~10 ms a year (then cached); an unbounded or
# very long range in a zone other than UTC is read from the minutes instead.
_MAX_CHECKED_YEARS = 5
MINUTES = "usage_meters"
HOURS = "usage_meters_1h"
DAYS = "usage_meters_1d"
# Tenant-wide rollups (schemas/sql/122, 123): the same sums without `subject`; a month
# at the bench's scale (200 subjects) is ~61k hourly rows instead of ~267k, ~930 daily
# ones instead of ~49-66k.
TENANT_HOURS = "usage_meters_1h_tenant"
TENANT_DAYS = "usage_meters_1d_tenant"
# Per grain, the tables that hold it, smallest first, with the dimensions each keeps:
# a table serves a piece iff its dimensions cover group_by and the filters (a portal
# token filters on its subject, so it always reads the subject tables).
_BY_GRAIN: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    HOURS: ((TENANT_HOURS, frozenset(GROUPS) - {"subject"}), (HOURS, frozenset(GROUPS))),
    DAYS: ((TENANT_DAYS, frozenset(GROUPS) - {"subject"}), (DAYS, frozenset(GROUPS))),
}


def build_sql(
    database: str, query: MeterQuery, limit: int = MAX_ROWS + 1, *, hourly: bool = True
) -> str:
    """One SELECT over the meters: identifiers from the allowlists, values quoted.

    The range is cut into pieces read from the coarsest table that holds them whole
    (``_pieces``): whole UTC days from ``usage_meters_1d``, whole hours from
    ``usage_meters_1h`` (``schemas/sql/120_usage_meters_1h.sql``, 121), the minutes
    at the edges from ``usage_meters``; several pieces are one ``UNION ALL`` summed
    again. The same numbers as reading minutes only (``hourly=False``;
    ``tests/query/test_hourly_rollup.py`` proves it), because a piece is only read
    from a coarser table when every window boundary falls on that table's grain.
    """
    assert set(query.group_by) <= set(GROUPS) and set(query.columns) <= set(COLUMNS)
    assert set(query.filters) <= set(GROUPS)
    where = [f"tenant = {quote(query.tenant)}"]
    for name, values in query.filters.items():
        where.append(f"{name} IN ({', '.join(quote(v) for v in values)})")
    pieces = _smallest(query, _pieces(query)) if hourly else [(MINUTES, query.start, query.end)]
    reads = _per_table(pieces)
    if len(reads) == 1:
        table, ranges = reads[0]
        return _select(database, table, query, [*where, *ranges], limit, outer=True)
    parts = [
        _select(database, table, query, [*where, *ranges], limit, outer=False)
        for table, ranges in reads
    ]
    keys = _keys(query)
    sums = ", ".join(_outer_sum(c) for c in query.columns)
    select = ", ".join([*keys, sums])
    union = " UNION ALL ".join(parts)
    sql = f"SELECT {select} FROM ({union})"
    if keys:
        sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)} LIMIT {int(limit)}"
    return sql


Piece = tuple[str, datetime | None, datetime | None]


def _per_table(pieces: list[Piece]) -> list[tuple[str, list[str]]]:
    """One read per table: its pieces' ranges joined by OR (the WHERE conditions).

    Why: each SELECT of the union costs the engine a fixed ~5-10 ms (measured on
    the bench's month: the two minute edges of unaligned bounds 10 + 9 ms as two
    reads, 13 ms as one), about as much as the month of hours itself. Exact: the
    pieces of a range never overlap (``_pieces``), so a row matches at most one of
    the ORed ranges, as it matched at most one of the SELECTs.
    """
    ranges: dict[str, list[list[str]]] = {}
    for table, start, end in pieces:
        ranges.setdefault(table, []).append(_range(start, end))
    out = []
    for table, conditions in ranges.items():
        if len(conditions) == 1:
            out.append((table, conditions[0]))
        else:
            # Several pieces of one table are bounded on both sides (only the
            # outermost piece of a range can be open), so none is empty here.
            assert all(conditions), pieces
            joined = " OR ".join(f"({' AND '.join(c)})" for c in conditions)
            out.append((table, [f"({joined})"]))
    return out


def _pieces(query: MeterQuery) -> list[Piece]:
    """``[start, end)`` as (table, start, end) pieces, coarsest first; None: unbounded."""
    hours = _hourly(query)
    if hours is None:
        return [(MINUTES, query.start, query.end)]
    first, last = hours
    middle: list[Piece] = [(HOURS, first, last)]
    if _daily(query):
        day_first = None if first is None else _ceil_day(first)
        day_last = None if last is None else _floor_day(last)
        if day_first is None or day_last is None or day_first < day_last:
            middle = [(DAYS, day_first, day_last)]
            if first is not None and day_first is not None and first < day_first:
                middle.append((HOURS, first, day_first))
            if last is not None and day_last is not None and day_last < last:
                middle.append((HOURS, day_last, last))
    out = middle
    if query.start is not None and first is not None and query.start < first:
        out.append((MINUTES, query.start, first))
    if query.end is not None and last is not None and last < query.end:
        out.append((MINUTES, last, query.end))
    return out


def _smallest(query: MeterQuery, pieces: list[Piece]) -> list[Piece]:
    """Each piece read from the smallest table of its grain that keeps every dimension
    the query groups or filters by. Exact: the tenant-wide tables are the subject ones
    summed over subject, and a query that neither groups nor filters by subject sums
    over it anyway."""
    needed = set(query.group_by) | set(query.filters)
    return [
        (
            next(
                t
                for t, dims in _BY_GRAIN.get(table, ((table, frozenset(GROUPS)),))
                if needed <= dims
            ),
            start,
            end,
        )
        for table, start, end in pieces
    ]


def _daily(query: MeterQuery) -> bool:
    """Can whole UTC days be read as days? Every window is then a union of UTC days:
    none (one window), or day/month windows in UTC itself."""
    return query.window == "none" or (
        query.window in ("day", "month") and query.timezone in ("UTC", "Etc/UTC")
    )


def _floor_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(moment: datetime) -> datetime:
    floor = _floor_day(moment)
    return floor if floor == moment else floor + timedelta(days=1)


def _keys(query: MeterQuery) -> list[str]:
    return (["window_start_s"] if query.window != "none" else []) + list(query.group_by)


def _select(
    database: str, table: str, query: MeterQuery, where: list[str], limit: int, *, outer: bool
) -> str:
    """One SELECT over ``table`` (minutes or hours). ``outer``: the answer itself, sums as
    text; else a part of the union, sums as numbers for the outer SELECT to add up."""
    select: list[str] = []
    window = window_sql(query.window, query.timezone)
    if window is not None:
        select.append(f"{window} AS window_start_s")
    select.extend(query.group_by)
    for name in query.columns:
        select.append(_outer_sum(name) if outer else f"sum({name}) AS {name}")
    sql = f"SELECT {', '.join(select)} FROM {database}.{table} WHERE {' AND '.join(where)}"
    keys = _keys(query)
    if keys:
        # SummingMergeTree: a group may still be spread over unmerged rows, so
        # always sum and group, never read rows as they are.
        sql += f" GROUP BY {', '.join(keys)}"
        if outer:
            sql += f" ORDER BY {', '.join(keys)} LIMIT {int(limit)}"
    return sql


def _outer_sum(column: str) -> str:
    # Money as text: the engine's JSON would turn a Decimal(38, 12) into a float
    # (cents lost on large totals). Counts as UInt64: exact in JSON as long as the
    # engine writes them unquoted (ANSWER_SETTINGS), and then already the int the
    # answer sends, with no per-value parsing in Python.
    return (
        f"toString(sum({column})) AS {column}"
        if column in DECIMALS
        else f"sum({column}) AS {column}"
    )


# Appended to build_sql's SELECT by the endpoint (answer_rows reads the JSONCompact it
# returns): UInt64 as JSON numbers, not strings (orjson reads them as exact ints).
ANSWER_SETTINGS = " SETTINGS output_format_json_quote_64bit_integers = 0"


def _range(start: datetime | None, end: datetime | None, column: str = "window_start") -> list[str]:
    out = []
    if start is not None:
        out.append(f"{column} >= toDateTime({_seconds(start)}, 'UTC')")
    if end is not None:
        out.append(f"{column} < toDateTime({_seconds(end)}, 'UTC')")
    return out


def _hourly(query: MeterQuery) -> tuple[datetime | None, datetime | None] | None:
    """The whole hours ``[first, last)`` of the range to read from ``usage_meters_1h``, or None.

    None (minutes only) when the window is finer than an hour, when the range holds
    no whole hour, or when a window boundary could fall inside an hour: an
    hour/day/month window in a zone whose UTC offset is not a whole number of hours
    at some instant of the range (Asia/Kolkata, +05:30): the table's hours are UTC
    hours. An unbounded side stays unbounded (None).
    """
    if query.window == "minute":
        return None
    first = None if query.start is None else _ceil_hour(query.start)
    last = None if query.end is None else _floor_hour(query.end)
    if first is not None and last is not None and first >= last:
        return None
    if query.window != "none" and not _whole_hours(query.timezone, query.start, query.end):
        return None
    return first, last


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + _HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _whole_hours(timezone: str, start: datetime | None, end: datetime | None) -> bool:
    """Is the zone's UTC offset a whole number of hours at every instant of [start, end)?"""
    if timezone in ("UTC", "Etc/UTC"):
        return True
    first = (start or EPOCH).year
    final = ((end or _LATEST) - timedelta(microseconds=1)).year
    if final - first + 1 > _MAX_CHECKED_YEARS:
        return False
    return all(_whole_hour_year(timezone, year) for year in range(first, final + 1))


@functools.lru_cache(maxsize=256)
def _whole_hour_year(timezone: str, year: int) -> bool:
    """Every hour of the UTC ``year``: offsets change only at transitions, and tzdb's
    transitions are on whole minutes, so one look an hour cannot miss a non-whole offset
    that lasts an hour or more; a shorter one does not exist in tzdb."""
    zone = ZoneInfo(timezone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    while moment < end:
        offset = moment.astimezone(zone).utcoffset()
        if offset is None or offset % _HOUR:
            return False
        moment += _HOUR
    return True


def _seconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(seconds=1)


def window_end(start: datetime, window: str, zone: ZoneInfo) -> datetime:
    """The exclusive end of the window starting at ``start`` (UTC)."""
    if window == "minute":
        return start + timedelta(minutes=1)
    if window == "hour":
        # Always 60 real minutes, in every zone: at a DST change the repeated
        # local hour is two windows, the skipped one none (docs/query.md).
        return start + timedelta(hours=1)
    local = start.astimezone(zone)
    if window == "day":
        following = local.date() + timedelta(days=1)
    else:
        following = (local.date().replace(day=28) + timedelta(days=4)).replace(day=1)
    # Midnight of the next local day or month: 23 or 25 hours across a DST change.
    return datetime.combine(following, time(), zone).astimezone(UTC)


def shape_rows(query: MeterQuery, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Engine rows -> answer rows: windows as UTC RFC 3339, counts as int, money as text."""
    zone = ZoneInfo(query.timezone)
    # A month of hour windows is 720 starts shared by every group: format each once
    # (two RFC 3339 times and a zoneinfo step a row were most of the shaping time).
    windows: dict[Any, tuple[str, str]] = {}
    converters = [(c, int if c in COUNTS else _decimal_text) for c in query.columns]
    out = []
    for row in rows:
        shaped: dict[str, Any] = {}
        if query.window != "none":
            key = row["window_start_s"]
            times = windows.get(key)
            if times is None:
                start = EPOCH + timedelta(seconds=int(key))
                times = (format_ms(start), format_ms(window_end(start, query.window, zone)))
                windows[key] = times
            shaped["window_start"], shaped["window_end"] = times
        for name in query.group_by:
            shaped[name] = row[name]
        for column, convert in converters:
            shaped[column] = convert(row[column])
        out.append(shaped)
    return out


def answer_rows(query: MeterQuery, data: list[list[Any]]) -> list[dict[str, Any]]:
    """The engine's JSONCompact rows of build_sql (+ ANSWER_SETTINGS) -> answer rows.

    What ``shape_rows`` does, without a dict per engine row first nor a parse per
    value: counts come as ints, money as the engine's exact text (checked in place),
    windows formatted once each; each answer row is one ``dict(zip(...))``. The
    answer is the same, key for key and byte for byte (``tests/query`` pins it).
    """
    header = csv_header(query)
    offset = 1 if query.window != "none" else 0  # engine column 0: window_start_s
    money = _money_columns(query)
    for row in data:
        for i in money:
            value = row[i]
            if value[-1:] == "0" or "e" in value or "E" in value:
                row[i] = _decimal_text(value)
    if not offset:
        return [dict(zip(header, row, strict=True)) for row in data]
    zone = ZoneInfo(query.timezone)
    windows: dict[Any, tuple[str, str]] = {}
    out = []
    for row in data:
        key = row[0]
        times = windows.get(key)
        if times is None:
            start = EPOCH + timedelta(seconds=int(key))
            times = (format_ms(start), format_ms(window_end(start, query.window, zone)))
            windows[key] = times
        out.append(dict(zip(header, (*times, *row[1:]), strict=True)))
    return out


def _frame(query: MeterQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "from": format_ms(query.start) if query.start else None,
        "to": format_ms(query.end) if query.end else None,
        "window": query.window,
        "timezone": query.timezone,
        "group_by": list(query.group_by),
        "columns": list(query.columns),
        "rows": rows,
    }


def _decimal_text(value: str) -> str:
    # The engine's text of a Decimal has no exponent and no trailing zeros
    # ("1.5", "100", "0.000000000001"): already what we send. Anything else (a
    # trailing zero, an exponent) goes through Decimal: plain notation always ("1E-12"
    # is a valid Decimal but not what a spreadsheet reads).
    if value[-1:] != "0" and "e" not in value.lower():
        return value
    return format(Decimal(value).normalize(), "f")


class MeterRow(BaseModel):
    """One window x group. Only the asked-for keys appear (window ones unless window=none)."""

    model_config = ConfigDict(extra="forbid")

    window_start: str | None = Field(None, description="UTC, RFC 3339, inclusive.")
    window_end: str | None = Field(None, description="UTC, RFC 3339, exclusive.")
    subject: str | None = None
    model: str | None = None
    feature: str | None = None
    provider: str | None = None
    type: str | None = None
    unit: str | None = None
    events: int | None = None
    unpriced_events: int | None = None
    estimated_events: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None
    images: int | None = None
    quantity: str | None = Field(None, description="Decimal string.")
    cost_usd: str | None = Field(None, description="Decimal string, what the provider charges.")
    price_usd: str | None = Field(None, description="Decimal string, what the customer pays.")


class MeterAnswer(BaseModel):
    """The body of ``GET /v1/usage`` (JSON)."""

    model_config = ConfigDict(frozen=True)

    from_: str | None = Field(None, alias="from", description="Inclusive, UTC; null: unbounded.")
    to: str | None = Field(None, description="Exclusive, UTC; null: unbounded.")
    window: Literal["minute", "hour", "day", "month", "none"]
    timezone: str
    group_by: list[str]
    columns: list[str]
    rows: list[MeterRow]


async def get_meters(reader: Reader, request: Request) -> Response:
    principal = await read_principal(reader, request)
    query, problems = parse_query(request.query_params, principal, reader.billing_timezone)
    fmt = _format(request, problems)
    if problems:
        raise HTTPProblem(422, "invalid-query", "the query parameters are invalid", problems)
    query = principal.restrict(query)
    if reader.sink is None:
        raise HTTPProblem(
            404,
            "reads-not-served-here",
            "this process has no store attached; query a `meterline run` process or ClickHouse",
        )
    try:
        answer = await asyncio.to_thread(usage_answer, reader.sink, reader.sealed, query)
    except StoreError as exc:
        raise HTTPProblem(
            503, "store-unavailable", f"the store did not answer: {exc}", retry_after=1
        ) from exc
    if answer.rows > MAX_ROWS:
        raise HTTPProblem(
            422,
            "too-many-rows",
            "the answer has too many rows",
            [
                Problem(
                    "too-many-rows",
                    "window",
                    f"over {MAX_ROWS} rows: use a coarser window, "
                    "fewer group_by or a shorter from/to",
                )
            ],
        )
    if fmt == "csv":
        return Response(to_csv(query, answer_dicts(query, answer)), 200, media_type=CSV_TYPE)
    return Response(answer_body(query, answer), 200, media_type="application/json")


def usage_answer(
    sink: SqlReader, sealed: SealedAnswers | None, query: MeterQuery, cut: datetime | None = None
) -> Answer:
    """The answer to ``query``: one engine read, or, with ``sealed`` (chDB in this
    process), the part before ``cut`` (default: the start of the current UTC hour) from
    memory when it is still exact and the rest from the engine, added up
    (query/sealed_answers.py)."""
    parts = None if sealed is None else split(query, cut or closed_cut(sealed.changes))
    if sealed is None or parts is None:
        return Answer(b"", 0, _engine_rows(sink, query))
    closed, rest = parts
    sql = build_sql(sink.database, closed) + ANSWER_SETTINGS
    # The epoch BEFORE the read: a write landing during it makes this answer unusable
    # (it may or may not hold the write), never served as if it held it.
    epoch = sealed.changes.epoch(query.tenant)
    kept = sealed.get(sql, epoch)
    if kept is None:
        kept = _sealed(query, orjson.loads(sink.query_raw(sql, "JSONCompact"))["data"])
        sealed.put(sql, epoch, kept)
    if rest is None:
        return kept
    n = _key_count(query)
    money = set(_money_columns(query))
    fresh = _engine_rows(sink, rest)
    tail = merge(kept.tail, fresh, n, money, windowed=query.window != "none")
    return Answer(kept.head, kept.head_rows, tail)


def _engine_rows(sink: SqlReader, query: MeterQuery) -> list[list[Any]]:
    sql = build_sql(sink.database, query) + ANSWER_SETTINGS
    data: list[list[Any]] = orjson.loads(sink.query_raw(sql, "JSONCompact"))["data"]
    return data


def _sealed(query: MeterQuery, data: list[list[Any]]) -> Answer:
    """A closed range's rows -> Answer: every window but the last shaped into JSON once.

    Only the last window can be the one the cut falls in (and so get more from the
    open part); the others are final, and shaping them (~2-3 µs a row: windows
    formatted, a dict per row) is most of a request's Python time."""
    if query.window == "none" or len(data) > MAX_ROWS:
        return Answer(b"", 0, data)
    last = bisect_left(data, data[-1][0], key=lambda r: r[0]) if data else 0
    head = orjson.dumps(answer_rows(query, data[:last]))[1:-1]
    return Answer(head, last, data[last:])


def answer_body(query: MeterQuery, answer: Answer) -> bytes:
    """The JSON body of ``GET /v1/usage``: the frame, the shaped head as it is, the tail shaped now.

    Byte for byte what ``orjson.dumps(_frame(query, all rows shaped))`` gives (orjson
    writes no spaces: a list is ``[`` + its items comma-joined + ``]``)."""
    tail = orjson.dumps(answer_rows(query, [list(r) for r in answer.tail]))[1:-1]
    frame = orjson.dumps(_frame(query, []))
    assert frame.endswith(b"[]}"), frame[-20:]
    comma = b"," if answer.head and tail else b""
    return b"".join((frame[:-2], answer.head, comma, tail, b"]}"))


def answer_dicts(query: MeterQuery, answer: Answer) -> list[dict[str, Any]]:
    """Every row shaped (the CSV answer): the head read back from its JSON."""
    head = orjson.loads(b"[" + answer.head + b"]") if answer.head else []
    return [*head, *answer_rows(query, [list(r) for r in answer.tail])]


def _key_count(query: MeterQuery) -> int:
    """The key columns at the start of an engine row: the window (if any), the groups."""
    return (1 if query.window != "none" else 0) + len(query.group_by)


def _money_columns(query: MeterQuery) -> list[int]:
    """The indexes of the Decimal columns (engine text) in an engine row."""
    n = _key_count(query)
    return [n + i for i, c in enumerate(query.columns) if c in DECIMALS]


def _format(request: Request, problems: list[Problem]) -> str:
    fmt = request.query_params.get("format")
    if fmt is None:
        accept = request.headers.get("accept", "")
        return "csv" if "text/csv" in accept and "application/json" not in accept else "json"
    if fmt not in ("json", "csv"):
        problems.append(Problem("invalid", "format", "must be json or csv"))
    return fmt


def csv_header(query: MeterQuery) -> list[str]:
    window = ["window_start", "window_end"] if query.window != "none" else []
    return [*window, *query.group_by, *query.columns]


def to_csv(query: MeterQuery, rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    header = csv_header(query)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in header])
    return buffer.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> str:
    text = str(value)
    # A subject like "=HYPERLINK(...)" would run as a formula in a spreadsheet
    # opened by finance (CSV injection): prefix it so it stays text.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


_GROUP_LIST = list[Literal["subject", "model", "feature", "provider", "type", "unit"]]
_COLUMN_LIST = list[
    Literal[
        "events", "unpriced_events", "estimated_events", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
        "input_audio_tokens", "output_audio_tokens", "images", "quantity", "cost_usd",
        "price_usd",
    ]
]  # fmt: skip
_VALUES = list[Annotated[str, Field(max_length=_MAX_VALUE_CHARS)]]

GET_METERS = Operation(
    "GET",
    "Usage totals from the meters, by window and grouping (JSON or CSV)",
    description="API key (scope read) or a customer-scoped portal token (then only its "
    "subject, and its features if it names some). See docs/query.md.",
    security=API_KEY,
    parameters=(
        Param(
            "from",
            "query",
            description="Inclusive. YYYY-MM-DD (midnight in `timezone`) "
            "or RFC 3339 with offset, on a whole minute. Default: unbounded.",
        ),
        Param("to", "query", description="Exclusive, same forms. Default: unbounded."),
        Param(
            "window",
            "query",
            Literal["minute", "hour", "day", "month", "none"],
            "Default none (one row per group).",
        ),
        Param(
            "timezone",
            "query",
            description="IANA name for hour/day/month windows and "
            "date bounds. Default: the billing timezone.",
        ),
        Param(
            "group_by",
            "query",
            _GROUP_LIST,
            "Repeated or comma-separated. `user` is not a meter dimension: 422.",
        ),
        Param("columns", "query", _COLUMN_LIST, "Repeated or comma-separated. Default: all."),
        Param(
            "format",
            "query",
            Literal["json", "csv"],
            "Default json, or csv when Accept is text/csv.",
        ),
        *(Param(name, "query", _VALUES, f"Only these {name}s (repeatable).") for name in GROUPS),
    ),
    responses={
        200: Reply(
            "Rows ordered by window, then groups.",
            {"application/json": MeterAnswer, "text/csv": str},
        ),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
