"""``GET /v1/usage`` read through the hourly table equals the minute meters and the events.

``query.meters.build_sql`` reads whole UTC days of a range from ``usage_meters_1d``
(when every window is made of UTC days), whole hours from ``usage_meters_1h``
(``schemas/sql/120_usage_meters_1h.sql``, 121) and the minutes at the edges from the
minute rows. These tests hold it to the answer computed from the minute rows only
(``hourly=False``, the projection of migration 100 switched off too) and to an
independent Python sum of the raw events, for random ranges (aligned and not,
bounded and not), windows, groupings, filters and timezones (a DST one, a
half-hour one), on the real engine. Half of the events are stored before migration
120 and 121 (their backfills carry them), half after (their views do). Queries that
neither group nor filter by ``subject`` read the tenant-wide tables
(``usage_meters_1h_tenant``/``_1d_tenant``, migrations 122, 123) instead; the random
test draws both kinds and checks which tables each reads.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query.meters import (
    ANSWER_SETTINGS,
    COLUMNS,
    GROUPS,
    MeterQuery,
    answer_rows,
    build_sql,
    shape_rows,
)
from sinks import ddl
from sinks.base import quote
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

DB = "hourly"
# Four days around Europe/Paris's fall-back (2024-10-27 01:00 UTC) and New York's
# (2024-11-03 06:00 UTC is outside; its offset is whole hours anyway).
BEGIN = datetime(2024, 10, 25, 20, 0, tzinfo=UTC)
SPAN_MINUTES = 4 * 24 * 60
ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York")
SUBJECTS = ("acme", "globex", "initech")
MODELS = ("gpt-4o", "claude")
FEATURES = ("chat", "search")
SUMMED = ("events", "input_tokens", "cost_usd", "price_usd")


def _events() -> list[dict[str, Any]]:
    rng = random.Random(13)
    out = []
    for n in range(3000):
        minute = rng.randrange(SPAN_MINUTES)
        out.append(
            {
                "tenant": "t1" if n % 10 else "t2",
                "id": f"e{n}",
                "time": BEGIN + timedelta(minutes=minute, seconds=rng.randrange(60)),
                "subject": rng.choice(SUBJECTS),
                "model": rng.choice(MODELS),
                "feature": rng.choice(FEATURES),
                "input_tokens": rng.randrange(5000),
                # 12 decimals: any cent (or picodollar) lost by the rollup shows.
                "cost_usd": Decimal(rng.randrange(10**9)) / 10**12,
                "price_usd": Decimal(rng.randrange(10**10)) / 10**12,
            }
        )
    return out


EVENTS = _events()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path_factory.mktemp("chdb") / "db", DB)
    real = ddl.files
    with pytest.MonkeyPatch.context() as patch:
        # A database from before the hourly table: migration 120 backfills these.
        patch.setattr(
            ddl, "files", lambda db, tz="UTC": [f for f in real(db, tz) if f.version < 120]
        )
        migrate(chdb)
        _insert(chdb, EVENTS[: len(EVENTS) // 2])
    # [:4]: later migrations (130, ...) run after these.
    assert [m.version for m in migrate(chdb)][:4] == [120, 121, 122, 123]
    _insert(chdb, EVENTS[len(EVENTS) // 2 :])
    yield chdb
    chdb.close()


def _insert(chdb: ChdbEngine, events: list[dict[str, Any]]) -> None:
    # Several INSERTs (as the processor's batches): several parts, and groups spread
    # over unmerged minute and hour rows.
    for batch in range(0, len(events), 500):
        values = ", ".join(
            f"({quote(e['tenant'])}, {quote(e['id'])}, '/s', 'io.meterline.usage.tokens', "
            f"{quote(e['subject'])}, toDateTime64({quote(e['time'].strftime('%F %T'))}, 3, 'UTC'), "
            f"'p', {quote(e['model'])}, {quote(e['feature'])}, {e['input_tokens']}, 'token', 1, "
            f"{quote(str(e['cost_usd']))}, {quote(str(e['price_usd']))}, 1)"
            for e in events[batch : batch + 500]
        )
        chdb.run_sql(
            f"INSERT INTO {DB}.usage_events (tenant, id, source, type, subject, time, provider, "
            "model, feature, input_tokens, unit, quantity, cost_usd, price_usd, priced) "
            f"VALUES {values}",
            "CSV",
        )


def _answer(engine: ChdbEngine, query: MeterQuery, *, hourly: bool = True) -> list[dict[str, Any]]:
    sql = build_sql(DB, query, hourly=hourly)
    settings = ANSWER_SETTINGS
    if not hourly:
        # The minute rows only: the projection of migration 100 switched off too.
        settings += ", optimize_use_projections = 0"
    shaped = shape_rows(query, engine.sql.query_rows(sql + settings))
    # The endpoint's path (columns as the engine sent them, no dict per engine row)
    # gives the very same rows, key order included.
    fast = answer_rows(query, orjson.loads(engine.run_sql(sql + settings, "JSONCompact"))["data"])
    assert [list(r.items()) for r in fast] == [list(r.items()) for r in shaped]
    return shaped


def _window_start(moment: datetime, window: str, zone: ZoneInfo) -> datetime | None:
    """Independent of the engine: Python's zoneinfo."""
    minute = moment.replace(second=0, microsecond=0)
    if window == "none":
        return None
    if window == "minute":
        return minute
    local = minute.astimezone(zone)
    if window == "hour":
        # fold is kept by replace: the repeated local hour stays the second one.
        return local.replace(minute=0).astimezone(UTC)
    day = local.date() if window == "day" else local.date().replace(day=1)
    return datetime.combine(day, time(), zone).astimezone(UTC)


