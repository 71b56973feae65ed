"""Command-line figures: what a person waits for, Python start-up included.

Each case runs the command in a fresh process (``python -m steplog ...``), output to a
pipe, and reports the median wall seconds of --repeats runs:

    ls 100k             `steplog ls` of a store of 100,000 runs (50 rows shown)
    ls 100k where       the same with --where on a param and --order-by
    ls 100k metric      the same with a metrics.loss.min column
    show                `steplog show` of one run of the 100,000
    plot 10 x 10M       `steplog plot` of 10 runs of 10 M points each, 1000 buckets, to PNG
    read buckets        `steplog read --buckets 1000` of one of those series, as CSV

Targets (the command-line issue): ls of 100,000 runs <= 1 s, the plot of 10 runs x 10 M
points <= 2 s. The stores are built once (about a minute for 100 M points, ten for
100,000 runs on a loaded two-core machine) under --stores, and reused by later runs.

    .venv/bin/python benchmarks/cli.py --stores /tmp/steplog-cli-bench
    .venv/bin/python benchmarks/cli.py --stores /tmp/steplog-cli-bench --only plot --repeats 5
    .venv/bin/python benchmarks/cli.py --runs 10000 --points 1000000   # smaller stores, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK = 1_000_000


def build_runs(path: str, runs: int) -> None:
    import steplog

    with steplog.open(path) as store:
        for i in range(runs):
            run = store.start_run(experiment=f"sweep-{i % 10}", name=f"trial-{i}",
                                  params={"lr": 10 ** -(1 + i % 5), "batch": 32 << (i % 4), "opt": ["sgd", "adam"][i % 2]},
                                  tags={"team": "bench"})
            if i % 100 == 0:   # a metric on some runs, for the metric column
                run.log_batch("loss", np.arange(100), np.random.default_rng(i).random(100))
            run.end()


def build_points(path: str, runs: int, points: int) -> list[str]:
    import steplog

    ids = []
    with steplog.open(path) as store:
        for i in range(runs):
            with store.start_run(experiment="long", name=f"long-{i}") as run:
                rng = np.random.default_rng(i)
                for lo in range(0, points, CHUNK):
                    steps = np.arange(lo, min(lo + CHUNK, points), dtype=np.int64)
                    run.log_batch("loss", steps, np.exp(-steps / points) + 0.1 * rng.standard_normal(len(steps)))
            ids.append(run.id)
    return ids


def ensure(stores: str, runs: int, runs_points: int, points: int) -> tuple[str, str, list[str]]:
    many = os.path.join(stores, f"runs-{runs}.steplog")
    long = os.path.join(stores, f"points-{runs_points}x{points}.steplog")
    if not os.path.isdir(many):
        began = time.perf_counter()
        build_runs(many + ".partial", runs)
        os.rename(many + ".partial", many)
        print(f"built {many} in {time.perf_counter() - began:.0f} s", flush=True)
    ids_file = long + ".ids"
    if not os.path.isdir(long):
        began = time.perf_counter()
        ids = build_points(long + ".partial", runs_points, points)
        os.rename(long + ".partial", long)
        with open(ids_file, "w") as f:
            f.write("\n".join(ids))
        print(f"built {long} in {time.perf_counter() - began:.0f} s", flush=True)
    with open(ids_file) as f:
        return many, long, f.read().split()


def timed(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "steplog", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"steplog {' '.join(args)} failed:\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", help="directory for the stores (kept; default: a temporary one)")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--long-runs", type=int, default=10)
    parser.add_argument("--points", type=int, default=10_000_000, help="points of each long run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    stores = args.stores or tempfile.mkdtemp(prefix="steplog-cli-bench-")
    os.makedirs(stores, exist_ok=True)
    many, long, ids = ensure(stores, args.runs, args.long_runs, args.points)
    with open(os.path.join(many, ".first-id"), "a+") as f:
        f.seek(0)
        first = f.read().strip()
    if not first:
        import steplog

        with steplog.open(many, mode="r") as store:
            first = store.runs(limit=1).column("id")[0].as_py()
        with open(os.path.join(many, ".first-id"), "w") as f:
            f.write(first)
    png = os.path.join(stores, "plot.png")
    cases = {
        f"ls {args.runs // 1000}k": ["ls", many],
        f"ls {args.runs // 1000}k where": ["ls", many, "--where", "params.lr < 0.001 and params.opt = 'adam'",
                                           "--order-by", "params.batch DESC"],
        f"ls {args.runs // 1000}k metric": ["ls", many, "--columns", "params.lr,metrics.loss.min"],
        "show": ["show", many, first[:10]],
        f"plot {args.long_runs} x {args.points / 1e6:g}M": ["plot", long, ",".join(i[:12] for i in ids), "loss",
                                                            "-o", png],
        "read buckets": ["read", long, ids[0], "loss", "--buckets", "1000", "--format", "csv"],
    }
    print(f"{'case':<22} {'median s':>9} {'min s':>7}  ({args.repeats} runs, python -m steplog, cold process)")
    for name, command in cases.items():
        if args.only and args.only not in name:
            continue
        times = [timed(command) for _ in range(args.repeats)]
        print(f"{name:<22} {statistics.median(times):9.3f} {min(times):7.3f}", flush=True)


if __name__ == "__main__":
    main()
