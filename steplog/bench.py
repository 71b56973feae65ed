"""``steplog bench``: measure the ingest, size and read figures against their targets.

Every figure uses the *standard curve* (``standard_curve``) and a fresh temporary store
that is removed afterwards. Times are medians of a few repetitions (the machines this
runs on are noisy); numba kernels are compiled (or loaded from their cache) before any
timing starts. The pytest-benchmark suites in ``benchmarks/`` import ``standard_curve``
and the sizes from here, so both measure the same thing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator, NamedTuple

import numpy as np

import steplog

EPOCH_NS = 1_700_000_000_000_000_000   # time of step 0 of the standard curve (2023-11-14)
STEP_NS = 1_000_000                    # 1 ms between steps...
JITTER_NS = 100_000                    # ... +- 10 %, uniform
CONSTANT_LR = 3e-4
METRICS_PER_DICT = 10


def standard_curve(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standard curve: steps, times (int64 ns) and values (float64) of ``n`` points.

    steps 0..n-1; times start at EPOCH_NS and are 1 ms apart, each gap jittered
    uniformly by +-10 %; values are ``float32(2.5*decay + 0.05*decay*noise)`` stored as
    float64, with decay = exp(-step/200000) and noise standard normal. Deterministic.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    gaps = rng.integers(STEP_NS - JITTER_NS, STEP_NS + JITTER_NS + 1, n, dtype=np.int64)
    gaps[0] = 0
    times = EPOCH_NS + np.cumsum(gaps)
    decay = np.exp(-steps / 200_000)
    values = (2.5 * decay + 0.05 * decay * rng.standard_normal(n)).astype(np.float32).astype(np.float64)
    return steps, times, values


class Sizes(NamedTuple):
    """Points (or calls) per figure, and repetitions."""

    log_points: int        # run.log loop: calls = points
    dict_calls: int        # run.log(dict) loop: points = METRICS_PER_DICT * calls
    batch_points: int      # log_batch ingest, bytes per point, constant series
    read_points: int       # series the reads run on
    repeats: int           # ingest and full-read repetitions
    range_repeats: int     # range-read repetitions
    import_repeats: int    # `python -c "import steplog"` repetitions


FULL = Sizes(1_000_000, 300_000, 10_000_000, 10_000_000, 5, 201, 7)
QUICK = Sizes(100_000, 30_000, 1_000_000, 1_000_000, 3, 51, 3)


class Figure(NamedTuple):
    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir() -> Iterator[str]:
    """A fresh directory for one store, removed afterwards."""
    path = tempfile.mkdtemp(prefix="steplog-bench-")
    try:
        yield os.path.join(path, "store")
    finally:
        shutil.rmtree(path, ignore_errors=True)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def store_bytes(path: str) -> int:
    """Bytes on disk of a closed store: its segment files plus the LMDB data.mdb
    (lock.mdb, a fixed-size reader table, is left out)."""
    segments = os.path.join(path, "segments")
    total = sum(os.path.getsize(os.path.join(segments, f)) for f in os.listdir(segments))
    return total + os.path.getsize(os.path.join(path, "index", "data.mdb"))


def check_points(table, steps, values, times=None) -> None:
    """Raise unless ``table`` (a store.read result) holds exactly these points."""
    if table.num_rows != len(steps):
        raise AssertionError(f"read {table.num_rows} points, wrote {len(steps)}")
    if not np.array_equal(table.column("step").to_numpy(), steps):
        raise AssertionError("steps read back differ from steps written")
    if not np.array_equal(table.column("value").to_numpy(), values):
        raise AssertionError("values read back differ from values written")
    if times is not None and not np.array_equal(table.column("time_ns").to_numpy(), times):
        raise AssertionError("times read back differ from times written")


def write_series(path: str, steps, values, times=None, name: str = "loss") -> str:
    """Write one series with log_batch into a new store at ``path``, close it; returns the run id."""
    with steplog.open(path) as store:
        run = store.start_run(experiment="bench")
        run.log_batch(name, steps, values, times)
        run.end()
    return run.id


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel the write and read paths use."""
    from .engine.twins import use_kernels

    use_kernels()   # the timed work is large: the numba kernels, not their numpy twins
    steps, times, values = standard_curve(3 * 8192 + 5)
    with temp_dir() as path:
        run_id = write_series(path, steps, values, times)
        with steplog.open(path) as store:
            check_points(store.read(run_id, "loss"), steps, values, times)
            store.read(run_id, "loss", start=100, stop=200)


# -- ingest ----------------------------------------------------------------------------------


def log_loop(run, values: list) -> None:
    """The figure's loop: one run.log per point, then flush."""
    for step, value in enumerate(values):
        run.log("loss", value, step=step)
    run.flush()


def log_dict_loop(run, rows: list) -> None:
    """One run.log(dict) per step (dicts built beforehand), then flush."""
    for step, metrics in enumerate(rows):
        run.log(metrics, step=step)
    run.flush()


def log_batch(run, steps, values, times) -> None:
    """One log_batch of the whole series, then flush: done when indexed."""
    run.log_batch("loss", steps, values, times)
    run.flush()


def measure_ingest(ingest: Callable, args: tuple, points: int, repeats: int) -> float:
    """Median points/s of ``ingest(run, *args)`` on a fresh store each time (open and
    start_run are not timed; the flush at the end is)."""
    times = []
    for _ in range(repeats):
        with temp_dir() as path, steplog.open(path) as store:
            run = store.start_run(experiment="bench")
            t0 = time.perf_counter()
            ingest(run, *args)
            times.append(time.perf_counter() - t0)
            stored = sum(store.metrics(run.id).column("count").to_pylist())
            if stored != points:
                raise AssertionError(f"the store indexed {stored} points, {points} were logged")
    return points / statistics.median(times)


