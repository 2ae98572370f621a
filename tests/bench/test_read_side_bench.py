"""``meterline bench --quick``'s read-side rows run end to end and their result checks pass.

No timing is asserted (docs/design.md#performance-targets); the checks are that
every timed usage answer sums to the events loaded, every entitlement check was
answered 200, and every alert crossing brought exactly one verified webhook.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.read_side import SHAPES, read_side
from bench.run import Options, Report

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_read_side_rows_measure_the_real_gateway_and_check_every_answer(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="meterline-bench-read-"))
    options = Options(quick=True, bootstrap=kafka_bootstrap)

    read_side(report, options, kafka_bootstrap, unique_topic, work, lambda _line: None)

    assert report.problems == []
    metrics = [row.metric for row in report.rows if row.part == "query"]
    assert len(metrics) == len(SHAPES)
    for (name, _window, _group), metric in zip(SHAPES, metrics, strict=True):
        assert name in metric
    # Each usage row sits beside the same SQL run directly on the engine.
    assert all(
        row.reference == "same SQL on chDB" and row.ref_value
        for row in report.rows
        if row.part == "query"
    )
    assert sum("rows sum to the" in line for line in report.checks) == len(SHAPES)
    assert [row.part for row in report.rows].count("entitlement") == 1
    assert [row.part for row in report.rows].count("alert") == 2
    assert any("signed webhooks verified, one each" in line for line in report.checks)