def _from_events(query: MeterQuery) -> list[dict[str, Any]]:
    zone = ZoneInfo(query.timezone)
    sums: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"events": 0, "input_tokens": 0, "cost_usd": Decimal(0), "price_usd": Decimal(0)}
    )
    for e in EVENTS:
        minute = e["time"].replace(second=0)
        if e["tenant"] != query.tenant:
            continue
        if query.start is not None and minute < query.start:
            continue
        if query.end is not None and minute >= query.end:
            continue
        if any(e[name] not in values for name, values in query.filters.items()):
            continue
        start = _window_start(e["time"], query.window, zone)
        key = (start, *(e[g] for g in query.group_by))
        into = sums[key]
        into["events"] += 1
        into["input_tokens"] += e["input_tokens"]
        into["cost_usd"] += e["cost_usd"]
        into["price_usd"] += e["price_usd"]
    out = []
    for key in sorted(sums, key=lambda k: (k[0] or BEGIN, *k[1:])):
        row: dict[str, Any] = {}
        if key[0] is not None:
            row["window_start"] = key[0].isoformat(timespec="milliseconds").replace("+00:00", "Z")
        row.update(zip(query.group_by, key[1:], strict=True))
        row.update(
            {
                c: v if isinstance(v, int) else format(v.normalize(), "f")
                for c, v in sums[key].items()
            }
        )
        out.append(row)
    if not query.group_by and query.window == "none" and not out:
        out.append({"events": 0, "input_tokens": 0, "cost_usd": "0", "price_usd": "0"})
    return out


_bounds = st.one_of(st.none(), st.integers(min_value=-90, max_value=SPAN_MINUTES + 90))


