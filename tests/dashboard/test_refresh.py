"""How often the page refreshes: live for a short running period, slower for a long one."""

from __future__ import annotations

from datetime import UTC, datetime

from dashboard.app import REFRESH_S, SLOW_REFRESH_S, refresh_seconds
from dashboard.panels import Filters

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_a_running_week_refreshes_every_few_seconds() -> None:
    assert refresh_seconds(Filters("2026-11-20", "2026-11-27"), NOW) == REFRESH_S


def test_a_running_month_refreshes_slowly_its_queries_scan_30_days_of_meters() -> None:
    assert refresh_seconds(Filters("2026-10-28", "2026-11-27"), NOW) == SLOW_REFRESH_S


def test_an_ended_period_does_not_refresh() -> None:
    assert refresh_seconds(Filters("2026-10-01", "2026-11-01"), NOW) is None
    assert refresh_seconds(Filters("2026-11-20", "2026-11-26"), NOW) is None
