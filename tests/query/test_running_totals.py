"""``TotalsSnapshots`` on the real engine: exact sums, one read per tenant, rollover, staleness.

The entitlement check answers from one snapshot per tenant (query/running_totals.py).
These tests drive its clocks by hand: ``clock`` is the wall clock (which local
day it is), ``tick`` the monotonic clock (how old a snapshot is).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import StoreError
from query.budget_store import Budget, Budgets
from query.running_totals import Snapshot, TotalsSnapshots, period_of
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate
from sinks.reader import SqlReader

KOLKATA = "Asia/Kolkata"  # +05:30: local midnight is 18:30 UTC, between two UTC hours
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # 15:30 in Kolkata, on the 26th
MIDNIGHT_27 = datetime(2026, 11, 26, 18, 30, tzinfo=UTC)  # 00:00 of the 27th in Kolkata
MIDNIGHT_DEC = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)  # 00:00 of 1 December in Kolkata


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb")
    migrate(engine)
    yield engine
    engine.close()


class Clocks:
    def __init__(self, now: datetime) -> None:
        self.wall = now.timestamp()
        self.mono = 1000.0

    def at(self, moment: datetime) -> None:
        self.mono += moment.timestamp() - self.wall
        self.wall = moment.timestamp()

    def later(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class GatedSql:
    """The engine's SQL, counted, and held at a gate while ``hold`` is set."""

    def __init__(self, engine: ChdbEngine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.hold = threading.Event()
        self.release = threading.Event()
        self.fail: str | None = None

    def __call__(self, sql: str, fmt: str) -> bytes:
        self.statements.append(sql)
        if self.hold.is_set():
            self.release.wait(30)
        if self.fail is not None:
            raise StoreError(self.fail)
        return self.engine.run_sql(sql, fmt)

    def reads(self, table: str) -> int:
        return sum(f".{table} " in s for s in self.statements)


def _insert(engine: ChdbEngine, scope: int, subject: str, bucket: datetime, cost: str) -> None:
    engine.run_sql(
        "INSERT INTO meterline.usage_running_totals VALUES "
        f"('t', {scope}, '{subject}', toDateTime({int(bucket.timestamp())}, 'UTC'), "
        f"'chat', 'gpt-4o', 1, {cost}, {cost})",
        "CSV",
    )


def _budget(period: str, subject: str = "acme", budget_id: str = "bgt_1") -> Budget:
    return Budget(
        "t", budget_id, 1, "create", subject, "", "", period, "cost_usd", Decimal(100), (100,),
        "hard", False, NOW, "",
    )  # fmt: skip


def _snapshots(
    engine: ChdbEngine, clocks: Clocks, sql: GatedSql | None = None
) -> tuple[TotalsSnapshots, Budgets]:
    budgets = Budgets(SqlReader(sql or engine.run_sql, "meterline"))
    snapshots = TotalsSnapshots(
        budgets,
        KOLKATA,
        refresh_s=1.0,
        max_stale_s=10.0,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    budgets.on_change = snapshots.invalidate
    return snapshots, budgets


def _used(snapshot: Snapshot, budget: Budget, now: datetime, zone: str = KOLKATA) -> Decimal:
    from zoneinfo import ZoneInfo

    assert snapshot.covers(now, ZoneInfo(zone))
    return snapshot.used(budget, period_of(budget.period, now, ZoneInfo(zone)))


def test_day_and_month_totals_equal_the_table_and_a_local_day_is_one_row(
    engine: ChdbEngine,
) -> None:
    # Every 15-minute bucket of the 26th in Kolkata (18:30 UTC on the 25th onwards).
    local_midnight = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
    for i in range(96):
        _insert(engine, 0, "acme", local_midnight + timedelta(minutes=15 * i), "0.01")
    _insert(engine, 0, "acme", local_midnight - timedelta(minutes=15), "5")  # the 25th, local
    _insert(engine, 0, "acme", datetime(2026, 10, 31, 18, 15, tzinfo=UTC), "9")  # October, local
    _insert(engine, 0, "other", local_midnight, "7")  # another subject
    _insert(engine, 1, "", local_midnight, "3")  # the tenant's row
    clocks = Clocks(NOW)
    snapshots, budgets = _snapshots(engine, clocks)
    for budget in (_budget("day"), _budget("month", budget_id="bgt_2")):
        budgets.write(budget)
    budgets.write(_budget("month", subject="", budget_id="bgt_3"))

    snapshot = snapshots.read_now("t")

    # acme's earlier days (one row), acme's 26th, the tenant's 26th: not 97 rows,
    # and "other" (no budget of its own) is not read at all.
    assert sum(len(rows) for rows in snapshot.rows.values()) == 3
    assert _used(snapshot, _budget("day"), NOW) == Decimal("0.96")
    assert _used(snapshot, _budget("month"), NOW) == Decimal("5.96")
    assert _used(snapshot, _budget("month", subject="", budget_id="bgt_3"), NOW) == Decimal(3)
    assert [b.id for b in snapshot.applying("acme", "chat", None)] == ["bgt_1", "bgt_2", "bgt_3"]
    assert [b.id for b in snapshot.applying("other", "chat", None)] == ["bgt_3"]


def test_concurrent_checks_without_a_snapshot_start_one_read_and_all_get_it(
    engine: ChdbEngine,
) -> None:
    clocks = Clocks(NOW)
    sql = GatedSql(engine)
    snapshots, budgets = _snapshots(engine, clocks, sql)
    budgets.write(_budget("month"))
    _insert(engine, 0, "acme", NOW, "1.5")
    sql.statements.clear()
    sql.hold.set()

    async def many() -> list[Snapshot]:
        waiting = [asyncio.create_task(snapshots.fresh("t", snapshots.now())) for _ in range(50)]
        await asyncio.sleep(0.2)  # every check is waiting on the one read
        assert not any(task.done() for task in waiting)
        sql.hold.clear()
        sql.release.set()
        return await asyncio.gather(*waiting)

    answers = asyncio.run(many())

    assert len({id(a) for a in answers}) == 1
    assert (sql.reads("budget_versions"), sql.reads("usage_running_totals")) == (1, 1)
    assert _used(answers[0], _budget("month"), NOW) == Decimal("1.5")


def test_an_old_snapshot_answers_at_once_while_one_background_read_replaces_it(
    engine: ChdbEngine,
) -> None:
    clocks = Clocks(NOW)
    sql = GatedSql(engine)
    snapshots, budgets = _snapshots(engine, clocks, sql)
    budgets.write(_budget("month"))
    first = snapshots.read_now("t")
    _insert(engine, 0, "acme", NOW, "2")  # committed after the first read
    clocks.later(1.5)  # older than refresh_s, younger than max_stale_s
    sql.statements.clear()
    sql.hold.set()

    # 200 checks while the refresh is held in the engine: none waits, one read.
    served = [snapshots.usable("t", snapshots.now()) for _ in range(200)]
    inflight = snapshots.refresh("t")  # the one the first check started

    assert all(s is first for s in served)
    sql.hold.clear()
    sql.release.set()
    newer = inflight.result(timeout=30)
    assert snapshots.usable("t", snapshots.now()) is newer
    assert _used(newer, _budget("month"), NOW) == Decimal(2)
    assert (sql.reads("budget_versions"), sql.reads("usage_running_totals")) == (1, 1)


def test_after_local_midnight_a_day_budget_counts_only_the_new_day(engine: ChdbEngine) -> None:
    _insert(engine, 0, "acme", MIDNIGHT_27 - timedelta(hours=2), "5")  # the 26th
    _insert(engine, 0, "acme", MIDNIGHT_27, "2")  # 00:00-00:15 of the 27th, already stored
    clocks = Clocks(MIDNIGHT_27 - timedelta(seconds=1))  # 23:59:59 of the 26th, local
    snapshots, budgets = _snapshots(engine, clocks)
    budgets.write(_budget("day"))
    budgets.write(_budget("month", budget_id="bgt_2"))
    before = snapshots.read_now("t")
    assert _used(before, _budget("day"), snapshots.now()) == Decimal(5)

    clocks.later(2)  # 00:00:01 of the 27th: the snapshot read on the 26th still answers
    after = snapshots.usable("t", snapshots.now())

    assert after is before
    assert _used(after, _budget("day"), snapshots.now()) == Decimal(2)  # not 5, not 7
    assert _used(after, _budget("month"), snapshots.now()) == Decimal(7)


def test_on_the_first_of_the_month_a_month_budget_restarts_from_the_new_month(
    engine: ChdbEngine,
) -> None:
    _insert(engine, 0, "acme", MIDNIGHT_DEC - timedelta(days=3), "40")  # 27 November
    _insert(engine, 0, "acme", MIDNIGHT_DEC - timedelta(minutes=15), "5")  # 30 November
    _insert(engine, 0, "acme", MIDNIGHT_DEC + timedelta(minutes=15), "2")  # 1 December
    clocks = Clocks(MIDNIGHT_DEC - timedelta(seconds=1))
    snapshots, budgets = _snapshots(engine, clocks)
    budgets.write(_budget("month"))
    snapshot = snapshots.read_now("t")
    assert _used(snapshot, _budget("month"), snapshots.now()) == Decimal(45)

    clocks.later(2)  # 00:00:01 on 1 December, local

    assert snapshots.usable("t", snapshots.now()) is snapshot
    assert _used(snapshot, _budget("month"), snapshots.now()) == Decimal(2)
    assert _used(snapshot, _budget("day"), snapshots.now()) == Decimal(2)


def test_a_snapshot_from_two_local_days_ago_is_never_used(engine: ChdbEngine) -> None:
    clocks = Clocks(MIDNIGHT_27 - timedelta(seconds=1))
    snapshots, budgets = _snapshots(engine, clocks)
    snapshots.max_stale_s = 10 * 86_400.0  # only the day may refuse it here
    budgets.write(_budget("day"))
    snapshots.read_now("t")

    clocks.later(86_400 + 2)  # 00:00:01 of the 28th

    assert snapshots.usable("t", snapshots.now()) is None


def test_a_failed_refresh_serves_the_last_snapshot_only_up_to_max_staleness(
    engine: ChdbEngine,
) -> None:
    clocks = Clocks(NOW)
    sql = GatedSql(engine)
    snapshots, budgets = _snapshots(engine, clocks, sql)
    budgets.write(_budget("month"))
    last = snapshots.read_now("t")
    sql.fail = "engine away"
    sql.statements.clear()

    clocks.later(5)  # between refresh_s and max_stale_s: the last snapshot answers
    sql.hold.set()
    assert snapshots.usable("t", snapshots.now()) is last
    inflight = snapshots.refresh("t")
    sql.hold.clear()
    sql.release.set()
    with pytest.raises(StoreError):
        inflight.result(timeout=30)
    # A failed read is not retried at the check rate: once per refresh_s.
    for _ in range(100):
        assert snapshots.usable("t", snapshots.now()) is last
    assert len(sql.statements) == 1

    clocks.later(5)  # 10 s: as old as max_stale_s allows, no more
    assert snapshots.usable("t", snapshots.now()) is None
    with pytest.raises(StoreError, match="engine away"):
        asyncio.run(snapshots.fresh("t", snapshots.now()))

    sql.fail = None  # the engine is back: the next check reads again
    assert asyncio.run(snapshots.fresh("t", snapshots.now())).started == clocks.mono


def test_a_budget_change_in_this_process_is_seen_by_the_next_check(engine: ChdbEngine) -> None:
    clocks = Clocks(NOW)
    snapshots, budgets = _snapshots(engine, clocks)
    budgets.write(_budget("month"))
    snapshot = snapshots.read_now("t")
    assert snapshots.usable("t", snapshots.now()) is snapshot

    budgets.write(_budget("day", budget_id="bgt_2"))

    assert snapshots.usable("t", snapshots.now()) is None
    changed = asyncio.run(snapshots.fresh("t", snapshots.now()))
    assert sorted(b.id for b in changed.budgets) == ["bgt_1", "bgt_2"]


def test_a_tenant_without_budgets_reads_no_running_totals(engine: ChdbEngine) -> None:
    clocks = Clocks(NOW)
    sql = GatedSql(engine)
    snapshots, _budgets = _snapshots(engine, clocks, sql)

    snapshot = snapshots.read_now("t")

    assert snapshot.budgets == () and snapshot.applying("acme", "chat", None) == []
    assert sql.reads("usage_running_totals") == 0