@st.composite
def queries(draw: st.DrawFn) -> MeterQuery:
    # Minutes from BEGIN; multiples of 60 (hour-aligned) drawn often on purpose.
    def bound() -> datetime | None:
        minutes = draw(
            st.one_of(_bounds, _bounds.map(lambda m: None if m is None else m // 60 * 60))
        )
        return None if minutes is None else BEGIN + timedelta(minutes=minutes)

    start, end = bound(), bound()
    if start is not None and end is not None and start >= end:
        start, end = end, start + timedelta(minutes=1) if start == end else start
    window = draw(st.sampled_from(("minute", "hour", "day", "month", "none")))
    group_by = tuple(draw(st.lists(st.sampled_from(("subject", "model", "feature")), unique=True)))
    filters: dict[str, tuple[str, ...]] = {}
    # Subject filters (a portal token's) and others, so that queries with and without
    # subject (tenant-wide tables or not) are both drawn often.
    if draw(st.booleans()):
        filters["subject"] = tuple(draw(st.sets(st.sampled_from(SUBJECTS), min_size=1)))
    if draw(st.booleans()):
        filters["model"] = tuple(draw(st.sets(st.sampled_from(MODELS), min_size=1)))
    zone = draw(st.sampled_from(ZONES))
    return MeterQuery("t1", start, end, window, zone, group_by, filters, SUMMED)


SUBJECT_TABLES = {"usage_meters", "usage_meters_1h", "usage_meters_1d"}
TENANT_TABLES = {"usage_meters", "usage_meters_1h_tenant", "usage_meters_1d_tenant"}


def _tables(sql: str) -> set[str]:
    return set(re.findall(rf"FROM {DB}\.(\w+) WHERE", sql))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries())
def test_rollup_answer_equals_minute_meters_and_raw_events(
    engine: ChdbEngine, query: MeterQuery
) -> None:
    # Which tables: the tenant-wide ones exactly when subject is neither grouped nor
    # filtered (a subject table read instead would be right, only ~10x more rows).
    tables = _tables(build_sql(DB, query))
    uses_subject = "subject" in query.group_by or "subject" in query.filters
    assert tables <= (SUBJECT_TABLES if uses_subject else TENANT_TABLES), tables
    answer = _answer(engine, query)
    assert answer == _answer(engine, query, hourly=False)
    expected = _from_events(query)
    assert [{k: v for k, v in r.items() if k != "window_end"} for r in answer] == expected


@pytest.mark.parametrize(
    ("window", "zone", "start", "end"),
    [
        # A month in Paris across its fall-back: day windows of 23 and 25 hours.
        ("day", "Europe/Paris", BEGIN + timedelta(hours=4), BEGIN + timedelta(days=3, hours=4)),
        ("hour", "UTC", BEGIN + timedelta(minutes=17), BEGIN + timedelta(days=2, minutes=43)),
        ("none", "Asia/Kolkata", BEGIN + timedelta(minutes=1), BEGIN + timedelta(hours=20)),
        ("month", "Europe/Paris", BEGIN, BEGIN + timedelta(days=3)),
    ],
)
def test_whole_hours_are_read_from_the_hourly_table(
    engine: ChdbEngine, window: str, zone: str, start: datetime | None, end: datetime | None
) -> None:
    # A regression (whole hours read from the minutes again) would still be right,
    # and 3-5x slower at the bench's scale.
    query = MeterQuery("t1", start, end, window, zone, ("subject",), {}, SUMMED)
    assert "FROM hourly.usage_meters_1h WHERE" in build_sql(DB, query)
    assert _answer(engine, query) == _answer(engine, query, hourly=False)


@pytest.mark.parametrize(
    ("window", "zone", "start", "end", "tables"),
    [
        # Any zone for window=none: days in the middle, hours and minutes at the ends.
        (
            "none",
            "Europe/Paris",
            BEGIN + timedelta(minutes=17),
            BEGIN + timedelta(days=3, hours=5, minutes=3),
            ("usage_meters_1d", "usage_meters_1h", "usage_meters "),
        ),
        ("day", "UTC", BEGIN + timedelta(hours=4), BEGIN + timedelta(days=3, hours=4), None),
        ("month", "UTC", None, None, ("usage_meters_1d",)),
        ("none", "UTC", BEGIN + timedelta(hours=1), None, ("usage_meters_1d", "usage_meters_1h")),
    ],
)
def test_whole_utc_days_are_read_from_the_daily_table(
    engine: ChdbEngine,
    window: str,
    zone: str,
    start: datetime | None,
    end: datetime | None,
    tables: tuple[str, ...] | None,
) -> None:
    query = MeterQuery("t1", start, end, window, zone, ("subject",), {}, SUMMED)
    sql = build_sql(DB, query) + " "
    assert "FROM hourly.usage_meters_1d WHERE" in sql
    for table in tables or ():
        assert f"FROM hourly.{table}" in sql
    assert _answer(engine, query) == _answer(engine, query, hourly=False)


@pytest.mark.parametrize(
    ("window", "zone"), [("day", "Europe/Paris"), ("month", "America/New_York"), ("hour", "UTC")]
)
def test_windows_that_cut_utc_days_never_read_the_daily_table(
    engine: ChdbEngine, window: str, zone: str
) -> None:
    # A Paris day starts at 22:00 or 23:00 UTC: a UTC day row would straddle two.
    query = MeterQuery("t1", BEGIN, BEGIN + timedelta(days=3), window, zone, (), {}, SUMMED)
    assert "usage_meters_1d" not in build_sql(DB, query)
    assert _answer(engine, query) == _answer(engine, query, hourly=False)


@pytest.mark.parametrize(
    ("window", "zone", "start", "end"),
    [
        # +05:30: a local day or hour starts at :30 UTC, inside an hour of the table.
        ("day", "Asia/Kolkata", BEGIN, BEGIN + timedelta(days=3)),
        ("hour", "Asia/Kolkata", BEGIN, BEGIN + timedelta(days=3)),
        ("minute", "UTC", BEGIN, BEGIN + timedelta(days=3)),
        # No whole hour inside the range.
        ("none", "UTC", BEGIN + timedelta(minutes=5), BEGIN + timedelta(minutes=65)),
    ],
)
def test_windows_that_cut_hours_are_read_from_minutes(
    engine: ChdbEngine, window: str, zone: str, start: datetime, end: datetime
) -> None:
    query = MeterQuery("t1", start, end, window, zone, (), {}, SUMMED)
    assert "usage_meters_1h" not in build_sql(DB, query)
    assert _answer(engine, query) == _answer(engine, query, hourly=False)


def test_every_group_and_column_is_summed_by_the_hourly_table(engine: ChdbEngine) -> None:
    # The table must carry every dimension and every column the API offers, or a
    # query naming the missing one fails (or sums zeros) on the hours.
    query = MeterQuery("t1", BEGIN, BEGIN + timedelta(days=2), "day", "UTC", GROUPS, {}, COLUMNS)
    assert "usage_meters_1h" in build_sql(DB, query)
    assert _answer(engine, query) == _answer(engine, query, hourly=False)


@pytest.mark.parametrize(
    ("window", "zone", "group_by", "filters", "tables"),
    [
        # The bench's shapes: tenant-wide, grouped by model, by hour and for the month.
        ("hour", "UTC", ("model",), {}, {"usage_meters_1h_tenant", "usage_meters"}),
        ("none", "UTC", (), {}, TENANT_TABLES),
        ("day", "UTC", ("feature",), {"model": ("claude",)}, TENANT_TABLES),
        (
            "hour",
            "Europe/Paris",
            ("model", "feature"),
            {},
            {"usage_meters_1h_tenant", "usage_meters"},
        ),
        # subject grouped, or filtered (as a portal token filters it): the subject tables.
        ("none", "UTC", ("subject",), {}, SUBJECT_TABLES),
        ("none", "UTC", ("model",), {"subject": ("acme",)}, SUBJECT_TABLES),
        ("hour", "UTC", (), {"subject": ("acme", "globex")}, {"usage_meters_1h", "usage_meters"}),
    ],
)
def test_the_smallest_table_that_keeps_the_asked_dimensions_is_read(
    engine: ChdbEngine,
    window: str,
    zone: str,
    group_by: tuple[str, ...],
    filters: dict[str, tuple[str, ...]],
    tables: set[str],
) -> None:
    # Unaligned ends: minutes at the edges, hours, and days in the middle where allowed.
    start = BEGIN + timedelta(minutes=17)
    end = BEGIN + timedelta(days=3, hours=5, minutes=3)
    query = MeterQuery("t1", start, end, window, zone, group_by, filters, SUMMED)
    assert _tables(build_sql(DB, query)) == tables
    assert _answer(engine, query) == _answer(engine, query, hourly=False)
    expected = _from_events(query)
    assert [{k: v for k, v in r.items() if k != "window_end"} for r in _answer(engine, query)] == (
        expected
    )
