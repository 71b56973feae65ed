"""``steplog ls PATH``: the runs of a store, a row each, newest first."""

from __future__ import annotations

import datetime
import fnmatch
import json
import sys

from ._parsing import add_command, non_negative

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
    p.add_argument("--columns", help="more columns, comma-separated: params.lr, tags.team, metrics.loss.min, "
                                     "metrics.loss{subset=val}.last (metrics.NAME[{CONTEXT}].AGG as in --where, "
                                     "AGG one of " + ", ".join(AGGREGATES) + "; metrics.NAME is its last value); "
                                     "* matches any text (params.*). A key whose runs hold values of different "
                                     "kinds (32, \"auto\") shows them all in one column (as text in csv and json)")
    p.add_argument("--order-by", action="append", metavar="'COLUMN [ASC|DESC]'",
                   help="the order of the rows; may repeat (default: newest first)")
    p.add_argument("--limit", type=non_negative, default=DEFAULT_LIMIT,
                   help=f"rows to show (default {DEFAULT_LIMIT}; 0 shows all)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv, or json (JSON lines, full ids and times; NaN and infinities as the "
                        "strings \"NaN\", \"Infinity\", \"-Infinity\")")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ._runs import RunIds, open_store

    with open_store(args.path) as store:
        everything = store.runs()
        selected = _select(store, everything, args)
        shown = selected if args.limit <= 0 else selected.slice(0, args.limit)
        extra = _extra_columns(store, shown, _columns(args.columns, everything.column_names))
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
        import pyarrow as pa

        newest_first = pa.array(range(everything.num_rows - 1, -1, -1), pa.int64())   # runs() is oldest first
        return everything.take(newest_first)
    return store.runs(where=args.where, order_by=args.order_by or ["start_time DESC"], experiment=args.experiment)


def _columns(text: str | None, held: list[str]) -> list:
    """The extra columns ``--columns`` asks for, globs expanded over ``held``: runs-table
    column names (str) and metrics as (the name asked, its search Ref)."""
    from ..engine.errors import InvalidArgumentError
    from ..query.search import parse_order_by

    names: list = []
    for item in (t.strip() for t in _split(text or "")):
        if not item:
            continue
        if any(c in item for c in "*?[") and not item.startswith("metrics."):
            names += [n for n in held if fnmatch.fnmatchcase(n, item) and n not in names]
        elif item in held:
            names.append(item)
        elif item.startswith(("metrics.", "metric.")):
            [key] = parse_order_by([item], "columns")   # the names --where and --order-by read
            if item.split()[-1].lower() in ("asc", "desc"):
                raise InvalidArgumentError("columns", f"{item!r}: a column takes no ASC or DESC")
            names.append((item, key.ref))
        else:
            import difflib

            close = difflib.get_close_matches(item, held, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidArgumentError("columns", f"the runs have no column {item!r}{hint}")
    # a key whose runs disagree in kind has a typed and a params_text. column: shown as one
    return [n for n in names if not (isinstance(n, str) and _typed_name(n) != n and _typed_name(n) in names)]


def _split(text: str) -> list[str]:
    """``text`` cut at its commas, but for those inside {...} or quotes (a context's)."""
    items, start, depth, quote = [], 0, 0, None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"`":
            quote = c
        elif c in "{}":
            depth = max(0, depth + (1 if c == "{" else -1))
        elif c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def _typed_name(name: str) -> str:
    """params_text.KEY -> params.KEY (tags_text. likewise); any other name as it is."""
    root, dot, key = name.partition(".")
    return f"{root[:-len('_text')]}.{key}" if dot and root in ("params_text", "tags_text") else name


def _text_name(name: str) -> str:
    root, dot, key = name.partition(".")
    return f"{root}_text.{key}" if dot and root in ("params", "tags") else name


def _extra_columns(store, shown, names: list) -> dict[str, list]:
    """The values of each column of ``names`` for the rows of ``shown``: a runs column
    (None where a filtered table left it out: none of its runs holds it), with its
    params_text. twin's values where it has one, or a metric."""
    metrics = _metric_values(store, shown, [n for n in names if not isinstance(n, str)])
    extra = {}
    for name in names:
        if not isinstance(name, str):
            extra[name[0]] = metrics[name[0]]
            continue
        values = _column(shown, name)
        if _text_name(name) != name and _text_name(name) in shown.column_names:
            values = [v if v is not None else t for v, t in zip(values, _column(shown, _text_name(name)))]
        extra[name] = values
    return extra


def _column(table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _metric_values(store, runs, wanted: list) -> dict[str, list]:
    """For each (name asked, Ref) of ``wanted``: the aggregate of the Ref's series (its
    metric under its context) for each row of ``runs``, from the store's kept aggregates
    (None where a run has none). A series no row's run holds raises NotFoundError with
    the closest names."""
    from ..engine.errors import NotFoundError
    from ..query.catalog import context_label, context_pairs

    ids = runs.column("id").to_pylist()
    if not wanted or not ids:
        return {name: [None] * len(ids) for name, _ in wanted}
    found, held = {}, {}
    for row in store.series(runs=ids).to_pylist():
        if row["kind"] == "scalar":
            pairs = context_pairs(row["context"])
            found[(row["run_id"], row["metric"], pairs)] = row
            held[(row["metric"], pairs)] = context_label(row["metric"], row["context"])
    for name, ref in wanted:
        if (ref.key, tuple(ref.context)) not in held:
            import difflib

            stem = "metrics." + context_label(ref.key, json.dumps(dict(ref.context)) if ref.context else None)
            labels = {f"metrics.{label}": label for label in held.values()}
            close = difflib.get_close_matches(stem, sorted(labels), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(f'{c}.{ref.agg}' for c in close)}?" if close else ""
            raise NotFoundError(f"columns: no run shown has the series {name!r}{hint}")
    return {name: [found.get((run_id, ref.key, tuple(ref.context)), {}).get(ref.agg or "last") for run_id in ids]
            for name, ref in wanted}


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
        if name in table.column_names:
            continue
        if name in runs.column_names and _text_name(name) not in runs.column_names:
            table = table.append_column(name, runs.column(name))
        else:
            table = table.append_column(name, _array(values))
    return table


def _array(values: list):
    """An Arrow array of ``values``; text where they mix kinds (32 and "auto": "32", "auto")."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())
