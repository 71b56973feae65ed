"""``steplog read PATH RUN METRIC``: the points of one series, or a downsampled view."""

from __future__ import annotations

import os
import sys

from ._parsing import JSON_NOTE, add_command, context_dict, context_item, positive_int, whole_number

EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet",
              ".pq": "parquet"}


def add_parser(sub) -> None:
    p = add_command(sub, "read", "read a series: its points, or min/max buckets, or LTTB points", "\n".join([
        "steplog read runs.steplog 3f2a9c41 loss --start 0 --stop 1000",
        "steplog read runs.steplog 3f2a9c41 loss --context subset=val --buckets 1000 --format csv > loss.csv",
        "steplog read runs.steplog 3f2a9c41 loss -o loss.parquet"]),
        description="Read one series of a run: every point in [--start, --stop), or with --buckets N at most N "
                    "rows (min/max buckets, or LTTB points with --method lttb). Output: a table on a terminal, "
                    "CSV in a pipe, or --format; -o FILE picks the format from the file's extension.")
    p.add_argument("path", help="store directory")
    p.add_argument("run", help="run id, a unique prefix of one, or a unique run name")
    p.add_argument("metric", help="metric name")
    p.add_argument("--context", action="append", type=context_item, metavar="KEY=VALUE",
                   help="the series' context, may repeat (rank=3 is the number 3, subset=val the text 'val')")
    p.add_argument("--start", type=whole_number, help="first step (included)")
    p.add_argument("--stop", type=whole_number, help="last step (excluded)")
    p.add_argument("--buckets", type=positive_int, help="at most this many rows")
    p.add_argument("--method", choices=("minmax", "lttb"), default="minmax",
                   help="with --buckets: minmax buckets (default) or LTTB points")
    p.add_argument("--x", choices=("step", "time", "relative"), default="step",
                   help="with --buckets: bucket over steps (default), wall-clock time or time since the run started")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"),
                   help="table, csv, json or parquet (needs -o); " + JSON_NOTE)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=run, parser=p)


def run(args) -> int:
    from ._console import emit
    from ._runs import open_store, resolve_runs

    fmt = _format(args)
    if fmt == "parquet" and args.output is None:
        args.parser.error("--format parquet writes a file: add -o FILE")
    if args.method == "lttb" and args.buckets is None:
        args.parser.error("--method lttb needs --buckets N, the number of points to keep")
    with open_store(args.path) as store:
        [run_id] = resolve_runs(store, [args.run])
        table = store.read(run_id, args.metric, context=context_dict(args.context), start=args.start,
                           stop=args.stop, buckets=args.buckets, method=args.method, x=args.x)
    emit(table, fmt, args.output)
    if table.num_rows == 0:
        print("no points in that range", file=sys.stderr)
    return 0


def _format(args) -> str:
    if args.format:
        return args.format
    if args.output:
        return EXTENSIONS.get(os.path.splitext(args.output)[1].lower(), "csv")
    from ._console import is_terminal

    return "table" if is_terminal(sys.stdout) else "csv"
