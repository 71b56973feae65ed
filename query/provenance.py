"""Provenance: from one file (or its sha256) to the run that made it and everything
upstream of that run, in one call: the data it read (with hashes), the jobs that made
that data, its parent jobs, its code, params, environment and the final and best
values of its metrics.

Built on query/lineage.py over the store's public tables (``runs()``,
``artifacts()``, ``series(runs=...)``) and, where the store keeps one,
``environment(run_id)`` (the described environment record: sections git, python,
packages, machine, gpus, ...).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..engine.errors import NotFoundError, StepLogError
from .lineage import PRODUCED_ROLES, Lineage, artifact_key, graph_of

RUN_FIELDS = ("id", "experiment", "name", "kind", "status", "parent", "start_time", "end_time")
ARTIFACT_FIELDS = ("run_id", "name", "role", "kind", "location", "size", "sha256", "logged")
# packages a reader of a report looks for first, in this order
MAIN_PACKAGES = ("torch", "tensorflow", "jax", "numpy", "scipy", "pandas", "polars", "pyarrow", "scikit-learn",
                 "transformers", "accelerate", "lightning", "pytorch-lightning", "xgboost", "lightgbm", "steplog")


@dataclass
class Provenance:
    """Where one file came from. ``str()`` is a readable report, ``to_dict()`` plain
    values (times as ISO text) that ``json.dumps`` takes.

    sha256: the content; artifact: the producing log (name, role, kind, location,
    size, logged), else the first log; run: the producing run (latest producer when
    several; the others in other_producers), None for a file runs only read; parents:
    the run's parent, its parent, ...; upstream: every other run upstream of the
    file; inputs: every artifact read upstream, with sha256, the runs that read it
    (read_by) and made it (produced_by); readers: runs that read the file itself;
    params: the run's params by flattened key; code: commit, branch, dirty,
    diff_sha256 of the run's environment; environment: python, host, packages
    (count), main packages, gpus; metrics: per series its count, last (with step),
    min and max (with their steps); lineage: the upstream graph.
    """

    sha256: str
    artifact: dict
    run: dict | None
    other_producers: list[dict] = field(default_factory=list)
    parents: list[dict] = field(default_factory=list)
    upstream: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    readers: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    code: dict | None = None
    environment: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    lineage: Lineage | None = None

    def to_dict(self) -> dict:
        out = {name: _plain(getattr(self, name)) for name in
               ("sha256", "artifact", "run", "other_producers", "parents", "upstream", "inputs", "readers",
                "params", "code", "environment", "metrics")}
        if self.lineage is not None:
            out["lineage"] = {name: _plain(getattr(self.lineage, name).to_pylist())
                              for name in ("runs", "artifacts", "edges")}
        return out

    def __str__(self) -> str:
        return provenance_report(self)


def provenance(store, path_or_hash) -> Provenance:
    """The provenance of a file (hashed, streamed), a sha256, or a logged URI.

    NotFoundError naming the hash when no run of ``store`` logged that content."""
    graph = graph_of(store)
    sha256 = artifact_key(graph.artifacts, path_or_hash, "path_or_hash")
    keys = graph.artifacts.column("key")
    logs = _rows(graph.artifacts.filter(pc.equal(keys, sha256)), ARTIFACT_FIELDS)
    if not logs:
        raise NotFoundError(f"path_or_hash: no run logged {sha256}")
    logs.sort(key=lambda log: (log["logged"] is not None, log["logged"] or 0))
    producing = [log for log in logs if log["role"] in PRODUCED_ROLES]
    runs = _runs_by_id(graph.runs, {log["run_id"] for log in logs})
    producers = list(dict.fromkeys(log["run_id"] for log in reversed(producing)))   # latest first
    up = graph.around({sha256}, downstream=False)
    result = Provenance(sha256=sha256, artifact=_artifact(producing[-1] if producing else logs[0]),
                        run=runs.get(producers[0]) if producers else None, lineage=up)
    result.other_producers = [runs[r] for r in producers[1:] if r in runs]
    result.readers = [runs[r] for r in dict.fromkeys(log["run_id"] for log in logs
                                                    if log["role"] not in PRODUCED_ROLES) if r in runs]
    _add_upstream(result, graph.runs, up)
    if result.run is not None:
        run_id = result.run["id"]
        result.params = run_params(graph.runs, run_id)
        environment = environment_of(store, run_id)
        if environment is not None:
            result.code, result.environment = code_summary(environment), environment_summary(environment)
        result.metrics = metric_summary(store, run_id)
    return result


def _add_upstream(result: Provenance, runs: pa.Table, up: Lineage) -> None:
    """Parents, upstream runs and inputs of the producing run, from the upstream graph."""
    by_id = {row["id"]: row for row in _rows(up.runs, RUN_FIELDS)}
    if result.run is not None:
        parent, seen = result.run["parent"], {result.run["id"]}
        while parent and parent not in seen:
            seen.add(parent)
            row = by_id.get(parent) or _runs_by_id(runs, {parent}).get(parent)
            if row is None:
                break
            result.parents.append(row)
            parent = row["parent"]
    producer = result.run["id"] if result.run else None
    result.upstream = [row for row in sorted(by_id.values(), key=_start_key) if row["id"] != producer]
    read_by: dict[str, list] = {}
    made_by: dict[str, list] = {}
    for edge in up.edges.to_pylist():
        if edge["relation"] == "consumed":
            read_by.setdefault(edge["source"], []).append(edge["target"])
        elif edge["relation"] == "produced":
            made_by.setdefault(edge["target"], []).append(edge["source"])
    for row in up.artifacts.to_pylist():
        if row["id"] in read_by:
            result.inputs.append({**{k: row[k] for k in ("sha256", "name", "role", "kind", "location", "size")},
                                  "read_by": sorted(read_by[row["id"]]),
                                  "produced_by": sorted(made_by.get(row["id"], []))})


def _start_key(row: dict):
    return (row["start_time"] is not None, row["start_time"] or dt.datetime.min.replace(tzinfo=dt.timezone.utc))


def _rows(table: pa.Table, names) -> list[dict]:
    present = [n for n in names if n in table.column_names]
    return [{n: row.get(n) for n in names} for row in table.select(present).to_pylist()]


def _runs_by_id(runs: pa.Table, ids: set[str]) -> dict[str, dict]:
    picked = runs.filter(pc.is_in(runs.column("id"), value_set=pa.array(sorted(ids), pa.string())))
    return {row["id"]: row for row in _rows(picked, RUN_FIELDS)}


def _artifact(log: dict) -> dict:
    return {k: log[k] for k in ("name", "role", "kind", "location", "size", "logged", "run_id")}


def run_params(runs: pa.Table, run_id: str, groups=("params",)) -> dict:
    """A run's params (or other groups: "tags") by flattened key, as ``runs()`` types
    them; a mixed key's text value comes from its ``<group>_text.`` column."""
    row = runs.filter(pc.equal(runs.column("id"), run_id))
    names = [n for n in row.column_names if n.partition(".")[0] in groups + tuple(g + "_text" for g in groups)]
    values = {}
    for name, value in zip(names, row.select(names).to_pylist()[0].values() if names else ()):
        if value is not None:
            values[name.partition(".")[2]] = value
    return dict(sorted(values.items()))


