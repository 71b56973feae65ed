"""What differs between two runs: params, tags, environment (packages added, removed
and changed, python, host), code (commit, dirty, diff hash), inputs (artifacts with
role input, by name and sha256) and final metric values. Only differences are kept;
two runs that agree on something show nothing for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .lineage import run_arg
from .provenance import (_plain, code_summary, environment_of, environment_summary, metric_summary, packages_of,
                         run_line, run_params, value_text)

RUN_FIELDS = ("id", "experiment", "name", "kind", "status", "parent", "start_time", "end_time")


@dataclass
class RunDiff:
    """The differences from run ``a`` to run ``b``; ``str()`` prints them side by side,
    ``to_dict()`` gives plain values.

    params, tags, code, inputs, metrics: lists of (key, value in a, value in b), None
    where a run lacks the key; inputs are keyed by artifact name, valued by the
    sorted sha256s (or locations) the run read under that name; metrics by
    "metric" or "metric {context}", valued by the last value. packages: added
    (in b only: version), removed (in a only: version), changed (name: (a, b)).
    python, host: (a, b) where they differ, else None. environment: whether both
    runs have an environment record (without one, packages, python, host and code
    are left empty).
    """

    a: dict
    b: dict
    params: list[tuple] = field(default_factory=list)
    tags: list[tuple] = field(default_factory=list)
    code: list[tuple] = field(default_factory=list)
    inputs: list[tuple] = field(default_factory=list)
    metrics: list[tuple] = field(default_factory=list)
    packages: dict = field(default_factory=lambda: {"added": {}, "removed": {}, "changed": {}})
    python: tuple | None = None
    host: tuple | None = None
    environment: bool = False

    def to_dict(self) -> dict:
        def triples(rows):
            return [{"key": k, "a": _plain(x), "b": _plain(y)} for k, x, y in rows]

        return {"a": _plain(self.a), "b": _plain(self.b), "params": triples(self.params), "tags": triples(self.tags),
                "code": triples(self.code), "inputs": triples(self.inputs), "metrics": triples(self.metrics),
                "packages": {"added": self.packages["added"], "removed": self.packages["removed"],
                             "changed": {k: list(v) for k, v in self.packages["changed"].items()}},
                "python": list(self.python) if self.python else None, "host": list(self.host) if self.host else None,
                "environment": self.environment}

    def __str__(self) -> str:
        return diff_report(self)


def diff_runs(store, a, b) -> RunDiff:
    """The differences from run ``a`` to run ``b`` (full run ids) of ``store``."""
    runs = store.runs()
    a, b = run_arg(runs, a, "a"), run_arg(runs, b, "b")
    rows = {row["id"]: row for row in runs.filter(pc.is_in(runs.column("id"), value_set=pa.array([a, b])))
            .select([n for n in RUN_FIELDS if n in runs.column_names]).to_pylist()}
    result = RunDiff(a={n: rows[a].get(n) for n in RUN_FIELDS}, b={n: rows[b].get(n) for n in RUN_FIELDS})
    result.params = differences(run_params(runs, a), run_params(runs, b))
    result.tags = differences(run_params(runs, a, ("tags",)), run_params(runs, b, ("tags",)))
    result.inputs = differences(*(inputs_of(store, r) for r in (a, b)))
    result.metrics = differences(*(last_values(store, r) for r in (a, b)))
    env_a, env_b = environment_of(store, a), environment_of(store, b)
    if env_a is not None and env_b is not None:
        _diff_environment(result, env_a, env_b)
    return result


def _diff_environment(result: RunDiff, env_a: dict, env_b: dict) -> None:
    result.environment = True
    code_a, code_b = code_summary(env_a) or {}, code_summary(env_b) or {}
    keys = ("commit", "branch", "dirty", "diff_sha256")
    result.code = differences({k: code_a.get(k) for k in keys}, {k: code_b.get(k) for k in keys}, order=keys)
    pa_, pb = packages_of(env_a), packages_of(env_b)
    result.packages = {"added": {k: pb[k] for k in sorted(pb.keys() - pa_.keys())},
                       "removed": {k: pa_[k] for k in sorted(pa_.keys() - pb.keys())},
                       "changed": {k: (pa_[k], pb[k]) for k in sorted(pa_.keys() & pb.keys()) if pa_[k] != pb[k]}}
    sa, sb = environment_summary(env_a), environment_summary(env_b)
    result.python = (sa["python"], sb["python"]) if sa["python"] != sb["python"] else None
    result.host = (sa["host"], sb["host"]) if sa["host"] != sb["host"] else None


def same(x, y) -> bool:
    """Equal values, NaN equal to NaN."""
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y and isinstance(x, bool) == isinstance(y, bool)   # True is not the param 1


def differences(a: dict, b: dict, order=None) -> list[tuple]:
    """(key, a's value, b's value) for every key whose values differ (None: absent)."""
    keys = order if order is not None else sorted(a.keys() | b.keys())
    return [(k, a.get(k), b.get(k)) for k in keys if not same(a.get(k), b.get(k))]


def inputs_of(store, run_id: str) -> dict[str, list]:
    """{artifact name: sorted sha256s (locations for logs without one)} of the run's
    input logs."""
    logs = store.artifacts(run_id=run_id)
    logs = logs.filter(pc.equal(logs.column("role"), "input"))
    out: dict[str, set] = {}
    for name, sha, location in zip(*(logs.column(n).to_pylist() for n in ("name", "sha256", "location"))):
        out.setdefault(name or location, set()).add(sha or location)
    return {k: sorted(v) for k, v in out.items()}


def last_values(store, run_id: str) -> dict:
    """{"metric" or "metric {context}": last value} of the run's scalar series."""
    return {m["metric"] + (f" {m['context']}" if m["context"] else ""): m["last"]
            for m in metric_summary(store, run_id)}


def diff_report(d: RunDiff) -> str:
    lines = [f"a  {run_line(d.a)}", f"b  {run_line(d.b)}"]
    sections = [("params", d.params), ("tags", d.tags), ("code", d.code), ("inputs", d.inputs),
                ("final metrics", d.metrics)]
    for title, rows in sections:
        if rows:
            lines.append(f"\n{title} ({len(rows)} differ)")
            lines += _side_by_side(rows)
    pk = d.packages
    if pk["added"] or pk["removed"] or pk["changed"]:
        rows = ([(k, None, v) for k, v in pk["added"].items()] + [(k, v, None) for k, v in pk["removed"].items()]
                + [(k, x, y) for k, (x, y) in pk["changed"].items()])
        lines.append(f"\npackages ({len(pk['added'])} added, {len(pk['removed'])} removed, "
                     f"{len(pk['changed'])} changed)")
        lines += _side_by_side(sorted(rows, key=lambda r: r[0]))
    for title, pair in (("python", d.python), ("host", d.host)):
        if pair:
            lines.append(f"\n{title}")
            lines += _side_by_side([("", *pair)])
    if len(lines) == 2:
        lines.append("\nno differences")
    if not d.environment:
        lines.append("\nenvironment: not recorded for both runs")
    return "\n".join(lines)


def _side_by_side(rows: list[tuple]) -> list[str]:
    """``key  a's value  b's value`` in columns; an absent value shows as "-"."""
    cells = [(str(k), _cell(x), _cell(y)) for k, x, y in rows]
    wk = max(len(c[0]) for c in cells)
    wa = max(max(len(c[1]) for c in cells), 1)
    return [f"  {k:<{wk}}  {x:<{wa}}  {y}" for k, x, y in cells]


def _cell(value) -> str:
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value) or "-"
    return value_text(value)
