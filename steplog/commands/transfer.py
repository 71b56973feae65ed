"""``steplog export PATH DEST`` and ``steplog import PATH SOURCE``: a store to a
Hive-partitioned Parquet dataset and back."""

from __future__ import annotations

import sys

from ._parsing import add_command, add_quiet


def add_parser(sub) -> None:
    p = add_command(sub, "export", "write runs to a Hive-partitioned Parquet dataset", "\n".join([
        "steplog export runs.steplog runs-parquet",
        "steplog export runs.steplog best --where \"metrics.loss.min < 0.2\"",
        "steplog export runs.steplog two --runs 3f2a9c41,8d0e77b2"]),
        description="Write the runs of a store (all, those --where picks, or --runs) to DEST, a new directory: "
                    "experiment=NAME/run=ID/points.parquet for the points, _runs.parquet for the runs, "
                    "_tensors/ for tensor summaries. To read the points: pyarrow.dataset.dataset(DEST, "
                    "partitioning=\"hive\") and Spark as it is (they skip the _ paths); DuckDB "
                    "read_parquet('DEST/*/*/points.parquet', hive_partitioning=true) and Polars "
                    "pl.scan_parquet('DEST/*/*/points.parquet', hive_partitioning=True) with that glob, as "
                    "_tensors/ and _runs.parquet sit beside the points. `steplog import` reads it back.")
    p.add_argument("path", help="store directory")
    p.add_argument("dest", help="directory to create (must not exist, or be empty)")
    p.add_argument("--where", help="a run filter in MLflow's search syntax")
    p.add_argument("--runs", metavar="RUN[,RUN...]", help="run ids, unique prefixes or unique run names, comma-separated")
    add_quiet(p)
    p.set_defaults(handler=run_export)
    p = add_command(sub, "import", "import a dataset written by `steplog export` into a store",
                    "steplog import other.steplog runs-parquet",
                    description="Import the runs of a dataset that `steplog export` wrote into the store at PATH "
                                "(created if missing; removed again if the import fails): ids, params, tags, statuses, times, every point "
                                "and every tensor summary, bit for bit (artifacts are not exported). A store that holds one of the runs already is refused, untouched.")
    p.add_argument("path", help="store directory (created if missing)")
    p.add_argument("source", help="dataset directory")
    add_quiet(p)
    p.set_defaults(handler=run_import)


def run_export(args) -> int:
    from ..query.export import export_store
    from ._console import progress_bar
    from ._runs import open_store, resolve_runs

    with open_store(args.path) as store:
        runs = None
        if args.runs is not None:
            runs = list(dict.fromkeys(resolve_runs(store, [p for p in args.runs.split(",") if p.strip()],
                                                   "--runs")))
        with progress_bar("exporting series", args.quiet) as progress:
            done = export_store(store, args.dest, runs=runs, where=args.where, progress=progress)
    print(f"exported {done['runs']:,} runs, {done['series']:,} series, {done['points']:,} points to "
          f"{done['path']} ({done['files']:,} files, {done['bytes'] / 1e6:,.1f} MB)")
    if done.get("running"):
        print(f"steplog: note: {done['running']:,} runs were still running; an import shows them crashed",
              file=sys.stderr)
    return 0


def run_import(args) -> int:
    import os

    from .. import transfer
    from ._console import progress_bar
    from ._runs import open_store

    import pyarrow as pa

    from ..engine.errors import InvalidArgumentError

    _check_source(args.source)
    created = not os.path.exists(args.path)
    try:
        with open_store(args.path, write=True) as store:
            with progress_bar("importing runs", args.quiet) as progress:
                try:
                    done = transfer.import_dataset(store, args.source, progress=progress)
                except pa.ArrowException as exc:   # a damaged file of the dataset
                    raise InvalidArgumentError("source", f"a file of {args.source} does not read: {exc}") from None
    except BaseException:
        if created and os.path.isdir(args.path):   # only what this command made
            import shutil

            shutil.rmtree(args.path, ignore_errors=True)
        raise
    print(f"imported {done['runs']:,} runs, {done['series']:,} series, {done['points']:,} points, "
          f"{done.get('tensor_rows', 0):,} tensor summaries into {args.path}")
    return 0


def _check_source(source: str) -> None:
    """Read the dataset's run records before any store is opened: a bad source creates
    none."""
    import pyarrow as pa

    from .. import transfer
    from ..engine.errors import InvalidArgumentError, StepLogError

    path = transfer._source_arg(source)
    try:
        transfer._run_records(path)
    except StepLogError:
        raise
    except (pa.ArrowException, ValueError) as exc:   # not Parquet, or damaged
        raise InvalidArgumentError("source", f"{transfer.RUNS_FILE} of {path} does not read: {exc}") from None
