"""Downsampled reads over long series, and what rollups cost at ingest and on disk.

Full sizes (benchmarks enabled): one 100 M-point series and 100 runs of 1 M points;
tiny sizes under --benchmark-disable (CI). Targets: buckets=1000 in <= 20 ms at any
zoom and >= 100x faster than reading the raw range; read_many of 100 runs x 1 M points
in <= 200 ms; rollups add <= 10% to ingest and <= 5% to the bytes.

    .venv/bin/python -m pytest benchmarks/test_zoom.py --benchmark-only
"""

from __future__ import annotations

import os
import time

import pytest

import steplog
from steplog.bench import STEP_NS, standard_curve

SPIKE = 1000.0
CHUNK = 10_000_000


def full_size(request) -> bool:
    enabled = not request.config.getoption("benchmark_disable", False)
    return os.environ.get("STEPLOG_BENCH_SIZE", "full" if enabled else "tiny") == "full"


def write_long(path: str, n: int) -> tuple[str, int]:
    """The standard curve of n points with one spike; returns (run id, spike step)."""
    spike = int(n * 0.40512)
    with steplog.open(path) as store:
        run = store.start_run(experiment="long")
        chunk = standard_curve(min(CHUNK, n))
        for lo in range(0, n, CHUNK):
            size = min(CHUNK, n - lo)
            steps, times, values = chunk[0][:size] + lo, chunk[1][:size] + lo * STEP_NS, chunk[2][:size].copy()
            if lo <= spike < lo + len(steps):
                values[spike - lo] = SPIKE
            run.log_batch("loss", steps, values, times=times)
    return run.id, spike


@pytest.fixture(scope="module")
def long_series(tmp_path_factory, request):
    n = 100_000_000 if full_size(request) else 300_000
    path = str(tmp_path_factory.mktemp("long") / "store")
    run_id, spike = write_long(path, n)
    store = steplog.open(path)
    yield store, run_id, spike, n
    store.close()


ZOOMS = {"whole": None, "10M": 10_000_000, "1M": 1_000_000, "10k": 10_000}


@pytest.mark.parametrize("zoom", list(ZOOMS))
def test_buckets_1000(benchmark, long_series, zoom):
    """store.read(run, "loss", start, stop, buckets=1000) over the whole series or a zoom
    around the spike. Target: <= 20 ms and >= 100x faster than the raw range.

        .venv/bin/python -m pytest "benchmarks/test_zoom.py::test_buckets_1000" --benchmark-only
    """
    store, run_id, spike, n = long_series
    width = ZOOMS[zoom]
    start, stop = (None, None) if width is None else (max(0, spike - width // 2), max(0, spike - width // 2) + width)
    table = benchmark(store.read, run_id, "loss", start=start, stop=stop, buckets=1000)
    assert 0 < table.num_rows <= 1000
    assert table.column("max").to_numpy().tolist().count(SPIKE) == 1
    covered = (stop or n) - (start or 0)
    assert sum(table.column("count").to_pylist()) == min(covered, n - (start or 0))
    if benchmark.enabled:
        began = time.perf_counter()
        raw = store.read(run_id, "loss", start=start, stop=stop)
        raw_s = time.perf_counter() - began
        assert raw.num_rows == sum(table.column("count").to_pylist())
        benchmark.extra_info["raw_range_ms"] = round(raw_s * 1e3, 2)
        benchmark.extra_info["speedup_vs_raw"] = round(raw_s / benchmark.stats.stats.median, 1)


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory, request):
    runs, points = (100, 1_000_000) if full_size(request) else (4, 20_000)
    path = str(tmp_path_factory.mktemp("many") / "store")
    steps, times, values = standard_curve(points)
    with steplog.open(path) as store:
        ids = []
        for k in range(runs):
            run = store.start_run(experiment="sweep", params={"k": k})
            run.log_batch("loss", steps, values + k, times=times)
            ids.append(run.id)
    store = steplog.open(path)
    yield store, ids, points
    store.close()


def test_read_many_buckets(benchmark, many_runs):
    """store.read_many(runs=100 ids, metrics=["loss"], buckets=1000), 1 M points a run.
    Target: <= 200 ms.

        .venv/bin/python -m pytest "benchmarks/test_zoom.py::test_read_many_buckets" --benchmark-only
    """
    store, ids, points = many_runs
    table = benchmark(store.read_many, runs=ids, metrics=["loss"], buckets=1000)
    counts = table.group_by("run_id").aggregate([("count", "sum")])
    assert counts.num_rows == len(ids)
    assert set(counts.column("count_sum").to_pylist()) == {points}


def test_rollup_cost(benchmark, tmp_path):
    """Share of ingest time and of bytes that rollups take, for log_batch of the standard
    curve (5 M points; 200 k under --benchmark-disable). Targets: <= 10% and <= 5%.
    The time share is the rollup kernels' time over the same points divided by the
    ingest time: the flusher runs them in line, so they add exactly that much.

        .venv/bin/python -m pytest "benchmarks/test_zoom.py::test_rollup_cost" --benchmark-only
    """
    from steplog.engine.rollup import LEVELS, coarsen, group_points

    n = 5_000_000 if benchmark.enabled else 200_000
    steps, times, values = standard_curve(n)

    def rollups() -> None:
        for lo in range(0, n, 8192):
            level = group_points(steps[lo:lo + 8192], values[lo:lo + 8192], 9)
            for _ in range(1, LEVELS):
                level = coarsen(level)

    def ingest(k=[0]) -> None:
        k[0] += 1
        with steplog.open(str(tmp_path / f"s{k[0]}")) as store:
            store.start_run().log_batch("loss", steps, values, times=times)

    rollups()
    began = time.perf_counter()
    rollups()
    rollup_s = time.perf_counter() - began
    benchmark.pedantic(ingest, rounds=3 if benchmark.enabled else 1)
    path = str(tmp_path / "s1")
    with steplog.open(path) as store:
        index = store._index
        with index.env.begin() as txn:
            stat = txn.stat(index._db["rollups"])
    rollup_bytes = (stat["leaf_pages"] + stat["branch_pages"] + stat["overflow_pages"]) * stat["psize"]
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    assert rollup_bytes > 0
    if benchmark.enabled:
        benchmark.extra_info["rollup_time_share"] = round(rollup_s / benchmark.stats.stats.median, 4)
        benchmark.extra_info["rollup_bytes_share"] = round(rollup_bytes / (total - rollup_bytes), 4)
