"""``steplog diff PATH RUN_A RUN_B``: what differs between two runs."""

from __future__ import annotations

import json

from ._parsing import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "diff", "what differs between two runs: params, tags, code, packages, inputs, metrics",
                    "steplog diff runs.steplog 3f2a9c41 7b1e0d22\nsteplog diff runs.steplog 3f2a 7b1e --format json",
                    description="The params, tags, code (commit, dirty, diff hash), environment (packages added, "
                                "removed and changed, python, host), inputs (by name and sha256) and final metric "
                                "values that differ from run A to run B; what they share is not shown.")
    p.add_argument("path", help="store directory")
    p.add_argument("run_a", help="run id, a unique prefix of one, or a unique run name")
    p.add_argument("run_b", help="run id, a unique prefix of one, or a unique run name")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..query.rundiff import diff_runs
    from ._runs import resolve_runs, open_store

    with open_store(args.path) as store:
        a, = resolve_runs(store, [args.run_a], "run_a")
        b, = resolve_runs(store, [args.run_b], "run_b")
        found = diff_runs(store, a, b)
    if args.format == "json":
        from ._console import json_safe

        print(json.dumps(json_safe(found.to_dict()), indent=2, allow_nan=False))
    else:
        print(found)
    return 0
