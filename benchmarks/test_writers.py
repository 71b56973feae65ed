"""Aggregate ingest of 1, 2, 4, 8 and 16 writer processes into one store, per-call and
batched, and what each durability setting costs a flush. Target: 16 processes reach
>= 80% of the single-process per-call rate times the number of cores.

    .venv/bin/python -m pytest benchmarks/test_writers.py --benchmark-only
"""

from __future__ import annotations

import os

import pytest

from steplog.workloads import MODES, durability_cost, process_ingest

PROCESSES = (1, 2, 4, 8, 16)


def full_size(benchmark) -> bool:
    return os.environ.get("STEPLOG_BENCH_SIZE", "full" if benchmark.enabled else "tiny") == "full"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("processes", PROCESSES)
def test_process_ingest(benchmark, tmp_path, processes, mode):
    """Each process logs its own run ("loss"): 1 M points per-call or 5 M batched (full),
    2,000 under --benchmark-disable (2 processes only there).

        .venv/bin/python -m pytest "benchmarks/test_writers.py::test_process_ingest" --benchmark-only
    """
    if not full_size(benchmark) and processes != 2:
        pytest.skip("the tiny size runs 2 processes only")
    points = (1_000_000 if mode == "per-call" else 5_000_000) if full_size(benchmark) else 2_000
    rates = []

    def once(k=[0]):
        k[0] += 1
        rates.append(process_ingest(str(tmp_path / f"s{k[0]}"), processes, mode, points))

    benchmark.pedantic(once, rounds=1)
    benchmark.extra_info["points_per_s"] = round(rates[-1])
    benchmark.extra_info["cores"] = os.cpu_count()
    assert rates[-1] > 0


@pytest.mark.parametrize("durability", ["fsync", "commit", "none"])
def test_durability_flush(benchmark, tmp_path, durability):
    """Seconds per flush() of 1,000 points logged one by one, for each durability.

        .venv/bin/python -m pytest "benchmarks/test_writers.py::test_durability_flush" --benchmark-only
    """
    flushes = 200 if full_size(benchmark) else 5
    seconds = []

    def once(k=[0]):
        k[0] += 1
        seconds.append(durability_cost(str(tmp_path / f"d{k[0]}"), durability, flushes, 1_000))

    benchmark.pedantic(once, rounds=1)
    benchmark.extra_info["ms_per_flush"] = round(seconds[-1] * 1e3, 3)
    assert seconds[-1] > 0
