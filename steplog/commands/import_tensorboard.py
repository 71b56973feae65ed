"""``steplog import-tensorboard LOGDIR --to PATH``: TensorBoard event files copied into a
steplog store (bindings/tensorboard/importer.py does the copy)."""

from __future__ import annotations

import sys

from ._parsing import add_command, add_quiet

USAGE_ERROR = 2   # argparse's exit code: the arguments cannot work, nothing was written
DAMAGED = 3       # a record failed its CRC check (without --skip-damaged)
MAX_LISTED = 10


def add_parser(sub) -> None:
    p = add_command(sub, "import-tensorboard", "copy TensorBoard event files (a --logdir) into a steplog store",
                    "\n".join(["steplog import-tensorboard runs/ --to runs.steplog",
                               "steplog import-tensorboard runs/ --to runs.steplog --skip-damaged"]),
                    description="Copy every run under LOGDIR (each directory holding *tfevents* files, named by "
                                "its path as TensorBoard names it) into the steplog store at --to (created if "
                                "missing): scalars (every point, old and new style, float and double), histograms "
                                "(as tensor summaries), hparams (as params) and texts (as artifacts). Images, "
                                "audio and graphs are counted, not copied. Running it again skips the runs imported "
                                "before. A record that fails its CRC check stops the import (naming file and "
                                "offset) unless --skip-damaged; a last record cut short ends its file.")
    p.add_argument("logdir", metavar="LOGDIR", help="a TensorBoard log directory (what tensorboard --logdir takes)")
    p.add_argument("--to", dest="path", required=True, metavar="PATH", help="steplog store (created if missing)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="the experiment of the runs (default: LOGDIR's base name)")
    p.add_argument("--skip-damaged", action="store_true",
                   help="skip records that fail their CRC check (reported) instead of stopping")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    try:
        from ..bindings.tensorboard import importer
        from ..bindings.tensorboard.events import event_class

        event_class()
    except ImportError as exc:
        return _error(f"the tensorboard extra is not installed (pip install 'steplog[tensorboard]'): {exc}", 1)
    from ..engine.errors import CorruptionError, InvalidArgumentError
    from ._console import duration, progress_bar

    try:
        with progress_bar("importing event files", args.quiet) as progress:
            done = importer.import_tensorboard(args.logdir, args.path, experiment=args.experiment,
                                               skip_damaged=args.skip_damaged, progress=progress)
    except InvalidArgumentError as exc:
        option = {"logdir": "LOGDIR", "target": "--to"}.get(exc.argument)
        if option is None:
            raise
        return _error(f"{option}: {str(exc).removeprefix(exc.argument + ': ')}", USAGE_ERROR)
    except CorruptionError as exc:
        return _error(f"{exc} (pass --skip-damaged to skip damaged records; runs imported before it are kept and "
                      "skipped by the next import)", DAMAGED)
    except importer.IncompleteRunError as exc:
        return _error(str(exc), 1)
    print(f"imported {done.runs:,} runs ({done.runs_skipped:,} skipped: imported before), {done.files:,} event files, "
          f"{done.events:,} events: {done.points:,} points in {done.series:,} series, {done.histograms:,} histograms, "
          f"{done.params:,} params, {done.texts:,} texts from {done.logdir} into {done.target} "
          f"(experiment {done.experiment!r}); {duration(done.seconds)}, {done.events_per_second:,.0f} events/s")
    if done.not_imported:
        print("not imported: " + ", ".join(f"{n:,} {kind}" for kind, n in sorted(done.not_imported.items())))
    for path, offset in done.truncated:
        print(f"truncated: {path} ends in a record cut short at offset {offset} (read up to it)")
    for path, offset, reason in done.damaged[:MAX_LISTED]:
        print(f"damaged: {path} at offset {offset}: {reason} (skipped)")
    if len(done.damaged) > MAX_LISTED:
        print(f"damaged: {len(done.damaged) - MAX_LISTED:,} more records skipped")
    return 0


def _error(message: str, code: int) -> int:
    sys.stdout.flush()
    print(f"steplog: error: {message}", file=sys.stderr)
    return code
