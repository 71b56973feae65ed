"""First-use figures: what a new install, and then every short process, waits for.

Each case runs in a fresh child process. "cold" cases get an EMPTY numba cache (their own
NUMBA_CACHE_DIR), as right after install; "warm" cases reuse one filled beforehand.

    cold flush          first flush() of scalar points (write kernels, rollups)
    cold log_tensor     first log_tensor of a float32 tensor, then its flush
    cold dtype D        first summarize of dtype D (the cost of each new dtype)
    cold read           first store.read(buckets=100), then method="lttb", in a process that
                        did not write the store (the write kernels compiled elsewhere)
    warm script         import steplog, open a store, log one point, close (the whole process)

Targets (issue 9, item 13): cold flush <= 3 s, cold log_tensor <= 5 s, cold read <= 2 s
each, warm script <= 0.3 s. Wall seconds and the child's CPU seconds (user + system) are
reported, median of --repeats runs; on a shared machine CPU seconds are the steadier.

    .venv/bin/python benchmarks/first_use.py                 # all cases, 3 runs each
    .venv/bin/python benchmarks/first_use.py --only warm --repeats 10
    .venv/bin/python benchmarks/first_use.py --after-warm-up     # the "cold" cases after the
                                    # install step's warm-up (engine/jit.warm_up) filled the cache
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent("""
    import json, os, sys, time
    t0 = time.perf_counter()
    case, store_path, arg = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}
    import numpy as np
    import steplog
    out["import"] = time.perf_counter() - t0
    def timed(name, fn):
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t
    if case == "flush":
        with steplog.open(store_path) as store:
            run = store.start_run()
            for i in range(100):
                run.log("loss", 1.0 / (i + 1), step=i)
            timed("flush", run.flush)
    elif case == "tensor":
        with steplog.open(store_path) as store:
            run = store.start_run()
            x = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
            timed("log_tensor", lambda: run.log_tensor("w", x, step=0))
            timed("flush", run.flush)
    elif case == "dtype":
        from steplog.engine.summary import summarize
        x = (np.random.default_rng(0).standard_normal(1000) * 50).astype(arg)
        timed("summarize", lambda: summarize(x))
    elif case == "write":
        with steplog.open(store_path) as store:
            run = store.start_run(experiment="first-use")
            run.log_batch("loss", steps=np.arange(200_000), values=np.random.default_rng(1).random(200_000))
            print(json.dumps({"run": run.id}))
            sys.exit(0)
    elif case == "read":
        with steplog.open(store_path) as store:
            timed("buckets", lambda: store.read(arg, "loss", buckets=100))
            timed("lttb", lambda: store.read(arg, "loss", buckets=100, method="lttb"))
    elif case == "script":
        t = time.perf_counter()
        with steplog.open(store_path) as store:
            store.start_run().log("loss", 0.5, step=0)
        out["open_log_close"] = time.perf_counter() - t
        out["numba"] = "numba" in sys.modules
    out["total"] = time.perf_counter() - t0
    print(json.dumps(out))
""")

DTYPES = ("float16", "float64", "int64", "bool")


def child(case: str, store: str, arg: str, cache: str) -> tuple[dict, float, float]:
    """-> (the child's timings, its wall seconds, its CPU seconds)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    before = os.times()
    t0 = os.times().elapsed
    proc = subprocess.run([sys.executable, "-c", CHILD, case, store, arg], env=env, capture_output=True,
                          text=True, check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return json.loads(proc.stdout.strip().splitlines()[-1]), after.elapsed - t0, cpu


WARMED: list[str] = []   # with --after-warm-up: the cache the warm-up filled, used by every case


def fresh_cache(root: str) -> str:
    return WARMED[0] if WARMED else tempfile.mkdtemp(dir=root)


def cold(case: str, root: str, arg: str = "") -> tuple[dict, float, float]:
    return child(case, tempfile.mkdtemp(dir=root) + "/store", arg, fresh_cache(root))


def cold_read(root: str) -> tuple[dict, float, float]:
    store = tempfile.mkdtemp(dir=root) + "/store"
    written, _, _ = child("write", store, "", fresh_cache(root))
    return child("read", store, written["run"], fresh_cache(root))


def warm_up_cache(root: str) -> str:
    """A numba cache filled by the install step's warm-up, as ``make`` leaves it."""
    cache = tempfile.mkdtemp(dir=root)
    subprocess.run([sys.executable, "-c", "from steplog.engine.jit import warm_up; assert warm_up()"],
                   env=dict(os.environ, NUMBA_CACHE_DIR=cache), check=True, capture_output=True)
    return cache


def write_bytecode() -> None:
    """Import steplog once where Python may write bytecode: a warm cache is also the .pyc
    files a first run leaves (PYTHONDONTWRITEBYTECODE would leave every run compiling
    steplog's modules again, 0.1 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import steplog"], env=env, check=True)


def report(name: str, runs: list[tuple[dict, float, float]], keys: tuple[str, ...]) -> dict:
    row = {"case": name, "runs": len(runs), "process_wall_s": statistics.median(r[1] for r in runs),
           "process_cpu_s": statistics.median(r[2] for r in runs)}
    for key in keys:
        row[key + "_s"] = statistics.median(r[0][key] for r in runs)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("flush", "tensor", "dtype", "read", "warm"), action="append")
    parser.add_argument("--after-warm-up", action="store_true",
                        help="run the cold cases on a cache filled by engine/jit.warm_up (the install step)")
    args = parser.parse_args()
    only = set(args.only or ("flush", "tensor", "dtype", "read", "warm"))
    with tempfile.TemporaryDirectory() as root:
        if args.after_warm_up:
            WARMED.append(warm_up_cache(root))
        n = args.repeats
        if "flush" in only:
            report("cold flush", [cold("flush", root) for _ in range(n)], ("flush", "import"))
        if "tensor" in only:
            report("cold log_tensor float32", [cold("tensor", root) for _ in range(n)], ("log_tensor", "flush"))
        if "dtype" in only:
            for dtype in DTYPES:
                report(f"cold dtype {dtype}", [cold("dtype", root, dtype) for _ in range(n)], ("summarize",))
        if "read" in only:
            report("cold read", [cold_read(root) for _ in range(n)], ("buckets", "lttb"))
        if "warm" in only:
            cache = tempfile.mkdtemp(dir=root)
            child("flush", tempfile.mkdtemp(dir=root) + "/store", "", cache)   # fills the kernel cache
            write_bytecode()
            runs = [child("script", tempfile.mkdtemp(dir=root) + "/store", "", cache) for _ in range(max(n, 5))]
            report("warm script", runs, ("import", "open_log_close", "total"))
            print(json.dumps({"warm script imported numba": any(r[0]["numba"] for r in runs)}), flush=True)


if __name__ == "__main__":
    main()