def bench_log(sizes: Sizes) -> float:
    values = standard_curve(sizes.log_points)[2].tolist()   # Python floats, as loss.item() gives
    return measure_ingest(log_loop, (values,), sizes.log_points, sizes.repeats)


def bench_log_dict(sizes: Sizes) -> float:
    values = standard_curve(sizes.dict_calls)[2].tolist()
    names = [f"metric_{k}" for k in range(METRICS_PER_DICT)]
    rows = [dict.fromkeys(names, value) for value in values]   # built before timing
    return measure_ingest(log_dict_loop, (rows,), METRICS_PER_DICT * sizes.dict_calls, sizes.repeats)


def bench_log_batch(sizes: Sizes) -> float:
    steps, times, values = standard_curve(sizes.batch_points)
    return measure_ingest(log_batch, (steps, values, times), sizes.batch_points, sizes.repeats)


# -- size on disk ----------------------------------------------------------------------------


def bytes_per_point(steps, values, times=None) -> float:
    """Bytes on disk per point of one series written with log_batch, after close."""
    with temp_dir() as path:
        run_id = write_series(path, steps, values, times)
        size = store_bytes(path)
        with steplog.open(path) as store:
            check_points(store.read(run_id, "loss"), steps, values, times)
        return size / len(steps)


def bench_bytes_standard(sizes: Sizes) -> float:
    steps, times, values = standard_curve(sizes.batch_points)
    return bytes_per_point(steps, values, times)


def bench_bytes_constant(sizes: Sizes) -> float:
    steps = np.arange(sizes.batch_points, dtype=np.int64)
    return bytes_per_point(steps, np.full(len(steps), CONSTANT_LR))


# -- reads -----------------------------------------------------------------------------------


def bench_reads(sizes: Sizes) -> tuple[float, float]:
    """(points/s of a full read into Arrow, ms of a 1,000-point range read from the middle)."""
    n = sizes.read_points
    steps, times, values = standard_curve(n)
    with temp_dir() as path:
        run_id = write_series(path, steps, values, times)
        with steplog.open(path) as store:
            check_points(store.read(run_id, "loss"), steps, values, times)
            full = median_time(lambda: store.read(run_id, "loss"), sizes.repeats)
            lo = n // 2
            middle = store.read(run_id, "loss", start=lo, stop=lo + 1000)
            check_points(middle, steps[lo:lo + 1000], values[lo:lo + 1000], times[lo:lo + 1000])
            ranged = median_time(lambda: store.read(run_id, "loss", start=lo, stop=lo + 1000), sizes.range_repeats)
    return n / full, ranged * 1e3


def import_seconds(repeats: int) -> float:
    """Median wall time of ``python -c "import steplog"`` in a fresh interpreter."""
    command = [sys.executable, "-c", "import steplog"]
    subprocess.run(command, check=True)   # not timed: writes any missing .pyc files
    return median_time(lambda: subprocess.run(command, check=True), repeats)


# -- report ----------------------------------------------------------------------------------


def machine() -> str:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load = os.getloadavg()[0]   # other processes' load makes every time figure worse
    return (f"{os.cpu_count()} cores, {mem_kb / 2**20:.1f} GiB RAM, load {load:.1f}, "
            f"Python {sys.version.split()[0]}, numpy {np.__version__}, steplog {steplog.__version__}, {now}")


def print_table(figures: list[Figure]) -> None:
    rows = [(f.name, _fmt(f.measured), ("≥ " if f.higher_is_better else "≤ ") + _fmt(f.target), f.unit,
             "ok" if f.met else "MISS") for f in figures]
    header = ("figure", "measured", "target", "unit", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(w) if 0 < i < 3 else cell.ljust(w) for i, (cell, w) in
                        enumerate(zip(row, widths))).rstrip())


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"


def ingest_figures(sizes: Sizes) -> list[Figure]:
    return [
        Figure('run.log("loss", v, step=i) loop, flush included', bench_log(sizes), 1_000_000, "points/s", True),
        Figure(f"run.log({{{METRICS_PER_DICT} metrics}}, step=i) loop, flush included", bench_log_dict(sizes),
               3_000_000, "points/s", True),
        Figure(f"run.log_batch of {sizes.batch_points:,} points, until indexed", bench_log_batch(sizes),
               20_000_000, "points/s", True),
    ]


def size_figures(sizes: Sizes) -> list[Figure]:
    return [
        Figure("bytes per point, standard curve (index included)", bench_bytes_standard(sizes), 5.5, "bytes", False),
        Figure("bytes per point, constant learning rate", bench_bytes_constant(sizes), 0.1, "bytes", False),
    ]


def read_figures(sizes: Sizes) -> list[Figure]:
    full, ranged = bench_reads(sizes)
    return [
        Figure(f"full read of {sizes.read_points:,} points into Arrow", full, 40_000_000, "points/s", True),
        Figure(f"range read of 1,000 points from the middle of {sizes.read_points:,}", ranged, 1.0, "ms", False),
    ]


def run_bench(quick: bool = False) -> int:
    sizes = QUICK if quick else FULL
    print(f"steplog bench{' --quick' if quick else ''}: {machine()}")
    if quick:
        print("quick: sizes 10x smaller than the targets assume; the index's fixed pages weigh more per point")
    warm_up()
    figures = [*ingest_figures(sizes), *size_figures(sizes), *read_figures(sizes),
               Figure('python -c "import steplog"', import_seconds(sizes.import_repeats), 0.5, "s", False)]
    print_table(figures)
    return 0
