"""``meterline bench --engine``: the store's CPU per event, over real chDB.

No timing is asserted (performance is measured by the command, never by timed
tests). What is proved: the loop stores every distinct event exactly once (so the
CPU it reports is for the real work), the engine's threads are found by the names
chDB gives them, and a store short of rows fails the command.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from bench import engine_floor
from meterline.cli import app

QUERY = "the engine's query threads"


def test_the_floor_stores_every_distinct_event_once_and_finds_the_engine_threads() -> None:
    floor = engine_floor.measure(30_000, batch=10_000, settle_s=120)

    assert floor.events == 30_000
    assert floor.problems == []
    assert floor.rows == floor.distinct_rows == floor.unique
    for parts in (floor.during, floor.settled):
        # chDB runs the INSERT's pipeline on threads named ThreadPool: renamed, they
        # would fall into "other threads" and this row would read 0.
        assert parts[QUERY] > 0
        assert parts[engine_floor.FINISH] > 0
        assert all(value >= 0 for value in parts.values())
    assert floor.prepare_us > 0 and floor.generate_us > 0
    assert "**total**" in engine_floor.table(floor)


def _floor(rows: int, distinct_rows: int, **more: Any) -> engine_floor.EngineFloor:
    """A measured floor of 10 events, 9 of them distinct, with these stored rows."""
    parts = {"total": 1.0}
    return engine_floor.EngineFloor(
        events=10, rows=rows, distinct_rows=distinct_rows, unique=9, batch=10, wall_s=1.0,
        prepare_us=1.0, generate_us=1.0, during=parts, settled=parts, **more,
    )  # fmt: skip


def test_rows_missing_stored_twice_or_dead_lettered_are_problems() -> None:
    short = _floor(8, 8)
    twice = _floor(9, 8)
    dead = _floor(9, 9, dead_reasons={"invalid_event": 1})

    assert short.problems == ["usage_events holds 8 rows, 8 distinct, for 9 distinct events"]
    assert twice.problems == ["usage_events holds 9 rows, 8 distinct, for 9 distinct events"]
    assert dead.problems == ["dead letters: {'invalid_event': 1}"]
    assert _floor(9, 9).problems == []


def test_the_command_prints_the_floor_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["bench", "--engine", "--events", "20000"])

    assert result.exit_code == 0, result.output
    assert "CPU per event" in result.output
    assert re.search(r"20,000 events in batches of [\d,]+", result.output)


def test_the_command_exits_1_when_the_store_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_floor, "measure", lambda *_args, **_kw: _floor(8, 8))

    result = CliRunner().invoke(app, ["bench", "--engine", "--events", "10"])

    assert result.exit_code == 1
    assert "CHECK FAILED: usage_events holds 8 rows" in result.output


def test_the_engine_floor_runs_alone() -> None:
    result = CliRunner().invoke(app, ["bench", "--engine", "--stages"])

    assert result.exit_code == 2
    assert "--engine runs alone" in result.output
