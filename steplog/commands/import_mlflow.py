"""``steplog import-mlflow --from SOURCE --to PATH``: an MLflow tracking store (SQLite or
./mlruns) copied into a steplog store (bindings/mlflow/importer.py does the copy)."""

from __future__ import annotations

import sys

from ._parsing import add_command, add_quiet

USAGE_ERROR = 2   # argparse's exit code: the arguments cannot work, nothing was written


def add_parser(sub) -> None:
    p = add_command(sub, "import-mlflow", "copy an MLflow tracking store (SQLite or ./mlruns) into a steplog store",
                    "\n".join(["steplog import-mlflow --from sqlite:///mlflow.db --to runs.steplog",
                               "steplog import-mlflow --from ./mlruns --to runs.steplog",
                               "mlflow server --backend-store-uri steplog://$PWD/runs.steplog"]),
                    description="Copy the experiments, runs, params, tags, metric histories and dataset inputs "
                                "of an MLflow store into the steplog store at --to (created if missing), keeping "
                                "MLflow's run ids (and experiment ids where free), then compare every count with "
                                "the source. Afterwards MlflowClient(\"steplog:///ABS/PATH\") reads what the "
                                "source's client read. Running it again copies only what is new: runs already "
                                "imported are skipped, experiments are matched by name. Artifacts are not copied: "
                                "runs keep pointing at their artifact locations.")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="sqlite:///PATH (MLflow's SQLite store; sqlite:////ABS/PATH) or a ./mlruns directory "
                        "(a path or file:///PATH)")
    p.add_argument("--to", dest="path", required=True, metavar="PATH", help="steplog store (created if missing)")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    try:
        from ..bindings.mlflow import importer
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        return _error(f"the mlflow extra is not installed (pip install steplog[mlflow]): {exc}", 1)
    from ..engine.errors import InvalidArgumentError
    from ._console import duration, progress_bar

    try:
        with progress_bar("importing runs", args.quiet) as progress:
            done = importer.import_mlflow(args.source, args.path, progress=progress)
    except InvalidArgumentError as exc:
        option = {"source": "--from", "target": "--to"}.get(exc.argument)
        if option is None:
            raise
        return _error(f"{option}: {str(exc).removeprefix(exc.argument + ': ')}", USAGE_ERROR)
    except MlflowException as exc:
        return _error(f"MLflow: {exc.message}", 1)
    c = importer.counted
    print(f"imported {c(done.experiments, 'experiment')} ({done.experiments_existing:,} there already), "
          f"{c(done.runs, 'run')} ({done.runs_skipped:,} skipped: imported before), {c(done.params, 'param')}, "
          f"{c(done.tags, 'tag')}, {c(done.series, 'metric')}, {c(done.points, 'point')} from {done.source} "
          f"into {done.target}")
    experiments, runs = done.experiments + done.experiments_existing, done.runs + done.runs_skipped
    print(f"verified: every count matches the source ({c(experiments, 'experiment')}, {c(runs, 'run')}); "
          f"{duration(done.seconds)}, {done.points_per_second:,.0f} points/s")
    return 0


def _error(message: str, code: int) -> int:
    sys.stdout.flush()
    print(f"steplog: error: {message}", file=sys.stderr)
    return code
