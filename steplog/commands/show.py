"""``steplog show PATH RUN``: one run: its record, params, tags, resources, artifacts
and series."""

from __future__ import annotations

import json

from ._parsing import add_command

SERIES_COLUMNS = ("metric", "context", "kind", "count", "step_min", "step_max", "last")


def add_parser(sub) -> None:
    p = add_command(sub, "show", "show a run: params, tags, status, times and its series",
                    "steplog show runs.steplog 3f2a9c41\nsteplog show runs.steplog 3f2a9c41 --format json | jq .params")
    p.add_argument("path", help="store directory")
    p.add_argument("run", help="run id, a unique prefix of one, or a unique run name")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (default) or json (NaN and infinities as the strings \"NaN\", \"Infinity\", "
                        "\"-Infinity\")")
    p.set_defaults(handler=run)


def run(args) -> int:
    from ._runs import RunIds, open_store

    with open_store(args.path) as store:
        runs = store.runs()
        ids = RunIds.of(store, runs)
        run_id = ids.resolve(args.run)
        import pyarrow.compute as pc

        row = runs.filter(pc.equal(runs.column("id"), run_id)).to_pylist()[0]
        series = _series(store, run_id)
        artifacts = _artifacts(store, run_id)
    record = {**_record(row), "artifacts": artifacts}
    if args.format == "json":
        from ._console import json_safe, json_value

        print(json.dumps(json_safe({**record, "series": series}), default=json_value, indent=2, allow_nan=False))
    else:
        _print(record, series)
    return 0


def _record(row: dict) -> dict:
    """The runs-table row of a run, its params and tags as {flattened key: value}."""
    record = {k: row.get(k) for k in ("id", "experiment", "name", "parent", "kind", "status", "start_time",
                                      "end_time")}
    for group in ("params", "tags", "resources"):
        values = {}
        for key, value in row.items():
            prefix, _, name = key.partition(".")
            if value is not None and prefix in (group, f"{group}_text"):
                values[name] = value
        record[group] = dict(sorted(values.items()))
    return record


def _artifacts(store, run_id: str) -> list[dict]:
    """What the run logged as artifacts: name, role, kind, size, sha256, kept or not."""
    fields = ("name", "role", "kind", "size", "sha256", "stored", "location")
    return [{k: row[k] for k in fields} for row in store.artifacts(run_id).to_pylist()]


def _series(store, run_id: str) -> list[dict]:
    """The run's series with their counts, steps and last values."""
    return [{k: row.get(k) for k in SERIES_COLUMNS} for row in store.metrics(run_id).to_pylist()]


def _print(record: dict, series: list[dict]) -> None:
    from ._console import cell, duration, local_time, print_table

    start, end = record["start_time"], record["end_time"]
    lines = [("run", record["id"]), ("experiment", record["experiment"]), ("name", record["name"]),
             ("parent", record["parent"]), ("kind", record["kind"]), ("status", record["status"]),
             ("started", local_time(start, zone=True) if start else None),
             ("ended", local_time(end, zone=True) if end else None),
             ("duration", duration((end - start).total_seconds()) if start and end else None)]
    for label, value in lines:
        if value is not None:
            print(f"{label:<11} {value}")
    for group in ("params", "tags", "resources"):
        values = record[group]
        if group == "resources" and not values:
            continue
        print(f"\n{group} ({len(values)})")
        width = max((len(k) for k in values), default=0)
        for key, value in values.items():
            print(f"  {key:<{width}}  {cell(value)}")
    if record["artifacts"]:
        print(f"\nartifacts ({len(record['artifacts'])})")
        for a in record["artifacts"]:
            digest = (a["sha256"] or "")[:12] or "-"
            kept = ", kept" if a["stored"] else ""
            print(f"  {a['role']:<10} {a['name']}  ({a['kind']}{kept})  sha256 {digest}  {a['location']}")
    print(f"\nseries ({len(series)})")
    if series:
        print_table(["metric", "context", "kind", "count", "steps", "last"],
                    [[s["metric"], s["context"] or "", s["kind"], f"{s['count']:,}",
                      "" if s["step_min"] is None else f"{s['step_min']}..{s['step_max']}", cell(s["last"])]
                     for s in series], right={3, 5})
