"""``steplog verify | repair | demo | bench | warm-up``: checking and rebuilding a
store, the demo, the benchmark and the kernels' compile cache."""

from __future__ import annotations

from ._parsing import add_command, add_quiet, positive_int


def add_parser(sub) -> None:
    p = add_command(sub, "verify", "check every index value and every block; exit 1 if any is damaged",
                    "steplog verify runs.steplog",
                    description="Check every index value against its checksum and every block of every segment; "
                                "print a line per damage and a summary. Exit 0: clean, 1: damage found, 2: not a "
                                "store.")
    p.add_argument("path", help="store directory")
    add_quiet(p)
    p.set_defaults(handler=run_verify)
    p = add_command(sub, "repair", "rebuild the index from the segments (no process may use the store)",
                    "steplog repair runs.steplog",
                    description="Rebuild the index from the segment files, the source of truth; the old index "
                                "is kept beside it. Refused while a process writes to the store.")
    p.add_argument("path", help="store directory")
    add_quiet(p)
    p.set_defaults(handler=run_repair)
    p = add_command(sub, "demo", "simulate a hyper-parameter sweep, then query it",
                    "steplog demo --points 1000000 --store /tmp/demo.steplog")
    p.add_argument("--store", default="demo.steplog", help="store directory (replaced if it holds a demo)")
    p.add_argument("--points", type=positive_int, default=12_000_000, help="points to log in all (about)")
    add_quiet(p)
    p.set_defaults(handler=run_demo)
    p = add_command(sub, "bench", "measure ingest, size and read figures", "steplog bench --quick")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.set_defaults(handler=run_bench)
    p = add_command(sub, "warm-up", "compile the numba kernels into numba's cache (once after pip install)",
                    "steplog warm-up",
                    description="Compile steplog's numba kernels into numba's on-disk cache, so that the first "
                                "write or read of a process loads them instead of compiling them (seconds). "
                                "`make` does this at install; run it once after `pip install steplog`.")
    p.set_defaults(handler=run_warm_up)


def run_verify(args) -> int:
    from ..verify import run_verify as verify
    from ._console import progress_bar

    with progress_bar("verifying", args.quiet, counted=False):
        return verify(args.path)


def run_repair(args) -> int:
    from ..verify import run_repair as repair
    from ._console import progress_bar

    with progress_bar("repairing", args.quiet, counted=False):
        return repair(args.path)


def run_demo(args) -> int:
    from ..demo import run_demo as demo
    from ._console import progress_bar

    with progress_bar("logging", args.quiet) as progress:
        return demo(args.store, args.points, progress)


def run_bench(args) -> int:
    from ..bench import run_bench as bench

    return bench(quick=args.quick)


def run_warm_up(args) -> int:
    import sys
    import time

    from ..engine.jit import warm_up

    print("compiling the numba kernels of the write and read paths and of the tensor summaries into "
          "numba's cache (a minute or two after an install, seconds when the cache is full)...", flush=True)
    began = time.perf_counter()
    ok = warm_up()
    took = time.perf_counter() - began
    if not ok:
        print(f"steplog: error: some kernels did not compile ({took:.0f} s); they compile on first use instead",
              file=sys.stderr)
        return 1
    print(f"done in {took:.0f} s: processes load the compiled kernels from the cache from now on")
    return 0
