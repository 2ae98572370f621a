"""``GET /v1/usage`` answers of closed time kept in memory stay exact (query/sealed_answers.py).

The answer cut at a random instant, its closed part kept and read back from memory,
equals the answer read whole from the engine, byte for byte (JSON and CSV), for the
random queries of tests/query/test_hourly_rollup.py; and a write into closed time (a
late event through the processor's writer, a statement on the meter tables) is in
the very next answer, while another tenant's late events leave the kept answers alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query.meters import MeterQuery, answer_body, answer_dicts, to_csv, usage_answer
from query.reader import Reader
from query.sealed_answers import Answer, SealedAnswers
from sinks.base import EVENT_COLUMNS
from sinks.changes import MeterChanges
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate
from sinks.reader import SqlReader
from tests.query.test_hourly_rollup import (
    BEGIN,
    DB,
    SPAN_MINUTES,
    SUMMED,
    _events,
    _insert,
    queries,
)

EVENTS = _events()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path_factory.mktemp("chdb") / "db", DB)
    migrate(chdb)
    _insert(chdb, EVENTS)
    yield chdb
    chdb.close()


def _body(engine: ChdbEngine, sealed: SealedAnswers | None, query: MeterQuery, cut: Any) -> bytes:
    return answer_body(query, usage_answer(engine.sql, sealed, query, cut))


def _csv(engine: ChdbEngine, sealed: SealedAnswers | None, query: MeterQuery, cut: Any) -> bytes:
    return to_csv(query, answer_dicts(query, usage_answer(engine.sql, sealed, query, cut)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries(), cut_minutes=st.integers(min_value=-60, max_value=SPAN_MINUTES + 60))
def test_an_answer_cut_and_kept_equals_the_answer_read_whole(
    engine: ChdbEngine, query: MeterQuery, cut_minutes: int
) -> None:
    # Cuts on the hour as the endpoint makes them, and anywhere else too: the
    # partition must hold for any instant (window in progress, edges, empty parts).
    cut = BEGIN + timedelta(minutes=cut_minutes)
    sealed = SealedAnswers(engine.meter_changes, 64 << 20)
    whole = _body(engine, None, query, None)
    assert _body(engine, sealed, query, cut) == whole  # read, kept
    hits = sealed.hits
    assert _body(engine, sealed, query, cut) == whole  # from memory
    if query.start is None or query.start < cut:
        assert sealed.hits == hits + 1
    assert _csv(engine, sealed, query, cut) == _csv(engine, None, query, None)


def _month(tenant: str = "t1") -> MeterQuery:
    return MeterQuery(
        tenant, BEGIN, BEGIN + timedelta(days=5), "hour", "UTC", ("subject",), {}, SUMMED
    )


def _late_batch(tenant: str, moment: datetime, n: int, tag: str) -> dict[str, list[Any]]:
    """Columns of ``n`` events of ``tenant`` at ``moment`` (the processor's writer input)."""
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    cols = {name: [defaults[kind]] * n for name, kind in EVENT_COLUMNS.items()}
    cols.update(
        id=[f"{tag}-{i}" for i in range(n)],
        tenant=[tenant] * n,
        source=["/s"] * n,
        type=["io.meterline.usage.tokens"] * n,
        unit=["token"] * n,
        subject=["acme"] * n,
        model=["gpt-4o"] * n,
        feature=["chat"] * n,
        time=[int(moment.timestamp() * 1000)] * n,
        input_tokens=[100] * n,
        cost_usd=[Decimal("0.000000000007")] * n,
        price_usd=[Decimal("0.000000000011")] * n,
        priced=[1] * n,
    )
    return cols


def test_a_late_event_is_in_the_next_answer(engine: ChdbEngine) -> None:
    query = _month()
    sealed = SealedAnswers(engine.meter_changes, 64 << 20)
    cut = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = _body(engine, sealed, query, cut)
    assert _body(engine, sealed, query, cut) == before and sealed.hits == 1
    # Through the processor's writer, as a late event is stored: 2024 is closed time.
    engine.writer().insert(_late_batch("t1", BEGIN + timedelta(hours=30), 3, "late"), "late-1")
    after = _body(engine, sealed, query, cut)
    assert after != before
    assert after == _body(engine, None, query, None)
    assert sealed.hits == 1  # the kept answer was dropped, not served


def test_another_tenants_late_event_keeps_the_answer(engine: ChdbEngine) -> None:
    query = _month("t1")
    sealed = SealedAnswers(engine.meter_changes, 64 << 20)
    cut = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = _body(engine, sealed, query, cut)
    engine.writer().insert(_late_batch("t2", BEGIN + timedelta(hours=30), 2, "other"), "other-1")
    assert _body(engine, sealed, query, cut) == before
    assert sealed.hits == 1


def test_an_event_of_the_current_hour_leaves_closed_answers_alone(engine: ChdbEngine) -> None:
    # Current traffic is the open part, read every time: it must not empty the memory.
    query = _month("t1")
    sealed = SealedAnswers(engine.meter_changes, 64 << 20)
    cut = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = _body(engine, sealed, query, cut)
    now = datetime.now(UTC) + timedelta(minutes=5)  # ahead of the hour's start either way
    engine.writer().insert(_late_batch("t1", now, 2, "now"), "now-1")
    assert _body(engine, sealed, query, cut) == before
    assert sealed.hits == 1


@pytest.mark.parametrize(
    "statement",
    [
        # An operator's correction on the meters, and a repair's INSERT.
        "ALTER TABLE {db}.usage_meters_1h UPDATE events = events + 1 WHERE subject = 'acme' "
        "SETTINGS mutations_sync = 1",
        "INSERT INTO {db}.usage_meters (tenant, window_start, subject, events) "
        "VALUES ('t1', toDateTime('2024-10-26 10:07:00', 'UTC'), 'acme', 5)",
    ],
)
def test_a_statement_writing_the_meters_drops_every_kept_answer(
    engine: ChdbEngine, statement: str
) -> None:
    query = _month("t1")
    sealed = SealedAnswers(engine.meter_changes, 64 << 20)
    cut = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = _body(engine, sealed, query, cut)
    engine.run_sql(statement.format(db=DB), "CSV")
    after = _body(engine, sealed, query, cut)
    assert after != before and after == _body(engine, None, query, None)
    assert sealed.hits == 0


def test_a_write_during_the_read_is_never_served_from_memory() -> None:
    # The epoch is read before the engine read: a write that lands while the read
    # runs bumps it, so what that read kept (with or without the write) is not used.
    changes = MeterChanges()
    sealed = SealedAnswers(changes, 1 << 20)
    epoch = changes.epoch("t1")
    changes.tenants_wrote_late({"t1"})  # lands while the read runs
    sealed.put("sql", epoch, Answer(b"", 0, []))
    assert sealed.get("sql", changes.epoch("t1")) is None


def test_reads_and_other_tables_do_not_drop_kept_answers() -> None:
    changes = MeterChanges()
    for sql in (
        "SELECT * FROM usage_meters",
        "  -- a comment\n  WITH x AS (SELECT 1) SELECT * FROM usage_events",
        "INSERT INTO budget_versions VALUES (1)",
    ):
        changes.statement_ran(sql)
    assert changes.epoch("t1") == (0, 0)
    changes.statement_ran("TRUNCATE TABLE usage_meters_1h")
    assert changes.epoch("t1") == (1, 0)


def test_memory_is_bounded_least_recently_used_first() -> None:
    sealed = SealedAnswers(MeterChanges(), 4000)
    for n in range(5):
        sealed.put(f"q{n}", (0, 0), Answer(b"x" * 900, 1, []))
    assert sealed.get("q0", (0, 0)) is None  # dropped first
    assert sealed.get("q4", (0, 0)) is not None
    sealed.put("big", (0, 0), Answer(b"x" * 1001, 1, []))  # over a quarter: never kept
    assert sealed.get("big", (0, 0)) is None


def test_a_server_store_keeps_nothing() -> None:
    # Other processes write a ClickHouse server: no epoch here can see their writes.
    reader = Reader(SqlReader(lambda sql, fmt: b"", "db"), guard=None)  # type: ignore[arg-type]
    assert reader.sealed is None


def test_the_cut_never_goes_back_when_the_clock_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kept [from, H) relies on every later write older than H being marked: a writer
    # reading a clock stepped back (NTP) to before H would not mark it.
    changes = MeterChanges()
    hour = 3_600_000
    monkeypatch.setattr("sinks.changes.now_ms", lambda: 10 * hour + 5)
    assert changes.cut_ms() == 10 * hour
    monkeypatch.setattr("sinks.changes.now_ms", lambda: 9 * hour + 30 * 60_000)
    assert changes.cut_ms() == 10 * hour
    monkeypatch.setattr("sinks.changes.now_ms", lambda: 11 * hour)
    assert changes.cut_ms() == 11 * hour