# -- environment --------------------------------------------------------------------------

def environment_of(store, run_id: str) -> dict | None:
    """The described environment of a run; None where the store keeps none."""
    describe = getattr(store, "environment", None)
    if describe is None:
        return None
    try:
        environment = describe(run_id)
    except (NotFoundError, KeyError):
        return None
    return environment or None


def _first(section, *names):
    if not isinstance(section, dict):
        return None
    for name in names:
        if section.get(name) is not None:
            return section[name]
    return None


def code_summary(environment: dict) -> dict | None:
    """commit, branch, dirty and diff_sha256 (the uncommitted changes' hash) of git."""
    git = environment.get("git")
    if not isinstance(git, dict) or not git:
        return None
    return {"commit": _first(git, "commit", "sha", "head"), "branch": _first(git, "branch"),
            "dirty": _first(git, "dirty", "is_dirty"),
            "diff_sha256": _first(git, "diff_sha256", "diff_hash"),
            "remote": _first(git, "remote", "origin", "url")}


def packages_of(environment: dict) -> dict[str, str]:
    """{name: version} from the packages section (a dict, or a list of dicts or of
    "name==version" lines)."""
    packages = environment.get("packages")
    if isinstance(packages, dict):
        inner = packages.get("installed") or packages.get("packages")
        packages = inner if isinstance(inner, (dict, list)) else packages
    if isinstance(packages, dict):
        return {_package_key(k): str(v) for k, v in packages.items()}
    out = {}
    for item in packages or ():
        if isinstance(item, dict) and item.get("name"):
            out[_package_key(item["name"])] = str(item.get("version"))
        elif isinstance(item, str):
            name, _, version = item.partition("==")
            out[_package_key(name)] = version.strip()
    return out


def _package_key(name) -> str:
    """A distribution name as pip compares them: Scikit_Learn is scikit-learn."""
    return re.sub(r"[-_.]+", "-", str(name).strip()).lower()


def environment_summary(environment: dict) -> dict:
    """python version, host, package count, the main packages and the GPUs."""
    packages = packages_of(environment)
    python = environment.get("python")
    machine = environment.get("machine")
    gpus = environment.get("gpus")
    if isinstance(gpus, dict):
        gpus = gpus.get("devices") or gpus.get("gpus") or []
    names = [_first(g, "name", "model") if isinstance(g, dict) else str(g) for g in gpus or ()]
    return {"python": _first(python, "version", "python_version") if isinstance(python, dict) else python,
            "host": _first(machine, "hostname", "host", "node"),
            "packages": len(packages),
            "main_packages": {name: packages[name] for name in MAIN_PACKAGES if name in packages},
            "gpus": [n for n in names if n]}


