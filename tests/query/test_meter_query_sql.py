"""``GET /v1/usage``'s SQL on the real engine (chDB): windows in a timezone, DST, hostile values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from ingest.auth import ApiKey
from query.meters import MeterQuery, build_sql, parse_query, shape_rows
from query.principal import Principal
from sinks.base import quote
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

HOSTILE = [
    "x' OR 1=1 OR subject = '",
    "x\\' OR 1=1 --",
    "x'); DROP TABLE mtest.usage_meters; --",
    "\\",
    "x\\",
    "' UNION ALL SELECT 1 --",
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path_factory.mktemp("chdb") / "db", "mtest")
    migrate(chdb)
    # Minute meters as the processor's view writes them, for two tenants. Around
    # Europe/Paris's fall-back (2024-10-27 01:00 UTC: local 02:00-03:00 twice) and
    # spring-forward (2024-03-31 01:00 UTC: local 02:00-03:00 skipped).
    rows = [
        ("t1", "2024-10-27 00:30:00", "acme", "1.5"),  # local 02:30 CEST
        ("t1", "2024-10-27 01:30:00", "acme", "2.25"),  # local 02:30 CET (same wall clock)
        ("t1", "2024-10-27 02:10:00", "acme", "1"),
        ("t1", "2024-03-31 00:59:00", "acme", "4"),  # local 01:59 CET
        ("t1", "2024-03-31 01:00:00", "acme", "8"),  # local 03:00 CEST
        ("t1", "2024-10-26 22:30:00", "globex", "16"),  # Paris: already Oct 27
        ("t2", "2024-10-27 00:30:00", "acme", "1000"),  # another tenant
    ]
    values = ", ".join(
        f"({quote(t)}, toDateTime({quote(w)}, 'UTC'), {quote(s)}, 'm', 'f', 'p', "
        f"'io.meterline.usage.tokens', 'token', 1, 10, {quote(c)}, {quote(c)})"
        for t, w, s, c in rows
    )
    chdb.run_sql(
        "INSERT INTO mtest.usage_meters (tenant, window_start, subject, model, feature, "
        f"provider, type, unit, events, input_tokens, cost_usd, price_usd) VALUES {values}",
        "CSV",
    )
    yield chdb
    chdb.close()


def _query(**params: Any) -> MeterQuery:
    principal = Principal("t1", ApiKey("test", "t1"))
    query, problems = parse_query(QueryParams(params), principal, "UTC")
    assert problems == []
    return query


def _run(engine: ChdbEngine, query: MeterQuery) -> list[dict[str, Any]]:
    return shape_rows(query, engine.sql.query_rows(build_sql("mtest", query)))


def test_hour_windows_across_dst_are_sixty_real_minutes_each(engine: ChdbEngine) -> None:
    query = _query(
        window="hour",
        timezone="Europe/Paris",
        columns="events,cost_usd",
        **{"from": "2024-10-27T00:00:00Z", "to": "2024-10-27T03:00:00Z"},
    )
    rows = _run(engine, query)
    # The repeated local hour 02:00-03:00 is two windows, not one of 120 minutes.
    assert [(r["window_start"], r["window_end"], r["cost_usd"]) for r in rows] == [
        ("2024-10-27T00:00:00.000Z", "2024-10-27T01:00:00.000Z", "1.5"),
        ("2024-10-27T01:00:00.000Z", "2024-10-27T02:00:00.000Z", "2.25"),
        ("2024-10-27T02:00:00.000Z", "2024-10-27T03:00:00.000Z", "1"),
    ]


def test_day_windows_follow_the_timezone_and_last_25_hours_at_fall_back(
    engine: ChdbEngine,
) -> None:
    query = _query(
        window="day",
        timezone="Europe/Paris",
        group_by="subject",
        columns="cost_usd",
        **{"from": "2024-10-26", "to": "2024-10-28"},
    )
    rows = _run(engine, query)
    assert rows == [
        {
            "window_start": "2024-10-26T22:00:00.000Z",
            "window_end": "2024-10-27T23:00:00.000Z",
            "subject": "acme",
            "cost_usd": "4.75",
        },
        {
            "window_start": "2024-10-26T22:00:00.000Z",
            "window_end": "2024-10-27T23:00:00.000Z",
            "subject": "globex",
            "cost_usd": "16",
        },
    ]
    utc = _run(
        engine,
        _query(window="day", columns="cost_usd", **{"from": "2024-10-26", "to": "2024-10-28"}),
    )
    assert [(r["window_start"], r["cost_usd"]) for r in utc] == [
        ("2024-10-26T00:00:00.000Z", "16"),
        ("2024-10-27T00:00:00.000Z", "4.75"),
    ]


def test_spring_forward_day_is_23_hours_and_month_starts_at_local_midnight(
    engine: ChdbEngine,
) -> None:
    day = _run(
        engine,
        _query(
            window="day",
            timezone="Europe/Paris",
            columns="cost_usd",
            **{"from": "2024-03-31", "to": "2024-04-01"},
        ),
    )
    assert [(r["window_start"], r["window_end"], r["cost_usd"]) for r in day] == [
        ("2024-03-30T23:00:00.000Z", "2024-03-31T22:00:00.000Z", "12")
    ]
    month = _run(
        engine,
        _query(
            window="month",
            timezone="Europe/Paris",
            columns="cost_usd",
            **{"from": "2024-03-01", "to": "2024-11-01"},
        ),
    )
    assert [(r["window_start"], r["window_end"], r["cost_usd"]) for r in month] == [
        ("2024-02-29T23:00:00.000Z", "2024-03-31T22:00:00.000Z", "12"),
        ("2024-09-30T22:00:00.000Z", "2024-10-31T23:00:00.000Z", "20.75"),
    ]


def test_only_the_callers_tenant_is_summed(engine: ChdbEngine) -> None:
    rows = _run(engine, _query(columns="events,cost_usd"))
    assert rows == [{"events": 7 - 1, "cost_usd": "32.75"}]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_filter_values_match_nothing_and_inject_nothing(
    engine: ChdbEngine, hostile: str
) -> None:
    for name in ("subject", "model", "feature", "provider", "type", "unit"):
        rows = _run(engine, _query(group_by="subject", columns="events", **{name: hostile}))
        assert rows == [], (name, hostile)
    # The table is still there and still whole.
    assert (
        engine.sql.scalar("SELECT sum(events) FROM mtest.usage_meters WHERE tenant IN ('t1', 't2')")
        == 7
    )


def test_a_hostile_subject_is_matched_exactly_when_it_exists(engine: ChdbEngine) -> None:
    hostile = HOSTILE[0]
    engine.run_sql(
        "INSERT INTO mtest.usage_meters (tenant, window_start, subject, events, cost_usd) "
        f"VALUES ('t9', toDateTime('2024-01-01 00:00:00', 'UTC'), {quote(hostile)}, 3, 1)",
        "CSV",
    )
    principal = Principal("t9", ApiKey("test", "t9"))
    query, problems = parse_query(
        QueryParams({"subject": hostile, "group_by": "subject", "columns": "events"}),
        principal,
        "UTC",
    )
    assert problems == []
    assert _run(engine, query) == [{"subject": hostile, "events": 3}]


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"window": "week"}, "window", "invalid"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid"),
        ({"timezone": "'; DROP TABLE x; --"}, "timezone", "invalid"),
        ({"group_by": "user"}, "group_by", "not-metered"),
        ({"group_by": "subject) FROM system.tables --"}, "group_by", "invalid"),
        ({"columns": "cost_usd, sleep(3)"}, "columns", "invalid"),
        ({"user": "u1"}, "user", "not-metered"),
        ({"from": "2024-01-01T10:00:30Z"}, "from", "invalid"),
        ({"from": "2024-01-01T10:00"}, "from", "invalid"),
        ({"to": "yesterday"}, "to", "invalid"),
        ({"from": "2024-01-02", "to": "2024-01-01"}, "to", "invalid"),
        ({"groupby": "subject"}, "groupby", "unknown"),
        ({"subject": "a\x00b"}, "subject", "invalid"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, str], field: str, code: str) -> None:
    principal = Principal("t1", ApiKey("test", "t1"))
    _, problems = parse_query(QueryParams(params), principal, "UTC")
    assert [(p.field, p.code) for p in problems] == [(field, code)]


def test_window_end_of_a_month_is_the_next_first() -> None:
    from zoneinfo import ZoneInfo

    from query.meters import window_end

    start = datetime(2024, 1, 31, 23, tzinfo=UTC)  # Feb 1 00:00 in Paris
    assert window_end(start, "month", ZoneInfo("Europe/Paris")) == datetime(
        2024, 2, 29, 23, tzinfo=UTC
    )
