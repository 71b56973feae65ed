"""The command line: ``steplog ls | show | read | plot | sql | export | import |
provenance | diff | verify | repair | demo | bench | warm-up`` (also ``python -m steplog``).

Exit codes: 0 done, 1 failed (``steplog: error: ...`` on stderr, no traceback), 2 a
usage error (argparse's). verify keeps its own: 1 damage found, 2 not a store.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from .commands import COMMANDS

# remarks of the API's error messages about arguments the command line has not
API_ONLY = re.compile(r" \(missing_ok=True[^)]*\)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="steplog", description="steplog: a store for experiment metrics",
                                     epilog="example:\n  steplog ls runs.steplog --columns params.lr,metrics.loss.min\n\n"
                                            "`steplog COMMAND --help` shows a command's options and an example.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"steplog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .engine.errors import StepLogError

    try:
        return args.handler(args)
    except StepLogError as exc:
        return _fail(str(exc))
    except BrokenPipeError:   # `steplog ls | head`: the reader left; not an error of ours
        _quiet_stdout()
        return 0
    except OSError as exc:   # an output file that cannot be written, a full disk
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    sys.stdout.flush()
    message = API_ONLY.sub("", message)
    print(f"steplog: error: {message}", file=sys.stderr)
    return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
