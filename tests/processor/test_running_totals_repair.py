"""A crash between the usage_events part of an INSERT and the running totals' parts is
repaired at start-up; a running total above its events is reported, never lowered."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from processor.verify import (
    repair_at_start,
    repair_running_totals,
    verify_running_totals,
)
from sinks.chdb_sink import ChdbEngine
from tests.support.rows import event_columns

NOW_MS = int(time.time() * 1000)
VIEWS = ("usage_running_totals_subject_mv", "usage_running_totals_tenant_mv")
SPAN = (0, NOW_MS + 60_000)


# `sink` (tests/processor/conftest.py): a migrated chDB database.


def columns(ids: list[str], minutes_ago: int, subject: str = "acme") -> dict[str, list[Any]]:
    n = len(ids)
    return event_columns(
        ids,
        tenant=["t"] * n,
        source=["/s"] * n,
        subject=[subject] * n,
        feature=["chat"] * n,
        model=["gpt-4o"] * n,
        time=[NOW_MS - minutes_ago * 60_000] * n,
        processed_at=[NOW_MS] * n,
        cost_usd=[Decimal("0.000000000003")] * n,
        price_usd=[Decimal("0.000000000005")] * n,
    )


def torn(sink: ChdbEngine, cols: dict[str, list[Any]], token: str) -> None:
    """An INSERT whose usage_events part landed and whose running-totals parts did not."""
    for view in VIEWS:
        sink.sql.query_raw(f"DETACH TABLE {view}", "CSV")
    sink.writer().insert(cols, token)
    for view in VIEWS:
        sink.sql.query_raw(f"ATTACH TABLE {view}", "CSV")


def totals(sink: ChdbEngine, scope: int) -> list[Any]:
    row = sink.sql.query_rows(
        "SELECT sum(events) AS events, toString(sum(cost_usd)) AS cost, "
        f"toString(sum(price_usd)) AS price FROM usage_running_totals WHERE scope = {scope}"
    )[0]
    return [row["events"], Decimal(row["cost"]), Decimal(row["price"])]


def test_running_totals_short_after_a_torn_insert_are_restored_at_start(
    sink: ChdbEngine,
) -> None:
    sink.writer().insert(columns(["a", "b"], 1), "ok")
    torn(sink, columns(["c", "d", "e"], 1), "torn-1")  # the group "ok" already has
    torn(sink, columns(["f"], 40, subject="globex"), "torn-2")  # a group of its own
    short = verify_running_totals(sink.sql, *SPAN)
    assert {(d.group["scope"], d.group["subject"], d.column) for d in short} == {
        (scope, subject, column)
        for scope, subject in ((0, "acme"), (0, "globex"), (1, ""))
        for column in ("events", "cost_usd", "price_usd")
    }

    assert repair_at_start(sink.sql).refused == []

    assert verify_running_totals(sink.sql, *SPAN) == []
    whole = [6, Decimal("0.000000000018"), Decimal("0.000000000030")]
    assert totals(sink, 0) == whole
    assert totals(sink, 1) == whole
    # A second start-up finds nothing to repair.
    assert repair_at_start(sink.sql).refused == []
    assert totals(sink, 0) == whole and totals(sink, 1) == whole


def test_two_identical_tears_of_one_group_are_both_repaired(sink: ChdbEngine) -> None:
    # Two torn INSERTs, each of one event in the same group with the same usage, each
    # repaired at its own start-up: the two correction rows are the same VALUES, and
    # the table dedups blocks (its dedup window, for the processor's token). The second
    # must not be dropped as a retried insert.
    for event in ("torn-a", "torn-b"):
        torn(sink, columns([event], 2), event)
        assert repair_at_start(sink.sql).refused == []

    assert verify_running_totals(sink.sql, *SPAN) == []
    assert totals(sink, 0)[0] == 2
    assert totals(sink, 1)[0] == 2


def test_a_running_total_above_its_events_is_reported_not_lowered(sink: ChdbEngine) -> None:
    sink.writer().insert(columns(["a"], 3), "ok")
    bucket = (NOW_MS - 3 * 60_000) // 1000 // 900 * 900
    sink.run_sql(
        "INSERT INTO usage_running_totals VALUES "
        f"('t', 1, '', toDateTime({bucket}, 'UTC'), 'chat', 'gpt-4o', 2, 0, 0)",
        "CSV",
    )

    refused = repair_at_start(sink.sql).refused

    assert [(d.group["scope"], d.group["subject"], d.column) for d in refused] == [
        (1, "", "events")
    ]
    assert (refused[0].from_events, refused[0].in_meters) == (1, 3)
    assert totals(sink, 1)[0] == 3  # left as is, for a human
    assert totals(sink, 0)[0] == 1
    # The explicit repair (meterline verify --repair-rollups) refuses it the same way.
    assert len(repair_running_totals(sink.sql, *SPAN)) == 1
    assert totals(sink, 1)[0] == 3


def test_the_start_up_repair_looks_only_at_the_buckets_of_recent_events(
    sink: ChdbEngine,
) -> None:
    # An old group short of its events (written long before the last batch) is not the
    # start-up repair's: it would turn every start into a scan of all time. verify
    # names it; --repair-rollups mends it.
    old = columns(["old"], 3 * 24 * 60) | {"processed_at": [NOW_MS - 3 * 86_400_000]}
    torn(sink, old, "old")
    sink.writer().insert(columns(["new"], 1), "new")

    assert repair_at_start(sink.sql).refused == []

    assert len(verify_running_totals(sink.sql, *SPAN)) == 6  # 2 scopes x 3 columns
    assert repair_running_totals(sink.sql, *SPAN) == []
    assert verify_running_totals(sink.sql, *SPAN) == []
