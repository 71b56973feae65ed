"""Ingest, size-on-disk and import benchmarks (the figures of ``steplog bench``).

Every round logs into a fresh store; the flush that makes the points durable and
indexed is inside the timing. Sizes come from conftest.py (tiny under
--benchmark-disable). Each test checks what it wrote by reading it back.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import steplog
from steplog.bench import (CONSTANT_LR, METRICS_PER_DICT, check_points, log_batch, log_dict_loop, log_loop,
                           store_bytes, write_series)


def assert_holds(path: str, run_id: str, name: str, steps, values, times=None) -> None:
    """The closed store at ``path`` holds exactly these points of ``name``, all indexed."""
    with steplog.open(path) as store:
        check_points(store.read(run_id, name), steps, values, times)
        counts = dict(zip(*store.metrics(run_id).select(["metric", "count"]).to_pydict().values()))
        assert counts[name] == len(steps)


def test_log_loop(benchmark, sizes, curve, fresh, record_rate):
    """run.log("loss", v, step=i) in a Python loop, single thread, flush included.
    Target: >= 1,000,000 points/s.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_log_loop --benchmark-only
    """
    n = sizes.log_points
    values = curve(n)[2].tolist()   # Python floats, as loss.item() gives them
    benchmark.extra_info["target"] = ">= 1,000,000 points/s"
    benchmark.pedantic(log_loop, setup=fresh.new_run(values), teardown=fresh.close, rounds=sizes.repeats)
    record_rate(n)
    fresh.close()
    assert_holds(fresh.last_path, fresh.run_id, "loss", np.arange(n), values)


def test_log_dict(benchmark, sizes, curve, fresh, record_rate):
    """run.log({10 metrics}, step=i) in a Python loop (dicts built beforehand), flush included.
    Target: >= 3,000,000 points/s.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_log_dict --benchmark-only
    """
    calls = sizes.dict_calls
    values = curve(calls)[2].tolist()
    names = [f"metric_{k}" for k in range(METRICS_PER_DICT)]
    rows = [dict.fromkeys(names, value) for value in values]
    benchmark.extra_info["target"] = ">= 3,000,000 points/s"
    benchmark.pedantic(log_dict_loop, setup=fresh.new_run(rows), teardown=fresh.close, rounds=sizes.repeats)
    record_rate(METRICS_PER_DICT * calls)
    fresh.close()
    for name in names:
        assert_holds(fresh.last_path, fresh.run_id, name, np.arange(calls), values)


def test_log_batch(benchmark, sizes, curve, fresh, record_rate):
    """run.log_batch of the standard curve (10 M points at full size), until flushed and indexed.
    Target: >= 20,000,000 points/s.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_log_batch --benchmark-only
    """
    n = sizes.batch_points
    steps, times, values = curve(n)
    benchmark.extra_info["target"] = ">= 20,000,000 points/s"
    benchmark.pedantic(log_batch, setup=fresh.new_run(steps, values, times), teardown=fresh.close,
                       rounds=sizes.repeats)
    record_rate(n)
    fresh.close()
    assert_holds(fresh.last_path, fresh.run_id, "loss", steps, values, times)


def test_bytes_standard_curve(benchmark, sizes, curve, fresh):
    """Bytes per point on disk of the standard curve (step, time, value), index included:
    segments + LMDB data.mdb after close, divided by points. Target: <= 5.5.
    The time measured is that of writing and closing the store.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_bytes_standard_curve --benchmark-only
    """
    n = sizes.batch_points
    steps, times, values = curve(n)
    benchmark.extra_info["target"] = "<= 5.5 bytes per point"
    run_id = benchmark.pedantic(write_series, setup=fresh.new_path_args(steps, values, times), rounds=1)
    benchmark.extra_info["bytes_per_point"] = round(store_bytes(fresh.last_path) / n, 4)
    assert_holds(fresh.last_path, run_id, "loss", steps, values, times)


def test_bytes_constant_lr(benchmark, sizes, fresh):
    """Bytes per point of a constant learning-rate series (log_batch of steps and one
    constant value, no times), index included. Target: <= 0.1.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_bytes_constant_lr --benchmark-only
    """
    n = sizes.batch_points
    steps, values = np.arange(n, dtype=np.int64), np.full(n, CONSTANT_LR)
    benchmark.extra_info["target"] = "<= 0.1 bytes per point"
    run_id = benchmark.pedantic(write_series, setup=fresh.new_path_args(steps, values), rounds=1)
    benchmark.extra_info["bytes_per_point"] = round(store_bytes(fresh.last_path) / n, 4)
    assert_holds(fresh.last_path, run_id, "loss", steps, values)


def test_import(benchmark, sizes):
    """Wall time of `python -c "import steplog"` in a fresh interpreter. Target: <= 0.5 s.

        .venv/bin/python -m pytest benchmarks/test_ingest.py::test_import --benchmark-only
    """
    command = [sys.executable, "-c", "import steplog"]
    benchmark.extra_info["target"] = "<= 0.5 s"
    done = benchmark.pedantic(subprocess.run, args=(command,), kwargs={"capture_output": True},
                              rounds=sizes.import_repeats, warmup_rounds=1)
    assert done.returncode == 0, done.stderr.decode()
