"""``steplog sql PATH QUERY``: SQL over the store's runs, series and points (DuckDB)."""

from __future__ import annotations

from ._parsing import JSON_NOTE, add_command


def add_parser(sub) -> None:
    p = add_command(sub, "sql", "run a SQL query over the runs, series and points tables (DuckDB)", "\n".join([
        "steplog sql runs.steplog 'select name, \"params.lr\", status from runs order by start_time'",
        "steplog sql runs.steplog \"select run_id, min(value) from points where metric = 'loss' group by run_id\""
        " --format csv"]),
        description="Run a SQL query (DuckDB's dialect) over three tables: runs (a row per run, "
                    "\"params.KEY\" and \"tags.KEY\" columns: quote the dotted names), series (run_id, metric, "
                    "context, kind, count, step_min, step_max) and points (run_id, metric, context, step, time, "
                    "time_ns, value). A WHERE on run_id / metric / context keeps the points read to those series. "
                    "Needs DuckDB (pip install 'steplog[sql]').")
    p.add_argument("path", help="store directory")
    p.add_argument("query", help="the SQL query")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                   help="table (default: times in UTC, ISO 8601), csv, json or parquet (needs -o); " + JSON_NOTE)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=run, parser=p)


def run(args) -> int:
    from ._console import emit
    from ._runs import open_store

    if args.format == "parquet" and args.output is None:
        args.parser.error("--format parquet writes a file: add -o FILE")
    try:
        import duckdb  # noqa: F401  (a clear message before any work)
    except ImportError:
        args.parser.exit(1, "steplog: error: sql needs DuckDB: pip install 'steplog[sql]'\n")
    from ..query.sql import run_sql

    with open_store(args.path) as store:
        table = run_sql(store, args.query)
    emit(table, args.format, args.output)
    return 0
