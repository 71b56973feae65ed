"""Many names: the cost of a series, not of a point (issue 9, item 12).

Four figures, each measured in a fresh child process (so that peak RSS is that of the
workload alone) and reported as the median of ``--repeats`` runs:

    flush       N new series with one point each in one run, logged then flushed:
                seconds of the flush, peak RSS of the process (target: N = 100,000 in
                <= 5 s and <= 500 MB)
    bytes       bytes on disk per single-point series (segments + data.mdb) after
                N series were flushed and the store closed (target: <= 300)
    read_many   read_many() over N series of one point each in a closed store
                (target: N = 20,000 in <= 3 s)
    end         Run.end() of a run with 10 series while the store object holds
                N series of other runs (target: N = 100,000, <= 2 ms)

    .venv/bin/python benchmarks/scale.py                    # the target sizes
    .venv/bin/python benchmarks/scale.py --scale 0.1        # 10x smaller
    .venv/bin/python benchmarks/scale.py --only end --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = {"flush": 100_000, "bytes": 100_000, "read_many": 20_000, "end": 100_000}


def _store(path: str):
    import steplog

    return steplog.open(path, flush_interval=None)


def child_flush(path: str, n: int) -> dict:
    """Log one point in each of n new series of one run, then time the flush."""
    with _store(path) as store:
        run = store.start_run(experiment="scale")
        t0 = time.perf_counter()
        for i in range(n):
            run.log(f"metric/{i}", float(i), step=0)
        logged = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.flush()
        flushed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    from steplog.bench import store_bytes

    return {"log_s": logged, "flush_s": flushed, "peak_rss_mb": peak / 1e6,
            "bytes_per_series": store_bytes(path) / n}


def child_read_many(path: str, n: int) -> dict:
    with _store(path) as store:
        run = store.start_run(experiment="scale")
        for i in range(n):
            run.log(f"metric/{i}", float(i), step=0)
        run.end()
    with _store(path) as store:
        t0 = time.perf_counter()
        table = store.read_many()
        seconds = time.perf_counter() - t0
        assert table.num_rows == n, table.num_rows
    return {"read_many_s": seconds}


def child_end(path: str, n: int) -> dict:
    """End runs of 10 series each while the store object holds n other series."""
    with _store(path) as store:
        others = store.start_run(experiment="scale")
        for i in range(n):
            others.log(f"metric/{i}", float(i), step=0)
        store.flush()
        times = []
        for _ in range(20):
            run = store.start_run(experiment="scale")
            run.log({f"m{k}": 1.0 for k in range(10)}, step=0)
            t0 = time.perf_counter()
            run.end()
            times.append(time.perf_counter() - t0)
    return {"end_ms": statistics.median(times) * 1e3}


CHILDREN = {"flush": child_flush, "bytes": child_flush, "read_many": child_read_many, "end": child_end}


def measure(what: str, n: int) -> dict:
    path = tempfile.mkdtemp(prefix="steplog-scale-")
    try:
        out = subprocess.run([sys.executable, __file__, "--child", what, str(n), os.path.join(path, "s")],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(TARGETS), action="append")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "N", "PATH"))
    args = parser.parse_args()
    if args.child:
        what, n, path = args.child
        print(json.dumps(CHILDREN[what](path, int(n))))
        return 0
    done = set()
    for what in args.only or ["flush", "read_many", "end"]:
        if what in done or (what == "bytes" and "flush" in done):
            continue
        done.add(what)
        n = max(1, int(TARGETS[what] * args.scale))
        runs = [measure(what, n) for _ in range(args.repeats)]
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{what:9} n={n:>7}: " + ", ".join(f"{k} {v:.4g}" for k, v in medians.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
