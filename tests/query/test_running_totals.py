"""``RunningTotals`` on the real engine: one row per local day, exact day and month totals.

The entitlement check reads a subject's month (and its tenant's) on every cache
miss under one lock; the rows it builds must not grow with the 96 buckets of a
day (docs/benchmarks.md, read side: per-bucket rows made each load 100+ ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from query.budget_store import Budget
from query.running_totals import RunningTotals, period_of
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

KOLKATA = "Asia/Kolkata"  # +05:30: local midnight is 18:30 UTC, between two UTC hours
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # 15:30 in Kolkata, on the 26th


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb")
    migrate(engine)
    yield engine
    engine.close()


def _insert(engine: ChdbEngine, scope: int, subject: str, bucket: datetime, cost: str) -> None:
    engine.run_sql(
        "INSERT INTO meterline.usage_running_totals VALUES "
        f"('t', {scope}, '{subject}', toDateTime({int(bucket.timestamp())}, 'UTC'), "
        f"'chat', 'gpt-4o', 1, {cost}, {cost})",
        "CSV",
    )


def _budget(period: str, subject: str = "acme") -> Budget:
    return Budget(
        "t", "bgt_1", 1, "create", subject, "", "", period, "cost_usd", Decimal(100), (100,),
        "hard", False, NOW, "",
    )  # fmt: skip


def test_a_local_day_is_one_row_and_day_and_month_budgets_sum_exactly(
    engine: ChdbEngine,
) -> None:
    # Every 15-minute bucket of the 26th in Kolkata (18:30 UTC on the 25th onwards).
    local_midnight = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
    for i in range(96):
        _insert(engine, 0, "acme", local_midnight + timedelta(minutes=15 * i), "0.01")
    _insert(engine, 0, "acme", local_midnight - timedelta(minutes=15), "5")  # the 25th, local
    _insert(engine, 0, "other", local_midnight, "7")  # another subject
    _insert(engine, 1, "", local_midnight, "3")  # the tenant's row
    totals = RunningTotals(engine.sql, KOLKATA)
    zone = totals.zone
    month = period_of("month", NOW, zone)

    loaded = totals.load("t", "acme", month)

    # acme's 25th, acme's 26th, the tenant's 26th: three rows, not 98.
    assert len(loaded.rows) == 3
    assert loaded.used(_budget("day"), period_of("day", NOW, zone)) == Decimal("0.96")
    assert loaded.used(_budget("month"), month) == Decimal("5.96")
    assert loaded.used(_budget("month", subject=""), month) == Decimal(3)
