"""Export to Parquet, import back, and SQL through DuckDB: medians of a few runs.

    export   export_store of RUNS runs x POINTS points (the standard curve, a seed a run):
             points/s (target >= 20 M/s at 100 x 1 M) and Parquet bytes / store bytes
             (segments + data.mdb; target <= 1.2); store.read of every series beside it
    import   import_dataset of that export into a fresh store: points/s (one run)
    sql      run_sql("select step, value from points where run_id = ... and metric =
             'loss'") of one SQL_POINTS series in a store of SQL_RUNS runs (the others
             hold 100 points each), against store.read of the same series
             (target: within 2x); then "... where metric = 'loss' and step < 10" over
             every series (step ranges pushed down to store.read)

    .venv/bin/python benchmarks/export.py                          # 100 x 1 M, 1,000 runs for sql
    .venv/bin/python benchmarks/export.py --runs 10 --repeats 3    # 10 M points
    .venv/bin/python benchmarks/export.py --only sql
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time


import steplog
from steplog.bench import standard_curve, store_bytes, warm_up
from steplog.query.export import export_store
from steplog.query.sql import run_sql
from steplog.transfer import import_dataset


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def build(path: str, runs: int, points: int) -> float:
    """A store of ``runs`` runs of one ``points``-point loss series each; seconds taken."""
    began = time.perf_counter()
    with steplog.open(path) as store:
        for i in range(runs):
            steps, times, values = standard_curve(points, seed=i)
            with store.start_run(experiment=f"sweep-{i % 4}", name=f"run-{i}", params={"lr": 1e-4 * (i + 1)}) as run:
                run.log_batch("loss", steps, values, times=times)
    return time.perf_counter() - began


def bench_export(root: str, runs: int, points: int, repeats: int) -> None:
    path = os.path.join(root, "store")
    built = build(path, runs, points)
    total = runs * points
    print(f"store: {runs} runs x {points:,} points built in {built:.1f} s ({total / built / 1e6:.1f} M points/s), "
          f"{store_bytes(path) / total:.2f} bytes/point")
    with steplog.open(path, mode="r") as store:
        ids = store.runs().column("id").to_pylist()
        read = _median(lambda: [store.read(r, "loss") for r in ids], repeats)
        print(f"store.read of every series: median {read:.2f} s, {total / read / 1e6:.1f} M points/s")
        outputs = []

        def once():
            dest = os.path.join(root, f"export-{len(outputs)}")
            outputs.append(dest)
            export_store(store, dest)

        seconds = _median(once, repeats)
    parquet = _dir_bytes(outputs[0])
    print(f"export: median {seconds:.2f} s over {repeats} runs, {total / seconds / 1e6:.1f} M points/s; "
          f"{parquet / total:.2f} bytes/point, parquet/store bytes {parquet / store_bytes(path):.3f}")
    for dest in outputs[1:]:
        shutil.rmtree(dest)
    target = os.path.join(root, "imported")
    with steplog.open(target) as store:
        began = time.perf_counter()
        import_dataset(store, outputs[0])
        seconds = time.perf_counter() - began
    print(f"import: {seconds:.2f} s, {total / seconds / 1e6:.1f} M points/s (one run)")


def bench_sql(root: str, runs: int, points: int, repeats: int) -> None:
    path = os.path.join(root, "sql-store")
    with steplog.open(path) as store:
        for i in range(runs - 1):
            steps, times, values = standard_curve(100, seed=i)
            with store.start_run(experiment="many") as run:
                run.log_batch("loss", steps, values, times=times)
        steps, times, values = standard_curve(points, seed=runs)
        with store.start_run(experiment="many") as big:
            big.log_batch("loss", steps, values, times=times)
    query = f"select step, value from points where run_id = '{big.id}' and metric = 'loss'"
    with steplog.open(path, mode="r") as store:
        if run_sql(store, query).num_rows != points:
            raise AssertionError("run_sql read the wrong rows")
        read = _median(lambda: store.read(big.id, "loss"), repeats)
        sql = _median(lambda: run_sql(store, query), repeats)
    print(f"sql: one {points:,}-point series of {runs:,} runs: run_sql median {sql * 1e3:.1f} ms, "
          f"store.read median {read * 1e3:.1f} ms, ratio {sql / read:.2f}")
    head = "select count(*), avg(value) from points where metric = 'loss' and step < 10"
    with steplog.open(path, mode="r") as store:
        want = sum(min(10, n) for n in store.series().column("count").to_pylist())
        if run_sql(store, head).column(0).to_pylist() != [want]:
            raise AssertionError("run_sql counted the wrong rows")
        seconds = _median(lambda: run_sql(store, head), repeats)
    print(f"sql: steps < 10 of every series ({runs:,}): run_sql median {seconds * 1e3:.1f} ms "
          "(the step range is read, not the series)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--sql-runs", type=int, default=1_000)
    parser.add_argument("--sql-points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("export", "sql"))
    args = parser.parse_args()
    warm_up()
    root = tempfile.mkdtemp(prefix="steplog-export-bench-")
    try:
        if args.only in (None, "export"):
            bench_export(root, args.runs, args.points, args.repeats)
        if args.only in (None, "sql"):
            bench_sql(root, args.sql_runs, args.sql_points, max(args.repeats, 5))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
