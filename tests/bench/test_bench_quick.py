"""``meterline bench --quick`` runs every part end to end and its result checks pass.

No timing is asserted (docs/design.md#performance-targets: performance is
measured by the command, never by timed tests); the checks are exact totals
against an independent ground truth.
"""

from __future__ import annotations

import pytest

from bench.run import Options, run

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_quick_bench_runs_end_to_end_with_exact_totals(kafka_bootstrap: str) -> None:
    report = run(Options(quick=True, bootstrap=kafka_bootstrap), say=lambda _line: None)

    assert report.problems == []
    parts = {row.part for row in report.rows}
    expected = {"pricing", "emitter", "kafka", "processor", "gateway", "end to end", "memory"}
    expected.add("cpu")
    assert expected <= parts
    # The three processor runs (the defaults, one thread, per-record path) compared usage_events and
    # usage_meters with the ground truth.
    assert sum("every sum exact" in line for line in report.checks) == 6
    assert sum("calc_price" in line for line in report.checks) == 6
    assert any("per-record path" in row.metric for row in report.rows)
    assert any("one thread, no writer thread" in row.metric for row in report.rows)
    # where the processor's CPU went, by thread: its Python thread at least
    threads = [row for row in report.rows if "threads named" in row.metric]
    assert any("'python'" in row.metric and row.value > 0 for row in threads)
    # Latency at half the measured capacity, for each request size.
    assert sum("half load" in row.metric for row in report.rows) == 3
    # The peer row is there, or a note says why it is missing.
    assert "peer" in parts or any("peer" in note for note in report.notes)
    header = report.table().splitlines()[0]
    assert "limit / peer" in header and "ratio" in header


def test_stage_profile_measures_every_processor_step_on_real_chdb() -> None:
    from bench.stages import measure, table

    stages = measure(20_000)

    names = [stage.name for stage in stages]
    assert names[-1] == "process_batch, every step"
    for step in (
        "JSON parse",
        "envelope",
        "pydantic",
        "dedupe",
        "pricing",
        "row",
        "Arrow",
        "INSERT",
    ):
        assert any(step in name for name in names), step
    assert all(stage.micros > 0 for stage in stages)
    assert "10 µs per event" in table(stages)
