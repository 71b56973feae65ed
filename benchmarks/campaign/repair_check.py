"""Delete a store's index, rebuild it with ``python -m steplog repair``, compare everything.

    python benchmarks/campaign/repair_check.py [--trials N] [--out DIR] [--points P]

Each trial writes a store from 8 processes at once, in two phases:

1. worker w starts run "w{w}-a" (params, nested params, tags) and run "w{w}-b", logs
   scalar series ("loss", "acc" with a context, "special" with NaN/inf/-0.0) over four
   flushes with explicit times, tensor summaries ("grad" with derived edges, "w" with
   fixed edges), ends run a as finished and run b as finished, failed or killed, or
   leaves it running (shown as crashed once the process is gone);
2. worker w resumes run "w{w+1}-a" with Store.run(id), logs more points and summaries
   to it and ends it (finished, failed or killed), and starts a child run with
   ``parent=`` that run.

The expected content is what was logged (the data are deterministic). A snapshot of
every answer (runs table, metrics of each run, every series' points, bucketed reads,
tensor summaries, merged summaries) is taken in a child process and compared with the
expected content; then ``index/`` is removed, ``python -m steplog repair PATH`` runs,
and a second snapshot is compared with both the expected content and the first
snapshot (which also covers times, start/end times and summary statistics). When the
repair command does not exist, this prints a note and compares the store without its
index (so the counts show what an index-less store loses). Prints counts of what is
missing or different and a final summary line. Exit status 0: it measures, it does not judge.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _campaign as C  # noqa: E402

WORKERS = 8
T0 = 1_600_000_000_000_000_000
B_STATUS = ("finished", "failed", "killed", None)            # run b of worker w: B_STATUS[w % 4]
RESUME_STATUS = ("finished", "failed", "killed")            # run a, ended by its resumer r: [r % 3]
EDGES = np.linspace(-3.0, 3.0, 13)


# -- the plan ------------------------------------------------------------------------------------

def run_params(w: int, which: str) -> tuple[str, dict, dict]:
    if which == "a":
        return (f"exp{w % 2}", {"w": w, "lr": 10.0 ** -(w + 1), "net": {"depth": 10 + w, "act": "relu"}},
                {"worker": str(w), "phase": "1"})
    if which == "b":
        return "exp-b", {"w": w, "b": True}, {"kind": "b"}
    return "exp-child", {"from": w}, {"child": "yes"}


def scalar_plan(seed: int, w: int, which: str, phase: int, points: int) -> list[dict]:
    """The log_batch calls of one run in one phase: series name, context, steps, values, times."""
    calls = []

    def add(name, context, steps, salt):
        steps = np.asarray(steps, np.int64)
        values = C.det_values(seed * 100 + w, phase * 10 + salt, ord(which[0]), np.arange(len(steps)))
        if name == "special":
            values[::13] = np.nan
            values[2::17] = np.inf
            values[4::19] = -np.inf
            values[6::23] = -0.0
        times = T0 + w * 10**13 + phase * 10**12 + salt * 10**11 + np.arange(len(steps), dtype=np.int64) * 997
        calls.append({"name": name, "context": context, "steps": steps, "values": values, "times": times})

    if which == "a" and phase == 1:
        add("loss", None, np.arange(points), 1)
        add("acc", {"split": "val"}, np.arange(0, points, 4), 2)
        add("special", None, np.arange(300), 3)
    elif which == "a" and phase == 2:
        add("loss", None, np.arange(points, 2 * points), 1)
    elif which == "b":
        add("loss", None, np.arange(-points // 2, points // 2) * 3, 4)
    else:
        add("loss", None, np.arange(500), 5)
    return calls


def tensor_plan(seed: int, w: int, which: str, phase: int) -> list[dict]:
    if which == "a":
        steps = range(10) if phase == 1 else range(10, 13)
        return [{"name": "grad", "step": s, "bins": 32, "edges": None,
                 "array": np.random.default_rng([seed, w, s]).standard_normal((16, 24)).astype(np.float32)}
                for s in steps]
    if which == "b":
        return [{"name": "w", "step": s, "bins": len(EDGES) - 1, "edges": EDGES,
                 "array": np.random.default_rng([seed, w, 100 + s]).standard_normal(200)} for s in range(5)]
    return []


def log_all(run, calls: list[dict], tensors: list[dict], chunks: int) -> None:
    for call in calls:
        bounds = np.linspace(0, len(call["steps"]), chunks + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            run.log_batch(call["name"], call["steps"][lo:hi], call["values"][lo:hi], times=call["times"][lo:hi],
                          context=call["context"])
            run.flush()
    for t in tensors:
        run.log_tensor(t["name"], t["array"], step=t["step"], bins=t["bins"], edges=t["edges"])
    run.flush()


# -- child roles ---------------------------------------------------------------------------------

def worker(store_path: str, out: str, w: int, phase: int, seed: int, points: int) -> None:
    import steplog

    store = steplog.open(store_path, block_points=64 if w % 2 == 0 else 8192)
    if phase == 1:
        ids = {}
        for which in ("a", "b"):
            experiment, params, tags = run_params(w, which)
            run = store.start_run(experiment=experiment, name=f"w{w}-{which}", params=params, tags=tags)
            ids[which] = run.id
            log_all(run, scalar_plan(seed, w, which, 1, points), tensor_plan(seed, w, which, 1), 4)
            status = "finished" if which == "a" else B_STATUS[w % 4]
            if status is not None:
                run.end(status)
        C.write_json_atomic(os.path.join(out, f"ids-{w}.json"), ids)
    else:
        owner = (w + 1) % WORKERS
        with open(os.path.join(out, f"ids-{owner}.json")) as f:
            target = json.load(f)["a"]
        run = store.run(target)
        log_all(run, scalar_plan(seed, owner, "a", 2, points), tensor_plan(seed, owner, "a", 2), 2)
        run.end(RESUME_STATUS[w % 3])
        experiment, params, tags = run_params(w, "child")
        child = store.start_run(experiment=experiment, name=f"w{w}-child", params=params, tags=tags, parent=target)
        log_all(child, scalar_plan(seed, w, "child", 2, points), [], 1)
        child.end("finished")
        C.write_json_atomic(os.path.join(out, f"ids-{w}-child.json"), {"child": child.id})
    store.close()


def snapshot(store_path: str, result: str, mem_mb: int) -> None:
    """Every answer the store gives about itself, pickled (numpy arrays keep NaN bits)."""
    import faulthandler

    C.limit_memory(mem_mb)
    faulthandler.enable()
    import pyarrow as pa
    import steplog

    snap = {"runs": None, "metrics": {}, "points": {}, "buckets": {}, "tensors": {}, "tensor_buckets": {},
            "errors": []}

    def err(where, exc):
        snap["errors"].append(f"{where}: {C.classify_exception(exc)[1]}")

    store = steplog.open(store_path)
    try:
        try:
            snap["runs"] = {row["id"]: row for row in store.runs().to_pylist()}
        except Exception as exc:   # noqa: BLE001
            err("runs", exc)
        for run_id in snap["runs"] or {}:
            try:
                rows = store.metrics(run_id).to_pylist()
            except Exception as exc:   # noqa: BLE001
                err(f"metrics {run_id}", exc)
                continue
            snap["metrics"][run_id] = rows
            for row in rows:
                context = json.loads(row["context"]) if row["context"] else None
                key = (run_id, row["metric"], row["context"] or "")
                try:
                    if row["kind"] == "scalar":
                        t = store.read(run_id, row["metric"], context=context)
                        snap["points"][key] = (t.column("step").to_numpy(), t.column("time_ns").to_numpy(),
                                               t.column("value").to_numpy())
                        snap["buckets"][key] = store.read(run_id, row["metric"], context=context,
                                                          buckets=50).to_pylist()
                    else:
                        t = store.read_tensor(run_id, row["metric"], context=context)
                        snap["tensors"][key] = (t.column("time_ns").to_numpy(),
                                                t.select([c for c in t.column_names if c not in ("time", "time_ns")]).to_pylist())
                        snap["tensor_buckets"][key] = store.read_tensor(run_id, row["metric"], context=context,
                                                                        buckets=2).to_pylist()
                except Exception as exc:   # noqa: BLE001
                    err(f"read {key}", exc)
    finally:
        store.close()
    with open(result + ".tmp", "wb") as f:
        pickle.dump(snap, f)
    os.replace(result + ".tmp", result)


# -- expectations and comparisons -------------------------------------------------------------------

def expected_content(out: str, seed: int, points: int) -> dict:
    """run id -> {fields, series: {(metric, context): (steps, times, values)}, tensors: {...}}."""
    runs = {}
    for w in range(WORKERS):
        with open(os.path.join(out, f"ids-{w}.json")) as f:
            ids = json.load(f)
        with open(os.path.join(out, f"ids-{w}-child.json")) as f:
            ids["child"] = json.load(f)["child"]
        resumer = (w - 1) % WORKERS
        owner_of_parent = (w + 1) % WORKERS
        for which, run_id in ids.items():
            experiment, params, tags = run_params(w, which)
            if which == "a":
                status, parent = RESUME_STATUS[resumer % 3], None
                calls = scalar_plan(seed, w, "a", 1, points) + scalar_plan(seed, w, "a", 2, points)
                tensors = tensor_plan(seed, w, "a", 1) + tensor_plan(seed, w, "a", 2)
            elif which == "b":
                status, parent = B_STATUS[w % 4] or "crashed", None
                calls, tensors = scalar_plan(seed, w, "b", 1, points), tensor_plan(seed, w, "b", 1)
            else:
                with open(os.path.join(out, f"ids-{owner_of_parent}.json")) as f:
                    parent = json.load(f)["a"]
                status, calls, tensors = "finished", scalar_plan(seed, w, "child", 2, points), []
            series = collections.defaultdict(list)
            for call in calls:
                series[(call["name"], C.canonical_context(call["context"]) or "")].append(call)
            merged = {}
            for key, parts in series.items():
                steps = np.concatenate([p["steps"] for p in parts])
                order = np.argsort(steps, kind="stable")
                merged[key] = (steps[order], np.concatenate([p["times"] for p in parts])[order],
                               np.concatenate([p["values"] for p in parts])[order])
            tensor_series = collections.defaultdict(list)
            for t in tensors:
                tensor_series[(t["name"], "")].append(t)
            runs[run_id] = {"experiment": experiment, "name": f"w{w}-{which}", "parent": parent, "status": status,
                            "params": params, "tags": tags, "series": merged, "tensors": dict(tensor_series)}
    return runs


class Tally:
    def __init__(self):
        self.counts = collections.Counter()
        self.examples = collections.defaultdict(list)

    def add(self, what: str, n: int = 1, example: str | None = None) -> None:
        if n:
            self.counts[what] += n
            if example and len(self.examples[what]) < 3:
                self.examples[what].append(C.short(example, 240))


def compare_to_expected(snap: dict, expected: dict) -> Tally:
    tally = Tally()
    tally.add("read_errors", len(snap["errors"]), snap["errors"][0] if snap["errors"] else None)
    runs = snap["runs"] or {}
    for run_id, exp in expected.items():
        row = runs.get(run_id)
        if row is None:
            tally.add("runs_missing", 1, exp["name"])
            tally.add("series_missing", len(exp["series"]) + len(exp["tensors"]))
            tally.add("points_missing", sum(len(s[0]) for s in exp["series"].values()))
            tally.add("summaries_missing", sum(len(t) for t in exp["tensors"].values()))
            continue
        for field in ("experiment", "name", "parent", "status"):
            if row.get(field) != exp[field]:
                tally.add(f"run_{field}_differs", 1, f"{exp['name']}: {row.get(field)!r}, expected {exp[field]!r}")
        if (row.get("end_time") is None) != (exp["status"] == "crashed"):
            tally.add("run_end_time_differs", 1, f"{exp['name']}: end_time {row.get('end_time')!r}")
        for kind in ("params", "tags"):
            for key, value in C.flatten(exp[kind], f"{kind}.").items():
                if key not in row or row[key] != value or type(row[key]) is not type(value):
                    tally.add(f"run_{kind}_differ", 1, f"{exp['name']}: {key} = {row.get(key)!r}, expected {value!r}")
        listed = {(m["metric"], m["context"] or ""): m for m in snap["metrics"].get(run_id, [])}
        for key, (steps, times, values) in exp["series"].items():
            meta = listed.get(key)
            got = snap["points"].get((run_id,) + key)
            if meta is None or got is None:
                tally.add("series_missing", 1, f"{exp['name']} {key}")
                tally.add("points_missing", len(steps))
                continue
            if (meta["kind"], meta["count"], meta["step_min"], meta["step_max"]) != \
                    ("scalar", len(steps), int(steps.min()), int(steps.max())):
                tally.add("series_info_differs", 1, f"{exp['name']} {key}: {meta}")
            g_steps, g_times, g_values = got
            if len(g_steps) != len(steps) or not np.array_equal(g_steps, steps):
                pos = np.searchsorted(g_steps, steps)
                ok = pos < len(g_steps)
                ok[ok] = g_steps[pos[ok]] == steps[ok]
                tally.add("points_missing", int((~ok).sum()), f"{exp['name']} {key}: {int((~ok).sum())} missing")
                tally.add("points_extra", max(0, len(g_steps) - int(ok.sum())))
                continue
            bad = (g_values.view(np.uint64) != values.view(np.uint64)) | (g_times != times)
            tally.add("points_wrong", int(bad.sum()), f"{exp['name']} {key}: {int(bad.sum())} differ")
        for key, items in exp["tensors"].items():
            got = snap["tensors"].get((run_id,) + key)
            if got is None:
                tally.add("tensor_series_missing", 1, f"{exp['name']} {key}")
                tally.add("summaries_missing", len(items))
                continue
            rows = got[1]
            want = sorted(items, key=lambda t: t["step"])
            if [r["step"] for r in rows] != [t["step"] for t in want]:
                tally.add("summaries_missing", max(0, len(want) - len(rows)), f"{exp['name']} {key}: {len(rows)} rows")
                continue
            for r, t in zip(rows, want):
                a = t["array"].astype(np.float64)
                if r["count"] != a.size or r["min"] != a.min() or r["max"] != a.max():
                    tally.add("summaries_wrong", 1, f"{exp['name']} {key} step {t['step']}")
        extra = set(listed) - set(exp["series"]) - set(exp["tensors"])
        tally.add("series_extra", len(extra), f"{exp['name']}: {sorted(extra)[:3]}")
    tally.add("runs_extra", len(set(runs) - set(expected)))
    return tally


def _same(a, b) -> bool:
    """Equality that takes NaN as equal to NaN (nested lists and dicts too)."""
    if isinstance(a, float) and isinstance(b, float):
        return (a != a and b != b) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def compare_snapshots(after: dict, before: dict) -> Tally:
    """Everything the first snapshot answered, answered again the same, bit for bit."""
    tally = Tally()
    b_runs, a_runs = before["runs"] or {}, after["runs"] or {}
    for run_id, row in b_runs.items():
        other = a_runs.get(run_id)
        if other is None:
            tally.add("runs_missing", 1, row["name"])
            continue
        for field in sorted(set(row) | set(other)):
            if not _same(row.get(field), other.get(field)):
                group = field.split(".")[0] if "." in field else field
                tally.add(f"run_{group}_differs", 1, f"{row['name']}: {field} {other.get(field)!r}, was {row.get(field)!r}")
    for run_id, rows in before["metrics"].items():
        if run_id in a_runs and not _same(sorted(map(str, rows)), sorted(map(str, after["metrics"].get(run_id, [])))):
            tally.add("metrics_tables_differ", 1, b_runs[run_id]["name"])
    for key, (steps, times, values) in before["points"].items():
        got = after["points"].get(key)
        if got is None:
            tally.add("series_missing", 1, str(key))
        elif not (C.same_bits(got[0], steps) and C.same_bits(got[1], times) and C.same_bits(got[2], values)):
            tally.add("series_points_differ", 1, f"{key}: {len(got[0])} points, was {len(steps)}")
    for name in ("buckets", "tensor_buckets"):
        for key, rows in before[name].items():
            if key in after[name] and not _same(after[name][key], rows):
                tally.add(f"{name}_differ", 1, str(key))
    for key, (times, rows) in before["tensors"].items():
        got = after["tensors"].get(key)
        if got is None:
            tally.add("tensor_series_missing", 1, str(key))
        elif not (C.same_bits(got[0], times) and _same(got[1], rows)):
            tally.add("tensor_summaries_differ", 1, f"{key}: {len(got[1])} rows, was {len(rows)}")
    return tally


def print_tally(title: str, tally: Tally) -> None:
    print(f"{title}: " + (", ".join(f"{k}={v}" for k, v in sorted(tally.counts.items())) or "no differences"))
    for what, texts in sorted(tally.examples.items()):
        for text in texts:
            print(f"    {what}: {text}")


# -- one trial ------------------------------------------------------------------------------------

def take_snapshot(store: str, path: str, args) -> tuple[C.Outcome, dict | None]:
    outcome = C.run_child(C.self_argv(__file__, "snapshot", store=store, result=path, mem=args.mem_mb), args.timeout)
    try:
        with open(path, "rb") as f:
            return outcome, pickle.load(f)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return outcome, None


def trial(k: int, args, out: str) -> dict:
    seed = args.seed + k
    tdir = os.path.join(out, f"trial-{k:03d}")
    store = os.path.join(tdir, "store")
    os.makedirs(tdir)
    for phase in (1, 2):
        procs = [C.run_child_async(C.self_argv(__file__, "worker", store=store, dir=tdir, w=w, phase=phase,
                                               seed=seed, points=args.points)) for w in range(WORKERS)]
        outcomes = [C.wait_child(p, args.timeout) for p in procs]
        bad = [(w, o) for w, o in enumerate(outcomes) if o.kind != "exit" or o.rc != 0]
        if bad:
            w, o = bad[0]
            print(f"trial {k}: phase {phase} worker {w} {o.label}: {C.short(C.crash_text(o.stderr), 400)}")
            return {"trial": k, "written": False}
    expected = expected_content(tdir, seed, args.points)
    n_points = sum(len(s[0]) for r in expected.values() for s in r["series"].values())
    n_summaries = sum(len(t) for r in expected.values() for t in r["tensors"].values())
    print(f"trial {k}: {len(expected)} runs, "
          f"{sum(len(r['series']) for r in expected.values())} scalar series ({n_points} points), "
          f"{sum(len(r['tensors']) for r in expected.values())} tensor series ({n_summaries} summaries), "
          f"{len(os.listdir(os.path.join(store, 'segments')))} segment files")
    o1, before = take_snapshot(store, os.path.join(tdir, "before.pickle"), args)
    if before is None:
        print(f"trial {k}: snapshot of the intact store failed ({o1.label}): {C.short(C.crash_text(o1.stderr), 300)}")
        return {"trial": k, "written": False}
    sanity = compare_to_expected(before, expected)
    print_tally(f"trial {k}: intact store vs logged data", sanity)
    shutil.rmtree(os.path.join(store, "index"))
    result = {"trial": k, "written": True, "sanity": sanity.counts}
    if args.repair:
        rep = C.steplog_cli(["repair", store], args.timeout)
        result["repair"] = rep.label
        print(f"trial {k}: repair {rep.label} in {rep.wall:.1f} s: {C.short(C.tail_lines(rep.stdout + rep.stderr, 3), 300)}")
    else:
        result["repair"] = "missing"
        print(f"trial {k}: note: `python -m steplog repair` is not available; comparing the store without its index")
    o2, after = take_snapshot(store, os.path.join(tdir, "after.pickle"), args)
    if after is None:
        print(f"trial {k}: snapshot after repair failed ({o2.label}): {C.short(C.crash_text(o2.stderr), 300)}")
        result["after"] = o2.label
        return result
    vs_logged, vs_before = compare_to_expected(after, expected), compare_snapshots(after, before)
    print_tally(f"trial {k}: after repair vs logged data", vs_logged)
    print_tally(f"trial {k}: after repair vs intact snapshot", vs_before)
    verify = C.run_verify(store, args.timeout)
    print(f"trial {k}: verify after repair: {verify.verdict}, {len(verify.damaged)} DAMAGED lines")
    result.update(after="ok", vs_logged=vs_logged.counts, vs_before=vs_before.counts, verify=verify.verdict,
                  runs=len(expected), points=n_points, summaries=n_summaries)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--out", default=None, help="directory for the stores and logs (default: a temporary one)")
    parser.add_argument("--points", type=int, default=4000, help="points of run a's loss in each phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a child may run")
    parser.add_argument("--mem-mb", type=int, default=4096, help="data-segment cap of the snapshot child (0: none)")
    parser.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    for name in ("store", "dir", "w", "phase", "seed", "points", "result", "mem"):
        parser.add_argument(f"--_{name}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._role == "worker":
        worker(args._store, args._dir, int(args._w), int(args._phase), int(args._seed), int(args._points))
        return 0
    if args._role == "snapshot":
        snapshot(args._store, args._result, int(args._mem))
        return 0

    out = C.make_out_dir(args.out, "repair_check")
    args.repair = C.has_repair()
    t0 = time.monotonic()
    results = [trial(k, args, out) for k in range(args.trials)]
    done = [r for r in results if r["written"] and r.get("after") == "ok"]
    total_logged, total_before, sanity = collections.Counter(), collections.Counter(), collections.Counter()
    for r in done:
        total_logged.update(r["vs_logged"])
        total_before.update(r["vs_before"])
    for r in results:
        sanity.update(r.get("sanity", {}))
    repair = "missing" if not args.repair else ",".join(sorted({r.get("repair", "?").replace(" ", "") for r in results}))
    print(f"stores and logs: {out}")

    def get(counter, *names):
        return sum(counter[n] for n in names)

    print(f"repair_check: trials={len(results)} compared={len(done)} repair={repair} "
          f"runs={sum(r['runs'] for r in done)} points={sum(r['points'] for r in done)} "
          f"summaries={sum(r['summaries'] for r in done)} "
          f"runs_missing={total_logged['runs_missing']} "
          f"run_fields_differ={sum(v for k, v in total_logged.items() if k.startswith('run_') and k != 'runs_missing')} "
          f"series_missing={get(total_logged, 'series_missing', 'tensor_series_missing')} "
          f"points_missing={total_logged['points_missing']} points_wrong={total_logged['points_wrong']} "
          f"summaries_missing={total_logged['summaries_missing']} summaries_wrong={total_logged['summaries_wrong']} "
          f"differ_from_intact={sum(total_before.values())} read_errors={total_logged['read_errors']} "
          f"intact_store_mismatches={sum(sanity.values())} seconds={time.monotonic() - t0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
