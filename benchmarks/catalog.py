"""The run catalog at sweep scale: cold load, a warm filtered query, analytics.

    .venv/bin/python benchmarks/catalog.py [--runs 100000] [--analytics-runs 10000] [--repeat 7]

Builds, in a temporary directory, a store of ``--runs`` runs (params of a few kinds:
float, int, str, bool, nested; 3 metrics each, 10 points a metric, one with a context)
and one of ``--analytics-runs`` runs with 10 metrics each, through the public API
(log_batch, one flush), then prints medians of:

* cold: a new Python process opens the store read-only and builds ``runs()`` (whole
  process wall time, Python start-up included, and the time inside it);
* warm: ``runs(where="params.lr < 0.01 and metrics.val_loss < 0.2")`` repeated in one
  process (the catalog kept between calls);
* analytics of every run x 10 metrics x 5 aggregates.

Targets (2 cores): warm where <= 100 ms at 100,000 runs; a cold `steplog ls` <= 1 s;
analytics of 10,000 x 10 x 5 <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import steplog

WHERE = "params.lr < 0.01 and metrics.val_loss < 0.2"
COLD = """
import sys, time
t0 = time.perf_counter()
import steplog
store = steplog.open(sys.argv[1], mode="r")
t1 = time.perf_counter()
table = store.runs()
t2 = time.perf_counter()
print(table.num_rows, t1 - t0, t2 - t1)
"""


def build(path: str, runs: int, metrics: int) -> float:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    steps = np.arange(10, dtype=np.int64)
    with steplog.open(path, flush_interval=None, budget_bytes=256 << 20) as store:
        opened = []
        for i in range(runs):
            params = {"lr": float(10 ** rng.uniform(-4, -1)), "batch": int(2 ** rng.integers(4, 9)),
                      "opt": ["adam", "sgd", "adamw"][i % 3], "bn": bool(i % 2), "model": {"depth": 18 + i % 4}}
            run = store.start_run(experiment=f"sweep-{i % 10}", name=f"trial-{i}", params=params,
                                  tags={"team": "vision"})
            floor = rng.uniform(0.05, 1.0)
            run.log_batch("val_loss", steps, floor + np.exp(-steps / 3.0))
            run.log_batch("acc", steps, 1.0 - floor * np.exp(-steps / 3.0), context={"subset": "val"})
            for m in range(metrics - 2):
                run.log_batch(f"m{m}", steps, rng.normal(size=10))
            opened.append(run)
            if len(opened) == 20_000:
                store.flush()
                for run in opened:
                    run.end()
                opened = []
        store.flush()
        for run in opened:
            run.end()
    return time.perf_counter() - start


def cold(path: str, repeat: int) -> tuple[float, float, int]:
    walls, inside, rows = [], [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, path], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        n, _, load = out.stdout.split()
        rows, inside = int(n), inside + [float(load)]
    return statistics.median(walls), statistics.median(inside), rows


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--analytics-runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep, wide = f"{tmp}/sweep", f"{tmp}/wide"
        print(f"build {args.runs:,} runs x 3 metrics: {build(sweep, args.runs, 3):.1f} s", flush=True)
        print(f"build {args.analytics_runs:,} runs x 10 metrics: {build(wide, args.analytics_runs, 10):.1f} s",
              flush=True)
        wall, load, rows = cold(sweep, args.repeat)
        print(f"cold runs() of {rows:,} runs: process {wall * 1e3:.0f} ms (Python start-up included), "
              f"runs() inside it {load * 1e3:.0f} ms (medians of {args.repeat})")
        with steplog.open(sweep, mode="r") as store:
            first, _ = timed(lambda: store.runs(where=WHERE), 1)
            warm, found = timed(lambda: store.runs(where=WHERE), args.repeat)
            print(f"runs(where={WHERE!r}): first {first * 1e3:.0f} ms, warm {warm * 1e3:.1f} ms median, "
                  f"{found.num_rows:,} of {rows:,} runs")
        with steplog.open(wide, mode="r") as store:
            metrics = ["val_loss", "acc"] + [f"m{m}" for m in range(8)]
            aggs = ["last", "min", "max", "mean", "count"]
            first, _ = timed(lambda: store.analytics(metrics=metrics, aggs=aggs), 1)
            warm, table = timed(lambda: store.analytics(metrics=metrics, aggs=aggs), args.repeat)
            print(f"analytics {table.num_rows:,} runs x {len(metrics)} metrics x {len(aggs)} aggregates: "
                  f"first {first * 1e3:.0f} ms, warm {warm * 1e3:.1f} ms median, {table.num_columns} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
