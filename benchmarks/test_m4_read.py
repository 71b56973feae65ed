"""M4 reads: the real points holding each bucket's first, min, max and last value, the
320 points (buckets=80) that MLflow's chart endpoint asks for, over long series.

The standard curve with one single-step spike, logged with log_batch in chunks of 1 M
points and flushed; 1 M and 10 M points (tiny sizes under --benchmark-disable). The
10 M store lives in a temporary directory under /tmp, removed after the test. Target:
<= 20 ms at any length (query/m4.py descends the rollups and decodes a few blocks a
bucket, whatever the length).

    .venv/bin/python -m pytest benchmarks/test_m4_read.py --benchmark-only
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import pytest

import steplog
from steplog.bench import standard_curve

CHUNK = 1_000_000
SPIKE = 1000.0
BUCKETS = 80


def full_size(request) -> bool:
    enabled = not request.config.getoption("benchmark_disable", False)
    return os.environ.get("STEPLOG_BENCH_SIZE", "full" if enabled else "tiny") == "full"


def m4_read(store, run_id: str, buckets: int):
    return store.read(run_id, "loss", buckets=buckets, method="m4")


def write_curve(path: str, n: int) -> tuple[str, int]:
    """The standard curve of n points with a spike, in log_batch chunks; (run id, spike step)."""
    steps, times, values = standard_curve(n)
    spike = int(n * 0.40512)
    values[spike] = SPIKE
    with steplog.open(path) as store:
        run = store.start_run(experiment="m4")
        for lo in range(0, n, CHUNK):
            run.log_batch("loss", steps[lo:lo + CHUNK], values[lo:lo + CHUNK], times=times[lo:lo + CHUNK])
        store.flush()
    return run.id, spike


@pytest.fixture(scope="module", params=["1M", "10M"])
def curve_store(request):
    sizes = {"1M": 1_000_000, "10M": 10_000_000} if full_size(request) else {"1M": 20_000, "10M": 60_000}
    n = sizes[request.param]
    root = tempfile.mkdtemp(prefix="steplog-m4-", dir="/tmp")
    try:
        run_id, spike = write_curve(os.path.join(root, "store"), n)
        store = steplog.open(os.path.join(root, "store"))
        yield store, run_id, spike, n
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_m4_buckets_80(benchmark, curve_store):
    """store.read(run, "loss", buckets=80, method="m4"): at most 320 real points over the
    whole series.
    Target: <= 20 ms at 1 M and at 10 M points.

        .venv/bin/python -m pytest "benchmarks/test_m4_read.py::test_m4_buckets_80" --benchmark-only
    """
    store, run_id, spike, n = curve_store
    benchmark.extra_info["points"] = n
    benchmark.extra_info["target"] = "<= 20 ms"
    table = benchmark(m4_read, store, run_id, BUCKETS)
    assert 0 < table.num_rows <= 4 * BUCKETS
    steps = table.column("step").to_pylist()
    assert spike in steps and table.column("value")[steps.index(spike)].as_py() == SPIKE
    assert steps[0] == 0 and steps[-1] == n - 1
    if benchmark.enabled:   # the CPU time of all threads (the decode uses two): what load on the machine does not hide
        cpu = []
        for _ in range(10):
            began = time.process_time()
            m4_read(store, run_id, BUCKETS)
            cpu.append(time.process_time() - began)
        benchmark.extra_info["cpu_ms_median"] = round(statistics.median(cpu) * 1e3, 2)
