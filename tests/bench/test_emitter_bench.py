"""Smoke test for the benchmark function (numbers are reported, never asserted)."""

from __future__ import annotations

import math

from bench.emitter import bench_track_tokens, bench_wrapper_overhead


def test_bench_wrapper_overhead_returns_microseconds_per_call() -> None:
    value = bench_wrapper_overhead(200)
    assert isinstance(value, float) and math.isfinite(value) and value >= 0


def test_bench_track_tokens_returns_microseconds_per_call() -> None:
    value = bench_track_tokens(200)
    assert isinstance(value, float) and math.isfinite(value) and value > 0
