"""Damage the index (index/data.mdb) of a known store and see what reads do.

    python benchmarks/campaign/index_damage.py [--trials N] [--out DIR] [--jobs J] [--seed S]

A pristine store is built once (in a child process): six runs with params and tags,
scalar series written in 64-point blocks over several flushes (contexts, repeated and
out-of-order steps, NaN/inf/-0.0), tensor summaries (derived and fixed edges). The
expected answer of every query is computed with numpy from the data as logged (the
generator is deterministic), never from steplog.

Each trial copies the store, damages index/data.mdb in one way (cycling through: one
byte flipped, 2..64 random bytes written, file cut to a random length, one 4096-byte
page zeroed), runs the query set in a child process with a time limit, and classifies
the trial by its worst outcome:

    ok        every answer right
    typed     a steplog.StepLogError (CorruptionError, ...) raised, nothing wrong returned
    wrong     an answer came back without an error and it is WRONG
    untyped   an exception that is not a StepLogError
    crash     killed by a signal (SIGBUS, SIGSEGV, SIGABRT, ...)
    hang      still running at the time limit
    exit      exited early without a signal and without finishing the query set

``python -m steplog verify`` runs on a second copy of the damaged store; trials where
it reported nothing (exit 0, or no damage beyond what it reports on the pristine store)
while the reads were wrong, crashed or hung are counted. When ``python -m steplog
repair`` exists, a third copy is repaired and the queries run again on it.

Prints a table of counts, examples of every bad class, and a final summary line.
Exit status 0: the script measures, it does not judge.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import faulthandler
import json
import os
import shutil
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _campaign as C  # noqa: E402

CLASSES = ("ok", "typed", "wrong", "untyped", "crash", "hang", "exit")
BAD = ("wrong", "untyped", "crash", "hang", "exit")
SEVERITY = ("crash", "hang", "wrong", "untyped", "exit", "typed", "ok")   # first that applies wins
DAMAGE_KINDS = ("flip", "overwrite", "truncate", "zero_page")
PAGE = 4096
BLOCK_POINTS = 64
T0 = 1_700_000_000_000_000_000
N_RUNS = 6
END_STATUS = ("finished", "failed", "killed", "finished", "finished", None)   # None: never ended (crashed)


# -- the data set --------------------------------------------------------------------------

def make_dataset(seed: int) -> list[dict]:
    """Everything that is logged, deterministic in ``seed``."""
    runs = []
    for i in range(N_RUNS):
        rng = np.random.default_rng([seed, i])
        series = []

        def scalar(name, context, steps, salt, chunks):
            steps = np.asarray(steps, np.int64)
            values = C.det_values(seed, i, salt, np.arange(len(steps)))
            series.append({"name": name, "context": context, "steps": steps, "values": values,
                           "times": T0 + i * 10**12 + np.arange(len(steps), dtype=np.int64) * 1_000_000,
                           "chunks": chunks})
            return values

        n_loss = 3000 + 137 * i
        scalar("loss", None, np.arange(n_loss), 1, 5)
        scalar("acc", {"split": "val"}, np.arange(0, 5000, 10), 2, 2)
        scalar("acc", {"split": "train"}, np.arange(1000), 3, 3)
        scalar("noisy", None, rng.integers(-500, 1500, 1200), 4, 3)
        special = scalar("special", None, np.arange(200), 5, 1)
        special[::17] = np.nan
        special[3::23] = np.inf
        special[5::29] = -np.inf
        special[7::31] = -0.0
        special[11::37] = 0.0
        special[13] = np.array([0x7FF8000000000123], np.uint64).view(np.float64)[0]   # a NaN payload
        tensors = []
        grads = []
        for j, step in enumerate(range(0, 60, 5)):
            t = (np.random.default_rng([seed, i, 1, j]).standard_normal((32, 32)) * (1 + step / 10)).astype(np.float32)
            t[0, :j] = 0.0
            grads.append((step, t))
        tensors.append({"name": "grad/fc1", "items": grads, "bins": 32, "edges": None})
        weights = [(step, np.random.default_rng([seed, i, 2, step]).standard_normal(64) * 1.5)
                   for step in range(0, 8)]
        tensors.append({"name": "w", "items": weights, "bins": 16, "edges": np.linspace(-4.0, 4.0, 17)})
        runs.append({
            "name": f"r{i}", "experiment": "exp-a" if i < 3 else "exp-b",
            "params": {"lr": 10.0 ** -(i + 1), "depth": 10 + i, "opt": "adam" if i % 2 else "sgd",
                       "flag": bool(i % 2), "sched": {"warmup": 100 * i, "gamma": 0.5 + i / 10}},
            "tags": {"team": "a" if i < 3 else "b", "seed": str(seed + i)},
            "status": END_STATUS[i], "series": series, "tensors": tensors,
        })
    return runs


def build(store_path: str, seed: int, manifest_path: str) -> None:
    """Child role: write the pristine store, then exit (run r5 is left running: crashed)."""
    import steplog

    data = make_dataset(seed)
    ids = {}
    store = steplog.open(store_path, block_points=BLOCK_POINTS)
    for run_data in data:
        run = store.start_run(experiment=run_data["experiment"], name=run_data["name"],
                              params=run_data["params"], tags=run_data["tags"])
        ids[run_data["name"]] = run.id
        for s in run_data["series"]:
            bounds = np.linspace(0, len(s["steps"]), s["chunks"] + 1).astype(int)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                run.log_batch(s["name"], s["steps"][lo:hi], s["values"][lo:hi], times=s["times"][lo:hi],
                              context=s["context"])
                run.flush()
        for t in run_data["tensors"]:
            for step, array in t["items"]:
                run.log_tensor(t["name"], array, step=step, bins=t["bins"], edges=t["edges"])
            run.flush()
        if run_data["status"] is not None:
            run.end(run_data["status"])
    store.close()
    C.write_json_atomic(manifest_path, {"seed": seed, "ids": ids})


# -- the query set ---------------------------------------------------------------------------

class Wrong(Exception):
    """An answer that differs from the expected one."""


def col(table, name) -> np.ndarray:
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.to_numpy()


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Wrong(what)


def same_float(a, b) -> bool:
    a, b = float(a), float(b)
    return (np.isnan(a) and np.isnan(b)) or a == b


def check_points(table, s, start=None, stop=None) -> None:
    steps, values, times = s["steps"], s["values"], s["times"]
    keep = np.ones(len(steps), bool)
    if start is not None:
        keep &= steps >= start
    if stop is not None:
        keep &= steps < stop
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(steps[idx], kind="stable")]
    expect(table.num_rows == len(order), f"{table.num_rows} points, expected {len(order)}")
    got_steps = col(table, "step")
    if not np.array_equal(got_steps, steps[order]):
        raise Wrong(f"steps differ at row {int(np.flatnonzero(got_steps != steps[order])[0])}")
    expect(C.same_bits(col(table, "value"), values[order]), "values differ (bits)")
    expect(np.array_equal(col(table, "time_ns"), times[order]), "times differ")


def check_buckets(table, steps, values, n, start=None, stop=None) -> None:
    lo = int(steps.min()) if start is None else start
    hi = int(steps.max()) + 1 if stop is None else stop
    sel = (steps >= lo) & (steps < hi)
    expect(table.num_rows <= n, f"{table.num_rows} buckets for buckets={n}")
    counts = col(table, "count")
    expect(int(counts.sum()) == int(sel.sum()), f"bucket counts sum to {int(counts.sum())}, expected {int(sel.sum())}")
    s0s, s1s = col(table, "step_start"), col(table, "step_end")
    for k in range(table.num_rows):
        m = sel & (steps >= s0s[k]) & (steps < s1s[k])
        where = f"bucket [{s0s[k]}, {s1s[k]})"
        expect(int(m.sum()) == int(counts[k]) and counts[k] > 0, f"{where}: count {counts[k]}, expected {int(m.sum())}")
        v = values[m]
        finite_or_inf = v[~np.isnan(v)]
        expect(int(col(table, "nan_count")[k]) == int(np.isnan(v).sum()), f"{where}: nan_count")
        if len(finite_or_inf):
            expect(same_float(col(table, "min")[k], finite_or_inf.min()), f"{where}: min")
            expect(same_float(col(table, "max")[k], finite_or_inf.max()), f"{where}: max")
            mean = finite_or_inf.sum() / len(finite_or_inf)
            expect(bool(np.isclose(col(table, "mean")[k], mean, rtol=1e-9, atol=1e-12)), f"{where}: mean")
        ids = np.flatnonzero(m)
        smin, smax = steps[ids].min(), steps[ids].max()
        first = ids[steps[ids] == smin][0]
        last = ids[steps[ids] == smax][-1]
        expect(int(col(table, "first_step")[k]) == smin and same_float(col(table, "first")[k], values[first]),
               f"{where}: first")
        expect(int(col(table, "last_step")[k]) == smax and same_float(col(table, "last")[k], values[last]),
               f"{where}: last")


def check_lttb(table, s, n) -> None:
    steps, values = s["steps"], s["values"]
    expect(2 <= table.num_rows <= n, f"lttb returned {table.num_rows} points for {n}")
    got_steps, got_values = col(table, "step"), col(table, "value")
    expect(bool(np.all(np.diff(got_steps) >= 0)), "lttb points not sorted by step")
    pos = np.searchsorted(steps, got_steps)   # "loss": steps 0..n-1, sorted and unique
    expect(bool(np.all(pos < len(steps))) and np.array_equal(steps[np.minimum(pos, len(steps) - 1)], got_steps),
           "lttb returned a step that was never logged")
    expect(C.same_bits(values[pos], got_values), "lttb returned a value that is not the one at its step")
    expect(got_steps[0] == steps.min() and got_steps[-1] == steps.max(), "lttb lost the first or last point")


def expected_summary(array, bins, edges) -> tuple[dict, np.ndarray, np.ndarray]:
    a = np.asarray(array).ravel()
    finite = a[np.isfinite(a)].astype(np.float64)
    stats = {"count": a.size, "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum()),
             "min": finite.min(), "max": finite.max(), "mean": finite.mean(), "std": finite.std(),
             "l2": float(np.sqrt(np.sum(finite * finite))), "zero_fraction": float(np.mean(finite == 0))}
    for q in (1, 5, 25, 50, 75, 95, 99):
        stats[f"q{q:02d}"] = float(np.quantile(finite, q / 100, method="linear"))
    counts, hist_edges = np.histogram(finite, bins=edges if edges is not None else bins)
    return stats, counts, hist_edges


def check_tensor(table, t) -> None:
    items = sorted(t["items"], key=lambda item: item[0])
    expect(table.num_rows == len(items), f"{table.num_rows} summaries, expected {len(items)}")
    expect(list(col(table, "step")) == [step for step, _ in items], "summary steps differ")
    rows = table.select([c for c in table.column_names if c not in ("time", "time_ns")]).to_pylist()
    for row, (step, array) in zip(rows, items):
        stats, counts, edges = expected_summary(array, t["bins"], t["edges"])
        where = f"step {step}"
        for name in ("count", "nan_count", "inf_count", "min", "max", "zero_fraction"):
            expect(same_float(row[name], stats[name]), f"{where}: {name} {row[name]} != {stats[name]}")
        for name in ("mean", "std", "l2"):
            expect(bool(np.isclose(row[name], stats[name], rtol=1e-9, atol=1e-12)), f"{where}: {name}")
        tol = (stats["max"] - stats["min"]) / 2048 * 1.001 + 1e-12
        for q in (1, 5, 25, 50, 75, 95, 99):
            name = f"q{q:02d}"
            expect(abs(row[name] - stats[name]) <= tol, f"{where}: {name} {row[name]} vs {stats[name]}")
        expect(row["hist_counts"] == counts.tolist(), f"{where}: hist_counts")
        expect(bool(np.allclose(row["hist_edges"], edges, rtol=1e-14, atol=0)), f"{where}: hist_edges")


def check_tensor_buckets(table, t) -> None:
    arrays = [a for _, a in t["items"]]
    expect(int(col(table, "rows").sum()) == len(arrays), "merged summaries: rows do not add up")
    expect(int(col(table, "count").sum()) == sum(a.size for a in arrays), "merged summaries: counts do not add up")
    expect(same_float(col(table, "min").min(), min(float(a.min()) for a in arrays)), "merged summaries: min")
    expect(same_float(col(table, "max").max(), max(float(a.max()) for a in arrays)), "merged summaries: max")


def queries(store, manifest: dict, data: list[dict]):
    """(name, callable) for every query; each callable raises Wrong on a wrong answer."""
    ids = manifest["ids"]
    by_name = {r["name"]: r for r in data}

    def runs_query():
        rows = {row["id"]: row for row in store.runs().to_pylist()}
        expect(set(rows) == set(ids.values()), f"runs table holds {len(rows)} runs, expected {len(ids)}"
               + ("" if set(rows) <= set(ids.values()) else " (some unknown)"))
        for name, rid in ids.items():
            row, r = rows[rid], by_name[name]
            expect(row["name"] == name and row["experiment"] == r["experiment"], f"run {name}: name or experiment")
            expect(row["status"] == (r["status"] or "crashed"), f"run {name}: status {row['status']!r}")
            expect((row["end_time"] is None) == (r["status"] is None), f"run {name}: end_time")
            expect(row["parent"] is None, f"run {name}: parent")
            for key, value in {**C.flatten(r["params"], "params."), **C.flatten(r["tags"], "tags.")}.items():
                expect(key in row and row[key] == value and type(row[key]) is type(value),
                       f"run {name}: {key} = {row.get(key)!r}, expected {value!r}")

    def metrics_query(name):
        r = by_name[name]
        got = sorted((row["metric"], row["context"] or "", row["kind"], row["count"], row["step_min"], row["step_max"])
                     for row in store.metrics(ids[name]).to_pylist())
        want = sorted([(s["name"], C.canonical_context(s["context"]) or "", "scalar", len(s["steps"]),
                        int(s["steps"].min()), int(s["steps"].max())) for s in r["series"]]
                      + [(t["name"], "", "tensor", len(t["items"]), min(st for st, _ in t["items"]),
                          max(st for st, _ in t["items"])) for t in r["tensors"]])
        expect(got == want, "series list differs: " + C.short(set(got) ^ set(want), 200))

    def series_of(name, metric, context=None):
        return next(s for s in by_name[name]["series"] if s["name"] == metric and s["context"] == context)

    def read_full(name, s):
        check_points(store.read(ids[name], s["name"], context=s["context"]), s)

    def read_range(name):
        s = series_of(name, "loss")
        n = len(s["steps"])
        check_points(store.read(ids[name], "loss", start=n // 3, stop=2 * n // 3), s, n // 3, 2 * n // 3)

    def buckets(name, metric, n, start=None, stop=None):
        s = series_of(name, metric)
        table = store.read(ids[name], metric, start=start, stop=stop, buckets=n)
        check_buckets(table, s["steps"], s["values"], n, start, stop)

    def lttb(name):
        check_lttb(store.read(ids[name], "loss", buckets=100, method="lttb"), series_of(name, "loss"), 100)

    def time_buckets(name):
        table = store.read(ids[name], "acc", context={"split": "val"}, buckets=20, x="time")
        n = len(series_of(name, "acc", {"split": "val"})["steps"])
        expect(table.num_rows <= 20 and int(col(table, "count").sum()) == n, "time buckets: counts do not add up")

    def read_many_acc():
        table = store.read_many(metrics=["acc"], experiment="exp-b", buckets=20)
        want = {}
        for r in data:
            if r["experiment"] == "exp-b":
                for s in r["series"]:
                    if s["name"] == "acc":
                        want[(ids[r["name"]], C.canonical_context(s["context"]))] = s
        keys = list(zip(col(table, "run_id"), [c for c in table.column("context").to_pylist()]))
        expect(set(keys) == set(want), f"read_many: {len(set(keys))} series, expected {len(want)}")
        counts, mins, maxs = col(table, "count"), col(table, "min"), col(table, "max")
        for key, s in want.items():
            m = np.array([k == key for k in keys])
            expect(int(counts[m].sum()) == len(s["steps"]), f"read_many {key}: count")
            expect(same_float(mins[m].min(), s["values"].min()) and same_float(maxs[m].max(), s["values"].max()),
                   f"read_many {key}: min/max")

    def read_many_raw():
        names = ["r0", "r3"]
        table = store.read_many(runs=[ids[n] for n in names], metrics=["loss", "noisy"])
        run_col, metric_col = col(table, "run_id"), col(table, "metric")
        import pyarrow as pa

        for name in names:
            for metric in ("loss", "noisy"):
                m = (run_col == ids[name]) & (metric_col == metric)
                check_points(table.filter(pa.array(m)).select(["step", "time_ns", "value"]), series_of(name, metric))
        expect(table.num_rows == sum(len(series_of(n, m)["steps"]) for n in names for m in ("loss", "noisy")),
               "read_many returned points of other series")

    def tensor(name, t):
        check_tensor(store.read_tensor(ids[name], t["name"]), t)

    def tensor_buckets(name):
        t = by_name[name]["tensors"][0]
        check_tensor_buckets(store.read_tensor(ids[name], t["name"], buckets=3), t)

    yield "runs", runs_query
    for r in data:
        name = r["name"]
        yield f"metrics:{name}", lambda name=name: metrics_query(name)
        for s in r["series"]:
            label = s["name"] + ("" if s["context"] is None else "@" + C.canonical_context(s["context"]))
            yield f"read:{name}:{label}", lambda name=name, s=s: read_full(name, s)
        yield f"range:{name}", lambda name=name: read_range(name)
        yield f"buckets:{name}:loss", lambda name=name: buckets(name, "loss", 40)
        yield f"buckets:{name}:noisy", lambda name=name: buckets(name, "noisy", 25)
        yield f"buckets_range:{name}", lambda name=name: buckets(name, "loss", 30, 100, 2100)
        yield f"lttb:{name}", lambda name=name: lttb(name)
        yield f"time_buckets:{name}", lambda name=name: time_buckets(name)
        for t in r["tensors"]:
            yield f"tensor:{name}:{t['name']}", lambda name=name, t=t: tensor(name, t)
        yield f"tensor_buckets:{name}", lambda name=name: tensor_buckets(name)
    yield "read_many:acc", read_many_acc
    yield "read_many:raw", read_many_raw


def query_child(store_path: str, manifest_path: str, results: str, mem_mb: int) -> None:
    """Child role: run every query, one result line each, pushed out before the next."""
    C.limit_memory(mem_mb)
    faulthandler.enable()
    import steplog

    with open(manifest_path) as f:
        manifest = json.load(f)
    data = make_dataset(manifest["seed"])

    def record(q, fn):
        C.append_line(results, {"q": q, "r": "started"})
        try:
            out = fn()
        except Wrong as exc:
            C.append_line(results, {"q": q, "r": "wrong", "t": C.short(exc, 400)})
            return None
        except Exception as exc:   # noqa: BLE001 - every exception is what is measured
            kind, text = C.classify_exception(exc)
            C.append_line(results, {"q": q, "r": kind, "t": text})
            return None
        C.append_line(results, {"q": q, "r": "ok"})
        return out if out is not None else True

    store = record("open", lambda: steplog.open(store_path, block_points=BLOCK_POINTS))
    if store is not None:
        for q, fn in queries(store, manifest, data):
            record(q, fn)
        record("close", store.close)
    C.append_line(results, {"q": "__done__", "r": "ok"})


# -- trials ----------------------------------------------------------------------------------

def damage(path: str, kind: str, rng: np.random.Generator) -> str:
    """Damage the file at ``path`` in place; returns what was done."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if kind == "flip":
            offset, mask = int(rng.integers(0, size)), int(rng.integers(1, 256))
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ mask]))
            return f"flip byte {offset} (page {offset // PAGE}) ^0x{mask:02x}"
        if kind == "overwrite":
            length = int(rng.integers(2, 65))
            offset = int(rng.integers(0, max(1, size - length)))
            f.seek(offset)
            f.write(rng.integers(0, 256, length, dtype=np.uint8).tobytes())
            return f"overwrite {length} bytes at {offset} (page {offset // PAGE})"
        if kind == "truncate":
            length = int(rng.integers(0, size))
            f.truncate(length)
            return f"truncate to {length} of {size} bytes"
        page = int(rng.integers(0, max(1, size // PAGE)))
        f.seek(page * PAGE)
        f.write(bytes(PAGE))
        return f"zero page {page} of {size // PAGE}"


def copy_store(src: str, dst: str) -> None:
    """index/data.mdb and the segments; not lock.mdb (LMDB makes a fresh one)."""
    os.makedirs(os.path.join(dst, "index"))
    shutil.copy2(os.path.join(src, "index", "data.mdb"), os.path.join(dst, "index", "data.mdb"))
    shutil.copytree(os.path.join(src, "segments"), os.path.join(dst, "segments"))


def segment_sizes(store: str) -> dict:
    seg = os.path.join(store, "segments")
    return {name: os.path.getsize(os.path.join(seg, name)) for name in sorted(os.listdir(seg))}


def classify(outcome: C.Outcome, lines: list[dict]) -> dict:
    """The trial's class, and the first line of each result kind (for examples)."""
    done = bool(lines) and lines[-1]["q"] == "__done__"
    finished = [line for line in lines if line["r"] != "started"]
    started = [line["q"] for line in lines if line["r"] == "started"]
    last_started = started[-1] if started else "(before open)"
    found = {}
    for line in finished:
        found.setdefault(line["r"], line)
    kinds = set(found)
    if outcome.kind == "signal":
        kinds.add("crash")
    elif outcome.kind == "hang":
        kinds.add("hang")
    elif outcome.rc != 0 or not done:
        kinds.add("exit")
    cls = next(k for k in SEVERITY if k in kinds or k == "ok")
    detail = ""
    if cls in ("crash", "hang", "exit"):
        detail = f"{outcome.label} during {last_started}: " + C.short(C.crash_text(outcome.stderr), 400)
    elif cls in found:
        detail = f"{found[cls]['q']}: {found[cls].get('t', '')}"
    wrong_queries = [line["q"].split(":")[0] for line in finished if line["r"] == "wrong"]
    typed_names = [line["t"].split(":")[0] for line in finished if line["r"] == "typed"]
    untyped_names = [line["t"].split(":")[0] for line in finished if line["r"] == "untyped"]
    assertion = C.lmdb_assertion(outcome.stderr) if outcome.kind == "signal" else None
    return {"cls": cls, "detail": detail, "wrong_queries": wrong_queries, "typed": typed_names,
            "untyped": untyped_names, "n_wrong": len(wrong_queries), "signal": outcome.sig,
            "assertion": assertion}


def run_queries(script: str, store: str, manifest: str, results: str, timeout: float, mem_mb: int) -> dict:
    outcome = C.run_child(C.self_argv(script, "query", store=store, manifest=manifest, results=results, mem=mem_mb),
                          timeout)
    return classify(outcome, C.read_lines(results))


def trial(k: int, args, pristine: str, manifest: str, work: str, baseline_verify: C.VerifyResult) -> dict:
    rng = np.random.default_rng([args.seed, 7, k])
    kind = DAMAGE_KINDS[k % len(DAMAGE_KINDS)]
    tdir = os.path.join(work, f"trial-{k:05d}")
    reads, checked, repaired = (os.path.join(tdir, name) for name in ("reads", "verify", "repair"))
    copy_store(pristine, reads)
    what = damage(os.path.join(reads, "index", "data.mdb"), kind, rng)
    copy_store(reads, checked)
    if args.repair:
        copy_store(reads, repaired)
    before = segment_sizes(reads)
    result = run_queries(__file__, reads, manifest, os.path.join(tdir, "reads.jsonl"), args.timeout, args.mem_mb)
    result.update(trial=k, kind=kind, damage=what, segments_cut=int(segment_sizes(reads) != before))
    v = C.run_verify(checked, args.timeout)
    result.update(verify=C.verify_verdict(v, baseline_verify),
                  verify_text=C.short(v.traceback or (v.damaged[0] if v.damaged else C.tail_lines(v.outcome.stdout, 1)),
                                      200))
    if args.repair:
        r = C.steplog_cli(["repair", repaired], args.timeout)
        result["repair_run"] = r.label
        after = run_queries(__file__, repaired, manifest, os.path.join(tdir, "repaired.jsonl"), args.timeout,
                            args.mem_mb)
        result["after_repair"] = after["cls"]
        result["after_repair_detail"] = after["detail"]
    return result


# -- the campaign ----------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--out", default=None, help="directory for the stores and logs (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2, help="trials at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a child may run")
    parser.add_argument("--mem-mb", type=int, default=2048, help="data-segment cap of each reader child (0: none)")
    parser.add_argument("--keep", action="store_true", help="keep every trial's stores (default: bad examples only)")
    parser.add_argument("--only", default=None,
                        help="run only these trial numbers (their damage is the same as in a full run): 5,17,300-399")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="start no trial after this many seconds; report the trials done (0: no limit)")
    parser.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    for name in ("store", "manifest", "results", "mem", "seed_"):
        parser.add_argument(f"--_{name}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._role == "build":
        build(args._store, int(args._seed_), args._manifest)
        return 0
    if args._role == "query":
        query_child(args._store, args._manifest, args._results, int(args._mem))
        return 0

    out = C.make_out_dir(args.out, "index_damage")
    pristine, manifest = os.path.join(out, "pristine"), os.path.join(out, "manifest.json")
    work = os.path.join(out, "trials")
    os.makedirs(work)
    t0 = time.monotonic()
    built = C.run_child(C.self_argv(__file__, "build", store=pristine, manifest=manifest, seed_=args.seed), 600)
    if built.kind != "exit" or built.rc != 0 or not os.path.exists(manifest):
        print(f"building the pristine store failed ({built.label}): {C.tail_lines(built.stderr, 6)}")
        print("index_damage: trials=0 build=failed")
        return 0
    size = os.path.getsize(os.path.join(pristine, "index", "data.mdb"))
    print(f"pristine store: {out}/pristine, index/data.mdb {size} bytes ({size // PAGE} pages), "
          f"built in {built.wall:.1f} s")
    copy_store(pristine, pristine + "-check")
    base = run_queries(__file__, pristine + "-check", manifest, os.path.join(out, "baseline.jsonl"), args.timeout,
                       args.mem_mb)
    n_queries = sum(1 for line in C.read_lines(os.path.join(out, "baseline.jsonl")) if line["r"] == "ok")
    print(f"baseline (undamaged copy): {base['cls']}, {n_queries} queries answered right"
          + ("" if base["cls"] == "ok" else f" -- {base['detail']}"))
    base_verify = C.run_verify(pristine + "-check", args.timeout)
    print(f"baseline verify: {base_verify.verdict}, rc={base_verify.outcome.rc}, {len(base_verify.damaged)} damage "
          f"lines" + (f" (e.g. {C.short(base_verify.damaged[0], 160)})" if base_verify.damaged else ""))
    args.repair = C.has_repair()
    if not args.repair:
        print("note: `python -m steplog repair` is not available; the repair pass is skipped")

    results: list[dict] = []
    kept = collections.Counter()
    lock = threading.Lock()

    deadline = t0 + args.max_seconds if args.max_seconds > 0 else None

    def one(k):
        if deadline is not None and time.monotonic() > deadline:
            return
        r = trial(k, args, pristine, manifest, work, base_verify)
        tdir = os.path.join(work, f"trial-{k:05d}")
        with lock:
            results.append(r)
            keep = args.keep or (r["cls"] in BAD and kept[r["cls"]] < 5)
            if keep:
                kept[r["cls"]] += 1
            if len(results) % step == 0:
                counts = collections.Counter(x["cls"] for x in results)
                print(f"  {len(results)}/{args.trials} trials, {time.monotonic() - t0:.0f} s: "
                      + " ".join(f"{c}={counts[c]}" for c in CLASSES), flush=True)
        if not keep:
            shutil.rmtree(tdir, ignore_errors=True)

    numbers = list(range(args.trials)) if args.only is None else parse_numbers(args.only)
    args.trials = len(numbers)
    step = max(1, args.trials // 10)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(one, k) for k in numbers]:
            f.result()
    results.sort(key=lambda r: r["trial"])
    with open(os.path.join(out, "results.jsonl"), "w") as f:   # every trial's result, one line each
        for r in results:
            f.write(json.dumps(r) + "\n")
    if len(results) < args.trials:
        print(f"  stopped at --max-seconds {args.max_seconds:.0f}: {len(results)} of {args.trials} trials done")
    report(results, args, out, time.monotonic() - t0)
    return 0


def parse_numbers(text: str) -> list[int]:
    """"5,17,300-399" -> [5, 17, 300, ..., 399]."""
    numbers = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        numbers += list(range(int(lo), int(hi or lo) + 1))
    return sorted(set(numbers))


def report(results: list[dict], args, out: str, wall: float) -> None:
    counts = collections.Counter(r["cls"] for r in results)
    print()
    print(f"{'damage':<11}" + "".join(f"{c:>9}" for c in CLASSES) + f"{'total':>9}")
    for kind in DAMAGE_KINDS + ("all",):
        rows = [r for r in results if kind in ("all", r["kind"])]
        c = collections.Counter(r["cls"] for r in rows)
        print(f"{kind:<11}" + "".join(f"{c[k]:>9}" for k in CLASSES) + f"{len(rows):>9}")
    typed = collections.Counter(name for r in results for name in set(r["typed"]))
    untyped = collections.Counter(name for r in results for name in set(r["untyped"]))
    wrongq = collections.Counter(q for r in results for q in set(r["wrong_queries"]))
    crash = collections.Counter(r["detail"].split(" ")[0] for r in results if r["cls"] == "crash")
    lmdb_abort = [r for r in results if r["cls"] == "crash" and r.get("signal") == "SIGABRT" and r.get("assertion")]
    crash_other = [r for r in results if r["cls"] == "crash" and r not in lmdb_abort]
    assertions = collections.Counter((r["kind"], r["assertion"]) for r in lmdb_abort)
    print(f"\ntrials raising each typed error: {dict(typed)}")
    print(f"trials raising each untyped exception: {dict(untyped)}")
    print(f"trials with a wrong answer, by query: {dict(wrongq)}")
    print(f"crashes by signal: {dict(crash)}")
    print(f"crashes that are SIGABRT from an LMDB assertion: {len(lmdb_abort)}; other crashes: {len(crash_other)}")
    for (kind, text), n in sorted(assertions.items(), key=lambda item: -item[1]):
        print(f"  {n:>5}  [{kind}] {text}")
    for r in crash_other[:5]:
        print(f"  other crash: trial {r['trial']} [{r['damage']}]: {C.short(r['detail'], 300)}")
    print(f"trials where opening the store changed a segment file: {sum(r['segments_cut'] for r in results)}")
    for cls in BAD:
        examples = [r for r in results if r["cls"] == cls][:5]
        if examples:
            print(f"\nexamples: {cls}")
            for r in examples:
                print(f"  trial {r['trial']} [{r['damage']}]: {C.short(r['detail'], 400)}  (verify: {r['verify']})")

    verdicts = collections.Counter(r["verify"] for r in results)
    print(f"\nverify verdicts: {dict(verdicts)}")
    print("verify x reads:  " + "  ".join(
        f"{v}/{c}={n}" for (v, c), n in sorted(collections.Counter((r["verify"], r["cls"]) for r in results).items())))
    bad_reads = ("wrong", "crash", "hang", "exit", "untyped")
    clean_wrong = sum(r["verify"] == "clean" and r["cls"] == "wrong" for r in results)
    clean_crash = sum(r["verify"] == "clean" and r["cls"] in ("crash", "hang", "exit") for r in results)
    quiet_bad = sum(r["verify"] in ("clean", "as-pristine") and r["cls"] in bad_reads for r in results)
    print(f"verify exit 0 but reads wrong: {clean_wrong}; exit 0 but reads crashed/hung/exited: {clean_crash}; "
          f"nothing reported beyond the pristine store's own report but reads bad: {quiet_bad}")
    # reads went wrong, raised or crashed, and verify did not exit 1 with a report of its own
    verify_missed = [r for r in results if r["cls"] != "ok" and r["verify"] != "damage"]
    print(f"reads not ok but verify did not report damage (exit 1, beyond the pristine report): {len(verify_missed)}"
          + (" -- verify x reads of those: " + ", ".join(
              f"{v}/{c}={n}" for (v, c), n in sorted(collections.Counter((r["verify"], r["cls"])
                                                                        for r in verify_missed).items()))
             if verify_missed else ""))
    for r in verify_missed[:5]:
        print(f"  trial {r['trial']} [{r['damage']}]: reads {r['cls']} ({C.short(r['detail'], 200)}), "
              f"verify {r['verify']}: {r['verify_text']}")
    broken = [r for r in results if r["verify"] not in ("clean", "damage", "as-pristine")]
    for r in broken[:5]:
        print(f"  verify itself {r['verify']} on trial {r['trial']} [{r['damage']}]: {r['verify_text']}")
    summary_repair = "repair=missing"
    if args.repair:
        after = collections.Counter(r["after_repair"] for r in results)
        print(f"\nafter repair: {dict(after)}; repair command outcomes: "
              f"{dict(collections.Counter(r['repair_run'] for r in results))}")
        for r in [r for r in results if r["after_repair"] in BAD][:5]:
            print(f"  trial {r['trial']} [{r['damage']}]: {r['after_repair']} {C.short(r['after_repair_detail'], 300)}")
        summary_repair = "repaired_ok=%d repaired_bad=%d" % (after["ok"], sum(after[c] for c in BAD))
    print(f"\nstores and logs: {out}")
    print(f"index_damage: trials={len(results)} " + " ".join(f"{c}={counts[c]}" for c in CLASSES)
          + f" crash_lmdb_abort={len(lmdb_abort)} crash_other={len(crash_other)}"
          + f" verify_clean_but_wrong={clean_wrong} verify_clean_but_crashed={clean_crash}"
          + f" verify_quiet_but_bad={quiet_bad} verify_missed={len(verify_missed)} {summary_repair} seconds={wall:.0f}")


if __name__ == "__main__":
    sys.exit(main())
