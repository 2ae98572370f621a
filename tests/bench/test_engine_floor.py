"""``meterline bench --engine``: the store's own CPU per event, over real chDB.

No timing is asserted (performance is measured by the command, never by timed
tests). What is proved: the loop stores every distinct event exactly once (so the
CPU it reports is for the real work), every part of the engine is reported, and a
store short of rows fails the run.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench import engine_floor
from meterline.cli import app

pytestmark = pytest.mark.slow


def test_the_floor_stores_every_distinct_event_once_and_reports_each_part() -> None:
    floor = engine_floor.measure(30_000, batch=10_000, settle_s=120)

    assert floor.events == 30_000
    assert floor.ok
    assert floor.stored == floor.unique
    assert floor.unique < floor.events  # the bench data's re-sends were dropped, not stored
    for parts in (floor.during, floor.settled):
        assert set(parts) == {
            "the INSERT and lookup calls (calling thread)",
            "the engine's query threads",
            "background merges",
            "other engine threads",
            "total",
        }
        assert parts["total"] > 0
    assert floor.settled["total"] >= floor.during["total"]
    assert floor.prepare_us > 0 and floor.generate_us > 0
    text = engine_floor.table(floor)
    assert "**total**" in text and "CHECK FAILED" not in text


def test_a_store_short_of_rows_fails_the_floor() -> None:
    parts = {"total": 1.0}
    floor = engine_floor.EngineFloor(
        events=10,
        stored=8,
        unique=9,
        batch=10,
        wall_s=1.0,
        prepare_us=1.0,
        generate_us=1.0,
        during=parts,
        settled=parts,
    )

    assert not floor.ok
    assert "CHECK FAILED: stored 8 rows for 9 distinct events" in engine_floor.table(floor)


def test_the_command_prints_the_floor_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["bench", "--engine", "--events", "20000"])

    assert result.exit_code == 0, result.output
    assert "engine CPU per event" in result.output
    assert "20,000 events in batches of 50,000" in result.output
