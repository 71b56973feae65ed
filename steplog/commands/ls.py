"""``steplog ls PATH``: the runs of a store, a row each, newest first."""

from __future__ import annotations

import datetime
import fnmatch
import sys

from ._parsing import add_command, whole_number

BASE = ("id", "experiment", "name", "status", "start", "duration")
AGGREGATES = ("last", "first", "min", "max", "mean", "count")
DEFAULT_LIMIT = 50


def add_parser(sub) -> None:
    p = add_command(sub, "ls", "list the runs of a store", "\n".join([
        "steplog ls runs.steplog",
        "steplog ls runs.steplog --experiment resnet-sweep --columns 'params.lr,metrics.loss.min'",
        "steplog ls runs.steplog --where \"params.lr < 0.01 and status = 'finished'\" --order-by 'metrics.loss.min'",
        "steplog ls runs.steplog --columns 'params.*' --limit 0 --format csv > runs.csv"]),
        description="List the runs of a store: id (shortest unique prefix), experiment, name, status, start "
                    "time, duration and the columns asked for; newest first.")
    p.add_argument("path", help="store directory")
    p.add_argument("--where", help="a run filter in MLflow's search syntax, e.g. \"params.lr < 0.1\"")
    p.add_argument("--experiment", help="only the runs of this experiment")
    p.add_argument("--columns", help="more columns, comma-separated: params.lr, tags.team, metrics.loss.min "
                                     "(metrics.NAME.AGG, AGG one of " + ", ".join(AGGREGATES) + "; "
                                     "metrics.NAME is its last value); * matches any text (params.*)")
    p.add_argument("--order-by", action="append", metavar="'COLUMN [ASC|DESC]'",
                   help="the order of the rows; may repeat (default: newest first)")
    p.add_argument("--limit", type=whole_number, default=DEFAULT_LIMIT,
                   help=f"rows to show (default {DEFAULT_LIMIT}; 0 shows all)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv, or json (JSON lines, full ids and times)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ._runs import RunIds, open_store

    with open_store(args.path) as store:
        everything = store.runs()
        selected = _select(store, everything, args)
        shown = selected if args.limit <= 0 else selected.slice(0, args.limit)
        extra = _extra_columns(store, shown, _columns(args.columns, everything.column_names),
                               everything.column_names)
    if args.format != "table":
        from ._console import write_table

        write_table(_machine_table(shown, extra), args.format, None)
        return 0
    _print_runs(shown, extra, RunIds.of(store, everything))
    if selected.num_rows > shown.num_rows:
        more = selected.num_rows - shown.num_rows
        print(f"... {more:,} more run{'s' if more > 1 else ''} (--limit 0 shows all)")
    elif everything.num_rows == 0:
        print("no runs", file=sys.stderr)
    return 0


def _select(store, everything, args):
    """The runs the arguments choose, in the order asked (default: newest first)."""
    if args.where is None and args.order_by is None and args.experiment is None:
        return everything.take(list(range(everything.num_rows - 1, -1, -1)))   # runs() is oldest first
    return store.runs(where=args.where, order_by=args.order_by or ["start_time DESC"], experiment=args.experiment)


def _columns(text: str | None, held: list[str]) -> list[str]:
    """The extra column names ``--columns`` asks for, globs expanded over ``held``."""
    from ..engine.errors import InvalidArgumentError

    names: list[str] = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        if any(c in item for c in "*?["):
            names += [n for n in held if fnmatch.fnmatchcase(n, item) and n not in names]
        elif item in held or item.startswith("metrics."):
            names.append(item)
        else:
            import difflib

            close = difflib.get_close_matches(item, held, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidArgumentError("columns", f"the runs have no column {item!r}{hint}")
    return names


def _extra_columns(store, shown, names: list[str], held: list[str]) -> dict[str, list]:
    """The values of each column of ``names`` for the rows of ``shown``: a runs column
    (None where a filtered table left it out: none of its runs holds it) or a metric."""
    metrics = _metric_values(store, shown, [n for n in names if n not in held])
    return {name: metrics[name] if name in metrics else
            shown.column(name).to_pylist() if name in shown.column_names else [None] * shown.num_rows
            for name in names}


def _metric_values(store, runs, names: list[str]) -> dict[str, list]:
    """metrics.NAME[.AGG] for the rows of ``runs``, from the store's kept aggregates of
    the series NAME without a context (None where a run has none)."""
    wanted = {}
    for name in names:
        metric, agg = name[len("metrics."):], "last"
        head, _, tail = metric.rpartition(".")
        if head and tail in AGGREGATES:
            metric, agg = head, tail
        wanted[name] = (metric, agg)
    ids = runs.column("id").to_pylist()
    found = {}
    if wanted and ids:
        for row in store.series(runs=ids).to_pylist():
            if row["context"] is None:
                found[(row["run_id"], row["metric"])] = row
    return {name: [found.get((run_id, metric), {}).get(agg) for run_id in ids]
            for name, (metric, agg) in wanted.items()}


def _print_runs(runs, extra: dict, ids) -> None:
    from ._console import cell, duration, local_time, print_table

    rows = runs.select(["id", "experiment", "name", "status", "start_time", "end_time"]).to_pylist()
    width = ids.abbrev_length([r["id"] for r in rows])
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = []
    for i, r in enumerate(rows):
        start, end = r["start_time"], r["end_time"] or (now if r["status"] == "running" else None)
        lines.append([r["id"][:width], cell(r["experiment"]), cell(r["name"]), r["status"],
                      local_time(start, seconds=False) if start else "",
                      duration((end - start).total_seconds()) if start and end else ""]
                     + [cell(values[i]) for values in extra.values()])
    numeric = {len(BASE) - 1} | {len(BASE) + j for j, values in enumerate(extra.values())
                                 if all(isinstance(v, (int, float)) or v is None for v in values)}
    print_table(list(BASE) + list(extra), lines, right=numeric, fixed={0, 3, 4, 5})


def _machine_table(runs, extra: dict):
    """For csv and json: whole ids and the runs table's own columns, then ``extra``."""
    import pyarrow as pa

    table = runs.select(["id", "experiment", "name", "parent", "status", "start_time", "end_time"])
    for name, values in extra.items():
        if name not in table.column_names:
            table = table.append_column(name, runs.column(name) if name in runs.column_names
                                        else pa.array(values))
    return table
