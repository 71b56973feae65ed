"""Read benchmarks: a full series into Arrow, and a short range from its middle.

The series is the standard curve (10 M points at full size), written once per session
with log_batch and closed; each test opens it again. The page cache is warm: what is
measured is steplog's decoding, not the disk. Every test checks the table it read.
"""

from __future__ import annotations

import pytest

import steplog
from steplog.bench import check_points

RANGE_POINTS = 1_000


@pytest.fixture
def series(sizes, curve, written_series):
    """(store, run_id, (steps, times, values)): the standard curve of sizes.read_points, open."""
    n = sizes.read_points
    path, run_id = written_series(n)
    with steplog.open(path) as store:
        yield store, run_id, curve(n)


def test_full_read(benchmark, sizes, series, record_rate):
    """store.read(run_id, "loss") of the whole series into an Arrow table.
    Target: >= 40,000,000 points/s.

        .venv/bin/python -m pytest benchmarks/test_read.py::test_full_read --benchmark-only
    """
    store, run_id, (steps, times, values) = series
    benchmark.extra_info["target"] = ">= 40,000,000 points/s"
    table = benchmark.pedantic(store.read, args=(run_id, "loss"), rounds=sizes.repeats, warmup_rounds=1)
    record_rate(len(steps))
    check_points(table, steps, values, times)


def test_range_read(benchmark, series, record_rate):
    """store.read(run_id, "loss", start, stop) of 1,000 points from the middle of the series.
    Target: <= 1 ms.

        .venv/bin/python -m pytest benchmarks/test_read.py::test_range_read --benchmark-only
    """
    store, run_id, (steps, times, values) = series
    lo = len(steps) // 2
    hi = lo + RANGE_POINTS
    benchmark.extra_info["target"] = "<= 1 ms"
    table = benchmark(store.read, run_id, "loss", start=lo, stop=hi)
    record_rate(RANGE_POINTS)
    check_points(table, steps[lo:hi], values[lo:hi], times[lo:hi])
