"""The command line: ``steplog demo | bench | verify | repair``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="steplog", description="steplog: a store for experiment metrics")
    parser.add_argument("--version", action="version", version=f"steplog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a hyper-parameter sweep, then query it")
    demo.add_argument("--store", default="demo.steplog", help="store directory (replaced if it holds a demo)")
    demo.add_argument("--points", type=_positive_int, default=12_000_000, help="points to log in all (about)")
    bench = sub.add_parser("bench", help="measure ingest, size and read figures")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    verify = sub.add_parser("verify", help="check every index value and every block; exit 1 if any is damaged")
    verify.add_argument("path", help="store directory")
    repair = sub.add_parser("repair", help="rebuild the index from the segments (no process may use the store)")
    repair.add_argument("path", help="store directory")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.store, args.points)
    if args.command == "bench":
        from .bench import run_bench

        return run_bench(quick=args.quick)
    from .verify import run_repair, run_verify

    return run_verify(args.path) if args.command == "verify" else run_repair(args.path)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
