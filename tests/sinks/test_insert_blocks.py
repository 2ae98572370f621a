"""The INSERT skips the engine's collapse of each block (optimize_on_insert = 0, sinks/base.py).

That is exact only while every view writes ONE row per sort key of its table in a
block: then the collapse had nothing to do. These tests pin that invariant on the
real DDL, so a future view grouping by less than its table's ORDER BY fails here
instead of leaving extra rows that only a merge would fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from sinks.base import EVENT_COLUMNS, INSERT_SETTINGS, Engine

# The tables the views of usage_events fill in the processor's INSERT, with the
# engine that would otherwise collapse them on insert.
VIEW_TABLES = (
    "usage_event_ids",
    "usage_meters",
    "usage_meters_1h",
    "usage_meters_1d",
    "usage_meters_1h_tenant",
    "usage_meters_1d_tenant",
    "usage_running_totals",
)
MINUTE_MS = 60_000
BASE_MS = 1_735_689_600_000  # 2025-01-01 00:00:00 UTC


def batch() -> dict[str, list[Any]]:
    """48 events: many per minute group, hour, day and 15-minute bucket, two tenants."""
    defaults: dict[type, Any] = {str: "", bytes: b"{}", int: 0, Decimal: Decimal(0), dict: {}}
    n = 48
    cols = {name: [defaults[kind]] * n for name, kind in EVENT_COLUMNS.items()}
    cols["id"] = [f"blk-{i}" for i in range(n)]
    cols["tenant"] = ["t1" if i % 3 else "t2" for i in range(n)]
    cols["source"] = ["/s"] * n
    cols["type"] = ["ai.usage.tokens"] * n
    cols["subject"] = [f"cust-{i % 4}" for i in range(n)]
    cols["model"] = ["m-a" if i % 2 else "m-b" for i in range(n)]
    cols["unit"] = ["token"] * n
    # Four minutes in one hour, and one event in the next day: several rows per key.
    cols["time"] = [BASE_MS + (i % 4) * MINUTE_MS + i for i in range(n - 1)] + [
        BASE_MS + 86_400_000
    ]
    cols["input_tokens"] = [i + 1 for i in range(n)]
    cols["quantity"] = [Decimal(1)] * n
    cols["cost_usd"] = [Decimal("0.000000000001") * (i + 1) for i in range(n)]
    cols["price_usd"] = [Decimal("0.000000000003") * (i + 1) for i in range(n)]
    return cols


@pytest.fixture(scope="module")
def inserted(engine: Engine) -> Iterator[Engine]:
    # No merge may fold the parts under test: a view writing duplicate keys would
    # otherwise pass whenever a merge ran before the check.
    for table in VIEW_TABLES:
        engine.run_sql(f"SYSTEM STOP MERGES {engine.database}.{table}", "CSV")
    try:
        engine.writer().insert(batch(), "blocks-1")
        yield engine
    finally:
        for table in VIEW_TABLES:
            engine.run_sql(f"SYSTEM START MERGES {engine.database}.{table}", "CSV")


def test_the_insert_does_not_collapse_its_blocks() -> None:
    assert INSERT_SETTINGS["optimize_on_insert"] == 0


@pytest.mark.parametrize("table", VIEW_TABLES)
def test_each_view_writes_one_row_per_sort_key_of_its_table(inserted: Engine, table: str) -> None:
    key = inserted.sql.scalar(
        "SELECT sorting_key FROM system.tables "
        f"WHERE database = '{inserted.database}' AND name = '{table}'"
    )
    parts = inserted.sql.query_rows(
        f"SELECT _part AS part, count() AS rows, uniqExact({key}) AS keys "
        f"FROM {table} WHERE tenant IN ('t1', 't2') GROUP BY part"
    )
    assert parts, f"the insert wrote nothing into {table}"
    for part in parts:
        assert int(part["rows"]) == int(part["keys"]), (table, part)


def test_the_meters_sum_to_the_events_exactly(inserted: Engine) -> None:
    money = "sum(input_tokens) AS tokens, sum(cost_usd) AS cost, sum(price_usd) AS price"
    events = inserted.sql.query_rows(f"SELECT {money} FROM usage_events WHERE id LIKE 'blk-%'")
    for table in VIEW_TABLES[1:-1]:
        assert (
            inserted.sql.query_rows(f"SELECT {money} FROM {table} WHERE tenant IN ('t1', 't2')")
            == events
        ), table
    assert events[0]["cost"] == Decimal("0.000000001176")  # 1 + 2 + ... + 48 picodollars