# -- metrics ------------------------------------------------------------------------------

def metric_summary(store, run_id: str) -> list[dict]:
    """Per series of the run: metric, context, count, last and last_step, min and
    min_step, max and max_step (over the flushed points)."""
    keep = ("metric", "context", "kind", "count", "last", "last_step", "min", "min_step", "max", "max_step")
    try:
        series = store.series(runs=[run_id])
    except StepLogError:
        return []
    return [{k: row.get(k) for k in keep} for row in series.to_pylist() if row.get("kind") != "tensor"]


def _plain(value):
    """Datetimes as ISO text, containers walked: what json.dumps takes."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- the report ---------------------------------------------------------------------------

def short(run_id: str | None) -> str:
    return run_id[:8] if run_id else "-"


def when(value) -> str:
    """A time to the second, in UTC."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "-" if value is None else str(value)


def size_text(size) -> str:
    if size is None:
        return "size ?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def run_line(run: dict) -> str:
    """8-digit id, name, (kind, status), experiment."""
    kind = f"{run['kind']}, " if run.get("kind") else ""
    return f"{short(run['id'])}  {run['name']}  ({kind}{run['status']})  experiment {run['experiment']}"


def code_text(code: dict | None) -> str:
    if not code:
        return "-"
    parts = [f"commit {code['commit'] or '?'}"]
    if code.get("branch"):
        parts.append(f"on {code['branch']}")
    if code.get("dirty"):
        parts.append("dirty" + (f", diff sha256 {code['diff_sha256']}" if code.get("diff_sha256") else ""))
    elif code.get("dirty") is not None:
        parts.append("clean")
    return ", ".join(parts)


def environment_text(env: dict | None) -> str:
    if not env:
        return "-"
    main = ", ".join(f"{k} {v}" for k, v in env["main_packages"].items())
    gpus = env["gpus"]
    gpu_text = "no GPU" if not gpus else ", ".join(f"{gpus.count(g)} x {g}" for g in dict.fromkeys(gpus))
    return (f"python {env['python'] or '?'}, {env['packages']} packages" + (f" ({main})" if main else "")
            + f", host {env['host'] or '?'}, {gpu_text}")


def provenance_report(p: Provenance) -> str:
    a = p.artifact
    lines = [f"sha256      {p.sha256}",
             f"artifact    {a['name']}  ({a['role']}, {a['kind']}, {size_text(a['size'])})  {a['location']}"]
    if p.run is None:
        lines.append("produced by no run (it was only read)")
    else:
        r = p.run
        lines.append(f"produced by {run_line(r)}")
        lines.append(f"            {when(r['start_time'])} -> {when(r['end_time'])}")
        lines += [f"  also by   {run_line(o)}" for o in p.other_producers]
        lines += [f"parent      {run_line(o)}" for o in p.parents]
        lines.append(f"code        {code_text(p.code)}")
        lines.append(f"environment {environment_text(p.environment)}")
    width = max((len(k) for k in p.params), default=0)
    lines += [f"\nparams ({len(p.params)})"] + [f"  {k:<{width}}  {value_text(v)}" for k, v in p.params.items()]
    lines.append(f"\ninputs upstream ({len(p.inputs)})")
    for i in p.inputs:
        made = ", ".join(short(r) for r in i["produced_by"]) or "no run"
        lines.append(f"  {i['name']}  sha256 {i['sha256'] or '-'}  {size_text(i['size'])}")
        lines.append(f"      {i['location']}  made by {made}, read by {', '.join(short(r) for r in i['read_by'])}")
    lines.append(f"\nruns upstream ({len(p.upstream)})")
    lines += [f"  {run_line(r)}" for r in p.upstream]
    if p.readers:
        lines.append(f"\nread by ({len(p.readers)})")
        lines += [f"  {run_line(r)}" for r in p.readers]
    if p.run is not None:
        lines.append(f"\nmetrics of {short(p.run['id'])} ({len(p.metrics)}): last, min and max, at their steps")
        names = [m["metric"] + (f" {m['context']}" if m["context"] else "") for m in p.metrics]
        width = max(map(len, names), default=0)
        for name, m in zip(names, p.metrics):
            lines.append(f"  {name:<{width}}  last {value_text(m['last'])} @{m['last_step']}"
                         f"  min {value_text(m['min'])} @{m['min_step']}  max {value_text(m['max'])} @{m['max_step']}"
                         f"  ({m['count']:,} points)")
    return "\n".join(lines)
