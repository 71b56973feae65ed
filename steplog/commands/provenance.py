"""``steplog provenance PATH FILE``: the run that made a file and everything upstream of
it (data, jobs, code, params, environment, final and best metrics)."""

from __future__ import annotations

import json

from ._parsing import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "provenance", "where a file came from: its run, data, code, params, environment",
                    "steplog provenance runs.steplog model.pt\n"
                    "steplog provenance runs.steplog 3a6eb079...e5df (a sha256) --format json | jq .run",
                    description="From a file (hashed) or its sha256 to the run that produced it (role model, output "
                                "or checkpoint; the latest when several did), the runs and data upstream of it, its "
                                "parent jobs, code, params, environment and the last, min and max of its metrics.")
    p.add_argument("path", help="store directory")
    p.add_argument("file", help="a file, a sha256 (64 hex digits) or a logged URI")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..query.provenance import provenance
    from ._runs import open_store

    with open_store(args.path) as store:
        found = provenance(store, args.file)
    if args.format == "json":
        from ._console import json_safe

        print(json.dumps(json_safe(found.to_dict()), indent=2, allow_nan=False))
    else:
        print(found)
    return 0
