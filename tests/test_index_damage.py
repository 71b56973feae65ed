"""Damaged index (index/data.mdb): every read answers exactly as on the pristine store or
raises a steplog.StepLogError; a damaged value is a CorruptionError naming its table and
key; nothing crashes the reading process; ``steplog verify`` exits 1 and lists the damage.

One pristine store is built once: three runs with params and tags, scalar series in
64-point blocks over several flushes (one with a context, one with repeated and
out-of-order steps, one long enough that 5 buckets come from rollups), and tensor
summaries (derived and fixed edges). Every case copies it and damages one structure with
raw lmdb in a separate process: one byte of one value turned over (its checksum left as
it was), an entry moved to a key with one byte changed, or the data file cut, zeroed in
one live page, or deleted. A fixed query set then runs in a child process (so that a
crash is observed, not fatal) and every answer is classified: right (checked with numpy
against what was logged, and equal to the pristine store's answer), a StepLogError, an
untyped exception, or wrong; the child's own death is a crash.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import traceback
from typing import NamedTuple

import numpy as np
import pytest

BLOCK_POINTS = 64
T0 = 1_700_000_000_000_000_000
CHILD_TIMEOUT = 90
UNTYPED = "untyped"


# -- what is logged (deterministic: the query child regenerates it) -------------------------

def dataset() -> list[dict]:
    runs = []
    specs = [  # name, experiment, status, scalar series (name, context, steps, chunks), tensors
        ("r0", "exp-a", "finished",
         [("loss", None, np.arange(6000), 4), ("acc", {"split": "val"}, np.arange(0, 2000, 10), 2)],
         [("grad", 16, None, range(0, 40, 5)), ("w", 8, np.linspace(-3.0, 3.0, 9), range(6))]),
        ("r1", "exp-a", "failed",
         [("loss", None, np.arange(300), 3),
          ("noisy", None, np.random.default_rng(5).integers(0, 150, 200), 2)],
         []),
        ("r2", "exp-b", "finished",
         [("loss", None, np.arange(400), 2)],
         [("grad", 16, None, range(0, 30, 3))]),
    ]
    for i, (name, experiment, status, scalars, tensors) in enumerate(specs):
        rng = np.random.default_rng([11, i])
        series = []
        for j, (metric, context, steps, chunks) in enumerate(scalars):
            steps = np.asarray(steps, np.int64)
            values = rng.normal(size=len(steps))
            if j == 0:
                values[::97] = np.nan
                values[5] = np.inf
                values[7::131] = -0.0
            times = T0 + (i * 10 + j) * 10**12 + np.arange(len(steps), dtype=np.int64) * 1_000_000
            series.append({"name": metric, "context": context, "steps": steps, "values": values, "times": times,
                           "chunks": chunks})
        summaries = []
        for metric, bins, edges, steps in tensors:
            items = []
            for k, step in enumerate(steps):
                array = np.random.default_rng([11, i, k]).standard_normal((16, 16)) * (1 + step / 10)
                array[0, :k] = 0.0
                items.append((step, array if edges is not None else array.astype(np.float32)))
            summaries.append({"name": metric, "bins": bins, "edges": edges, "items": items})
        runs.append({"name": name, "experiment": experiment, "status": status,
                     "params": {"lr": 10.0 ** -(i + 1), "depth": 2 + i, "opt": "adam" if i % 2 else "sgd",
                                "flag": bool(i % 2), "sched": {"warmup": 10 * i}},
                     "tags": {"team": "a" if i < 2 else "b", "seed": str(100 + i)},
                     "series": series, "tensors": summaries})
    return runs


def build(root: str) -> dict:
    """Write the pristine store; returns run name -> run id."""
    import steplog

    ids = {}
    with steplog.open(root, block_points=BLOCK_POINTS, flush_interval=None) as store:
        for r in dataset():
            run = store.start_run(experiment=r["experiment"], name=r["name"], params=r["params"], tags=r["tags"])
            ids[r["name"]] = run.id
            for s in r["series"]:
                bounds = np.linspace(0, len(s["steps"]), s["chunks"] + 1).astype(int)
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    run.log_batch(s["name"], s["steps"][lo:hi], s["values"][lo:hi], times=s["times"][lo:hi],
                                  context=s["context"])
                    run.flush()
            for t in r["tensors"]:
                for step, array in t["items"]:
                    run.log_tensor(t["name"], array, step=step, bins=t["bins"], edges=t["edges"])
                run.flush()
            run.end(r["status"])
        # a heartbeat its writer left behind (it died before dropping it), for the cases to damage
        from steplog.engine.index import Heartbeat

        store._index.write(lambda txn: txn.put_heartbeat(bytes.fromhex(ids["r2"]), Heartbeat.now()))
    return ids


# -- the query set and its numpy answers (run in the child) ---------------------------------

class Wrong(Exception):
    """An answer that differs from what was logged."""


def expect(cond, what: str) -> None:
    if not cond:
        raise Wrong(what)


def col(table, name) -> np.ndarray:
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.to_numpy()


def same_float(a, b) -> bool:
    a, b = float(a), float(b)
    return (np.isnan(a) and np.isnan(b)) or a == b


def same_bits(a, b) -> bool:
    a = np.ascontiguousarray(a, np.float64).view(np.uint64)
    b = np.ascontiguousarray(b, np.float64).view(np.uint64)
    return a.shape == b.shape and bool(np.all(a == b))


def flatten(mapping: dict, prefix: str) -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def canonical(context) -> str | None:
    return None if context is None else json.dumps(context, sort_keys=True, separators=(",", ":"))


def check_points(table, s) -> None:
    order = np.argsort(s["steps"], kind="stable")
    expect(table.num_rows == len(order), f"{table.num_rows} points, expected {len(order)}")
    expect(np.array_equal(col(table, "step"), s["steps"][order]), "steps differ")
    expect(same_bits(col(table, "value"), s["values"][order]), "values differ (bits)")
    expect(np.array_equal(col(table, "time_ns"), s["times"][order]), "times differ")


def check_buckets(table, s, n: int) -> None:
    check_bucket_rows(table, "step", s["steps"], s["steps"], s["values"], n)


def check_tensor(table, t) -> None:
    items = sorted(t["items"], key=lambda item: item[0])
    expect(table.num_rows == len(items), f"{table.num_rows} summaries, expected {len(items)}")
    expect(col(table, "step").tolist() == [step for step, _ in items], "summary steps differ")
    rows = table.select([c for c in table.column_names if c not in ("time", "time_ns")]).to_pylist()
    for row, (step, array) in zip(rows, items):
        a = np.asarray(array, np.float64).ravel()
        where = f"step {step}"
        expect(row["count"] == a.size and row["nan_count"] == 0 and row["inf_count"] == 0, f"{where}: counts")
        expect(same_float(row["min"], a.min()) and same_float(row["max"], a.max()), f"{where}: min/max")
        expect(same_float(row["zero_fraction"], np.mean(a == 0)), f"{where}: zero_fraction")
        for name, want in (("mean", a.mean()), ("std", a.std()), ("l2", np.sqrt(np.sum(a * a)))):
            expect(bool(np.isclose(row[name], want, rtol=1e-9, atol=1e-12)), f"{where}: {name}")
        tol = (a.max() - a.min()) / 2048 * 1.001 + 1e-12
        for q in (1, 5, 25, 50, 75, 95, 99):
            name = f"q{q:02d}"
            expect(abs(row[name] - np.quantile(a, q / 100)) <= tol, f"{where}: {name}")
        counts, edges = np.histogram(a, bins=t["edges"] if t["edges"] is not None else t["bins"])
        expect(row["hist_counts"] == counts.tolist(), f"{where}: hist_counts")
        expect(bool(np.allclose(row["hist_edges"], edges, rtol=1e-14, atol=0)), f"{where}: hist_edges")


def digest(table) -> str:
    """The whole answer, exactly (floats by their repr, which round-trips)."""
    import pyarrow as pa

    h = hashlib.sha256(str(table.schema).encode())
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        h.update(repr(column.to_pylist()).encode())
    return h.hexdigest()


def queries(store, ids: dict, data: list[dict]):
    """(name, callable) of every query; each returns its answer, checked (Wrong if not)."""
    import pyarrow as pa

    def runs_query():
        table = store.runs()
        rows = {row["id"]: row for row in table.to_pylist()}
        expect(set(rows) == set(ids.values()), f"{len(rows)} runs, expected {len(ids)}")
        for r in data:
            row = rows[ids[r["name"]]]
            expect(row["name"] == r["name"] and row["experiment"] == r["experiment"], f"{r['name']}: names")
            expect(row["status"] == r["status"] and row["end_time"] is not None, f"{r['name']}: status")
            expect(row["parent"] is None, f"{r['name']}: parent")
            for key, value in {**flatten(r["params"], "params."), **flatten(r["tags"], "tags.")}.items():
                expect(key in row and row[key] == value and type(row[key]) is type(value),
                       f"{r['name']}: {key} = {row.get(key)!r}, expected {value!r}")
        return table

    def metrics_query(r):
        table = store.metrics(ids[r["name"]])
        got = sorted((row["metric"], row["context"], row["kind"], row["count"], row["step_min"], row["step_max"])
                     for row in table.to_pylist())
        want = sorted([(s["name"], canonical(s["context"]), "scalar", len(s["steps"]), int(s["steps"].min()),
                        int(s["steps"].max())) for s in r["series"]]
                      + [(t["name"], None, "tensor", len(t["items"]), min(st for st, _ in t["items"]),
                          max(st for st, _ in t["items"])) for t in r["tensors"]])
        expect(got == want, f"series differ: {sorted(set(got) ^ set(want))}")
        return table

    def read_query(r, s):
        table = store.read(ids[r["name"]], s["name"], context=s["context"])
        check_points(table, s)
        return table

    def buckets_query(r, s):
        table = store.read(ids[r["name"]], s["name"], context=s["context"], buckets=5)
        check_buckets(table, s, 5)
        return table

    def tensor_query(r, t):
        table = store.read_tensor(ids[r["name"]], t["name"])
        check_tensor(table, t)
        return table

    def read_many_query():
        table = store.read_many()
        run_col, metric_col = col(table, "run_id"), col(table, "metric")
        contexts = table.column("context").to_pylist()
        total = 0
        for r in data:
            for s in r["series"]:
                m = (run_col == ids[r["name"]]) & (metric_col == s["name"]) \
                    & np.array([c == canonical(s["context"]) for c in contexts], bool)
                check_points(table.filter(pa.array(m)).select(["step", "time_ns", "value"]), s)
                total += len(s["steps"])
        expect(table.num_rows == total, f"read_many: {table.num_rows} rows, expected {total}")
        return table

    yield "runs", runs_query
    for r in data:
        yield f"metrics:{r['name']}", lambda r=r: metrics_query(r)
        for s in r["series"]:
            label = f"{r['name']}:{s['name']}" + ("" if s["context"] is None else "@" + canonical(s["context"]))
            yield f"read:{label}", lambda r=r, s=s: read_query(r, s)
            yield f"buckets:{label}", lambda r=r, s=s: buckets_query(r, s)
        for t in r["tensors"]:
            yield f"tensor:{r['name']}:{t['name']}", lambda r=r, t=t: tensor_query(r, t)
    yield "read_many", read_many_query


def query_child(root: str, manifest: str) -> None:
    """Run every query; one JSON line each on stdout, written out before the next."""
    faulthandler.enable()
    import steplog

    with open(manifest) as f:
        ids = json.load(f)

    def emit(**line):
        print(json.dumps(line), flush=True)

    def attempt(q, fn):
        try:
            answer = fn()
        except Wrong as exc:
            emit(q=q, r="wrong", t=str(exc))
        except steplog.StepLogError as exc:
            emit(q=q, r="typed", e=type(exc).__name__, t=str(exc))
        except Exception as exc:   # noqa: BLE001 - an untyped exception is what is looked for
            emit(q=q, r=UNTYPED, e=type(exc).__name__, t=str(exc), tb=traceback.format_exc(limit=6))
        else:
            emit(q=q, r="ok", d=digest(answer) if hasattr(answer, "schema") else None)
            return answer
        return None

    store = attempt("open", lambda: steplog.open(root, block_points=BLOCK_POINTS, flush_interval=None))
    if store is not None:
        for q, fn in queries(store, ids, dataset()):
            attempt(q, fn)
        attempt("close", store.close)
    emit(q="__done__", r="ok")


# -- the pristine store --------------------------------------------------------------------

class Answers(NamedTuple):
    rc: int
    lines: dict          # query -> its line
    done: bool
    stderr: str

    def describe(self) -> str:
        bad = [f"  {q}: {line['r']} {line.get('e', '')}: {line.get('t', '')}\n{line.get('tb', '')}"
               for q, line in self.lines.items() if line["r"] != "ok"]
        return (f"exit {self.rc}, {'finished' if self.done else 'did NOT finish'}\n" + "\n".join(bad)
                + ("\nstderr:\n" + self.stderr[-3000:] if self.stderr.strip() else ""))


def ask(root: str, manifest: str) -> Answers:
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "query", root, manifest],
                           capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    lines = {}
    for text in child.stdout.splitlines():
        line = json.loads(text)
        lines[line["q"]] = line
    done = lines.pop("__done__", None) is not None
    return Answers(child.returncode, lines, done, child.stderr)


class Pristine(NamedTuple):
    root: str
    manifest: str
    ids: dict
    keys: dict           # what the cases damage: name -> (table, key)
    answers: Answers


def catalog(root: str, ids: dict) -> dict:
    """The index entries the cases damage, looked up in the pristine index."""
    from steplog.engine.index import BE_U64, ROLLUP_KEY, Index, name_hash
    from steplog.engine.layout import StoreLayout

    series = {}
    index = Index(StoreLayout(root).index_dir, sync=False, create=False)
    try:
        with index.read() as txn:
            for run_id, entry, name, context in txn.all_series():
                series[(run_id.hex(), name, context)] = (run_id + name_hash(name, context), entry.series_id)
            entries = {}
            for table, key, _ in txn.tables():
                entries.setdefault(table, []).append(key)
    finally:
        index.close()
    loss0 = series[(ids["r0"], "loss", "")][1]
    rollup = min(k for k in entries["rollups"] if ROLLUP_KEY.unpack(k)[:2] == (loss0, 0))
    own = [k for k in entries["blocks"] if k[:8] == BE_U64.pack(loss0)]
    return {
        "rollups": ("rollups", rollup),
        "series_info": ("series_info", BE_U64.pack(series[(ids["r1"], "loss", "")][1])),
        "blocks": ("blocks", own[len(own) // 2]),
        "runs": ("runs", bytes.fromhex(ids["r1"])),
        "series_tensor": ("series", series[(ids["r0"], "grad", "")][0]),
        "series_scalar": ("series", series[(ids["r2"], "loss", "")][0]),
        "segments": ("segments", entries["segments"][0]),
        "meta_next_series": ("meta", b"next_series"),
        "meta_format": ("meta", b"format"),
        "experiments": ("experiments", name_hash("exp-b")),
        "heartbeats": ("heartbeats", min(k for k in entries["heartbeats"] if k[:16] == bytes.fromhex(ids["r2"]))),
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    base = tmp_path_factory.mktemp("index_damage")
    root = str(base / "store.steplog")
    ids = build(root)
    manifest = str(base / "ids.json")
    with open(manifest, "w") as f:
        json.dump(ids, f)
    keys = catalog(root, ids)
    answers = ask(copy(root, str(base / "asked")), manifest)
    return Pristine(root, manifest, ids, keys, answers)


def copy(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


# -- damage, with raw lmdb in a separate process -------------------------------------------

DAMAGE_ENTRY = r'''
import sys, lmdb
index_dir, table, key_hex, how = sys.argv[1:5]
key = bytes.fromhex(key_hex)
env = lmdb.open(index_dir, max_dbs=16, subdir=True)
db = env.open_db(table.encode(), create=False)
with env.begin(write=True) as txn:
    value = txn.get(key, db=db)
    if value is None:
        raise SystemExit("no key %s in %s" % (key_hex, table))
    if how == "value":   # one byte before the checksum turned over; the checksum left as it was
        at = (len(value) - 4) // 2
        txn.put(key, value[:at] + bytes([value[at] ^ 0xFF]) + value[at + 1:], db=db)
    else:                # "key:N": the same value under the key with byte N turned over
        at = int(how.split(":")[1])
        moved = key[:at] + bytes([key[at] ^ 0xFF]) + key[at + 1:]
        if txn.get(moved, db=db) is not None:
            raise SystemExit("key %s is taken" % moved.hex())
        txn.delete(key, db=db)
        txn.put(moved, value, db=db)
env.close()
'''

ZERO_PAGE = r'''
import os, struct, sys, lmdb
index_dir, table, which = sys.argv[1:4]
env = lmdb.open(index_dir, max_dbs=16, subdir=True)
psize = env.stat()["psize"]
with env.begin() as txn:
    record = txn.get(table.encode())   # the table's MDB_db record, in the main database
env.close()
depth, = struct.unpack_from("<H", record, 6)
page, = struct.unpack_from("<Q", record, 40)
path = os.path.join(index_dir, "data.mdb")
with open(path, "r+b") as f:
    if which == "leaf":   # down the last child of every branch: a leaf reached by moving right
        for _ in range(depth - 1):
            f.seek(page * psize)
            head = f.read(psize)
            flags, lower = struct.unpack_from("<HH", head, 10)
            assert flags & 0x01, "not a branch page"
            node = struct.unpack_from("<H", head, 16 + 2 * ((lower - 16) // 2 - 1))[0]
            lo, hi, fl = struct.unpack_from("<HHH", head, node)
            page = lo | hi << 16 | fl << 32
    f.seek(page * psize)
    f.write(bytes(psize))
'''


def damage_entry(index_dir: str, table: str, key: bytes, how: str) -> None:
    subprocess.run([sys.executable, "-c", DAMAGE_ENTRY, index_dir, table, key.hex(), how], check=True, timeout=60)


def zero_page(index_dir: str, table: str, which: str) -> None:
    subprocess.run([sys.executable, "-c", ZERO_PAGE, index_dir, table, which], check=True, timeout=60)


def truncate_half(index_dir: str) -> None:
    path = os.path.join(index_dir, "data.mdb")
    os.truncate(path, os.path.getsize(path) // 2)


def delete_data(index_dir: str) -> None:
    os.remove(os.path.join(index_dir, "data.mdb"))


class Case(NamedTuple):
    target: str | None    # a name in the pristine catalog (entry damage), or None (file damage)
    how: str              # "value", "key:N" (byte N of the key), or a damage of the whole file


VALUE_CASES = ["rollups", "series_info", "blocks", "runs", "series_tensor", "series_scalar", "segments",
               "meta_next_series", "meta_format", "experiments", "heartbeats"]
CASES = {
    **{f"value_{name}": Case(name, "value") for name in VALUE_CASES},
    "key_blocks_seq": Case("blocks", "key:23"),                    # same series and first step
    "key_blocks_step": Case("blocks", "key:13"),                   # same series, another first step
    "key_blocks_series": Case("blocks", "key:7"),                  # another series id
    "file_truncated_half": Case(None, "truncate"),
    "file_zeroed_blocks_root": Case(None, "zero:blocks:root"),
    "file_zeroed_blocks_leaf": Case(None, "zero:blocks:leaf"),
    "file_zeroed_runs_root": Case(None, "zero:runs:root"),
    "file_deleted": Case(None, "delete"),
}


def apply(case: Case, p: Pristine, index_dir: str) -> tuple[str | None, bytes | None]:
    """Damage the index at ``index_dir``; returns (table, key) of the damaged entry (for a
    moved entry, the key it now has), if any."""
    if case.target is not None:
        table, key = p.keys[case.target]
        damage_entry(index_dir, table, key, case.how)
        if case.how.startswith("key:"):
            at = int(case.how.split(":")[1])
            key = key[:at] + bytes([key[at] ^ 0xFF]) + key[at + 1:]
        return table, key
    if case.how == "truncate":
        truncate_half(index_dir)
    elif case.how == "delete":
        delete_data(index_dir)
    else:
        _, table, which = case.how.split(":")
        zero_page(index_dir, table, which)
    return None, None


def run_verify(root: str) -> tuple[int, str]:
    child = subprocess.run([sys.executable, "-m", "steplog", "verify", root], capture_output=True, text=True,
                           timeout=CHILD_TIMEOUT)
    return child.returncode, child.stdout + child.stderr


# -- the tests -----------------------------------------------------------------------------

def test_pristine_answers_are_right_and_verify_is_clean(pristine, tmp_path):
    a = pristine.answers
    assert a.rc == 0 and a.done, a.describe()
    assert all(line["r"] == "ok" for line in a.lines.values()), a.describe()
    assert set(a.lines) == {"open", "close"} | {q for q, _ in queries(None, pristine.ids, dataset())}
    code, output = run_verify(copy(pristine.root, str(tmp_path / "store.steplog")))
    assert code == 0, output
    assert output.strip().endswith(" 0 damaged"), output


@pytest.mark.parametrize("case", list(CASES))
def test_index_damage_is_raised_or_read_right(pristine, tmp_path, case):
    spec = CASES[case]
    damaged = str(tmp_path / "store.steplog")
    copy(pristine.root, damaged)
    table, key = apply(spec, pristine, os.path.join(damaged, "index"))
    checked = copy(damaged, str(tmp_path / "verified.steplog"))   # reads may touch their copy
    verify = subprocess.Popen([sys.executable, "-m", "steplog", "verify", checked], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        a = ask(damaged, pristine.manifest)
    finally:
        try:
            output, _ = verify.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            verify.kill()
            output, _ = verify.communicate()
            pytest.fail(f"verify did not finish in {CHILD_TIMEOUT} s:\n{output}")
        code = verify.returncode

    if spec.how.startswith("zero:") and a.rc == -signal.SIGABRT:
        # A zeroed LMDB page reached through its sibling trips an assertion inside LMDB
        # itself, which aborts the process (no error can be raised from there). That is the
        # one death a reader may die, and verify must report it.
        assert code == 1 and "DAMAGED" in output, f"verify exit {code}:\n{output}"
        return
    # the reading process survives and finishes
    assert a.rc == 0 and a.done, f"the reading process died or stopped: {a.describe()}"
    assert "open" in a.lines, a.describe()
    expected = pristine.answers.lines
    if a.lines["open"]["r"] == "ok":
        assert set(a.lines) == set(expected), sorted(set(a.lines) ^ set(expected))
    raised = []
    for q, line in a.lines.items():
        assert line["r"] in ("ok", "typed"), f"{q}: {line['r']} {line.get('e')}: {line.get('t')}\n{line.get('tb', '')}"
        if line["r"] == "ok":
            assert line["d"] == expected[q]["d"], f"{q}: the answer differs from the pristine store's"
        else:
            raised.append(line)

    # a damaged value is a CorruptionError naming its table and key; a moved entry fails
    # its checksum too (it covers the key), or leaves its series short of points
    if spec.how == "value":
        for line in raised:
            assert line["e"] == "CorruptionError", f"{line['q']}: {line['e']}: {line['t']}"
            assert f"index table {table}, key {key.hex()}" in line["t"], f"{line['q']}: {line['t']}"
    elif spec.how.startswith("key"):
        assert raised, "no read noticed the moved entry"
        for line in raised:
            assert line["e"] == "CorruptionError" and "index table " in line["t"], \
                f"{line['q']}: {line['e']}: {line['t']}"

    # verify lists what reads refuse, and every damaged value or key
    if raised or spec.how == "value" or spec.how.startswith("key"):
        assert code == 1, f"verify exit {code} (reads raised: {[line['q'] for line in raised]}):\n{output}"
        assert "DAMAGED" in output, output
    else:
        assert code in (0, 1), output
    if table is not None:
        assert f"index table {table}, key {key.hex()}" in output, output


# -- one damaged key, read in this process ---------------------------------------------------
#
# Each case writes a small store, changes bytes of index/data.mdb in place (a key's bytes,
# its value intact), and asks the reads below in this process: none of these damages takes
# LMDB down. Every answer must be right (numpy against what was logged, and equal to the
# answer of the same store before the damage) or a CorruptionError; never fewer points,
# never an empty table. verify must exit 1.

def small_store(root: str, metric: str, values, **options) -> str:
    """One run with one series of steps 0..len(values)-1, flushed; returns the run id."""
    import steplog

    store = steplog.open(root, **options)
    run = store.start_run(experiment="e", name="r")
    run.log_batch(metric, np.arange(len(values)), values)
    run.flush()
    rid = run.id
    store.close()
    return rid


def check_bucket_rows(table, x: str, xs, steps, values, n: int) -> None:
    """minmax buckets over ``x`` ("step" or "time", its values ``xs``: steps, or microseconds), exact over the points."""
    expect(0 < table.num_rows <= n, f"{table.num_rows} buckets for buckets={n}")
    counts = col(table, "count")
    expect(int(counts.sum()) == len(steps), f"bucket counts sum to {int(counts.sum())}, expected {len(steps)}")
    starts, ends = col(table, f"{x}_start"), col(table, f"{x}_end")
    for k in range(table.num_rows):
        m = (xs >= starts[k]) & (xs < ends[k])
        where = f"bucket {x} [{starts[k]}, {ends[k]})"
        expect(int(m.sum()) == int(counts[k]), f"{where}: count {counts[k]}, expected {int(m.sum())}")
        v = values[m]
        real = v[~np.isnan(v)]
        expect(int(col(table, "nan_count")[k]) == int(np.isnan(v).sum()), f"{where}: nan_count")
        if len(real):
            expect(same_float(col(table, "min")[k], real.min()), f"{where}: min")
            expect(same_float(col(table, "max")[k], real.max()), f"{where}: max")
            expect(bool(np.isclose(col(table, "mean")[k], real.mean(), rtol=1e-9, atol=1e-12)), f"{where}: mean")
        ids = np.flatnonzero(m)
        lo, hi = steps[ids].min(), steps[ids].max()
        first, last = ids[steps[ids] == lo][0], ids[steps[ids] == hi][-1]   # ties: earliest, latest written
        expect(int(col(table, "first_step")[k]) == lo and same_float(col(table, "first")[k], values[first]),
               f"{where}: first")
        expect(int(col(table, "last_step")[k]) == hi and same_float(col(table, "last")[k], values[last]),
               f"{where}: last")


def check_read(table, kw: dict, truth: dict) -> None:
    """``Store.read(**kw)`` of a series with steps 0..N-1 (each once), against the points."""
    steps, values, times = truth["steps"], truth["values"], truth["times"]
    m = np.ones(len(steps), bool)
    if kw.get("start") is not None:
        m &= steps >= kw["start"]
    if kw.get("stop") is not None:
        m &= steps < kw["stop"]
    steps, values, times = steps[m], values[m], times[m]
    n = kw.get("buckets")
    if n is None:
        check_points(table, {"steps": steps, "values": values, "times": times})
    elif kw.get("method") == "lttb":
        got = col(table, "step")
        expect(0 < table.num_rows <= n, f"lttb: {table.num_rows} points for buckets={n}")
        expect(got[0] == steps[0] and got[-1] == steps[-1], f"lttb: first/last steps {got[0]}, {got[-1]}")
        expect(bool(np.all(np.diff(got) > 0)), "lttb: steps not ascending")
        at = np.searchsorted(steps, got)
        expect(bool(np.all(steps[np.minimum(at, len(steps) - 1)] == got)), "lttb: a step never logged")
        expect(same_bits(col(table, "value"), values[at]) and np.array_equal(col(table, "time_ns"), times[at]),
               "lttb: points differ from the logged ones")
    else:
        x = kw.get("x", "step")
        check_bucket_rows(table, x, steps if x == "step" else times // 1000, steps, values, n)


def check_metrics(table, metric: str, truth: dict) -> None:
    got = [(row["metric"], row["context"], row["kind"], row["count"], row["step_min"], row["step_max"])
           for row in table.to_pylist()]
    steps = truth["steps"]
    want = [(metric, None, "scalar", len(steps), int(steps.min()), int(steps.max()))]
    expect(got == want, f"metrics {got}, expected {want}")


def damaged_reads(root: str, rid: str, metric: str, values, reads: list[dict], damage, **options) -> dict:
    """Ask ``reads`` and metrics() on the intact store (they must be right), call
    ``damage(mdb_path)``, ask them again; returns query -> "right" or "raised"."""
    import steplog

    def ask(store, truth):
        answers = {}
        for kw in reads:
            q = f"read{kw}"
            try:
                table = store.read(rid, metric, **kw)
            except steplog.CorruptionError as exc:
                answers[q] = ("raised", str(exc))
                continue
            try:
                check_read(table, kw, truth)
            except Wrong as exc:
                answers[q] = ("wrong", str(exc))
                continue
            answers[q] = ("right", digest(table))
        try:
            table = store.metrics(rid)
        except steplog.CorruptionError as exc:
            answers["metrics"] = ("raised", str(exc))
        else:
            try:
                check_metrics(table, metric, truth)
                answers["metrics"] = ("right", digest(table))
            except Wrong as exc:
                answers["metrics"] = ("wrong", str(exc))
        return answers

    store = steplog.open(root, **options)
    try:
        whole = store.read(rid, metric)
        truth = {"steps": np.arange(len(values)), "values": np.asarray(values, np.float64),
                 "times": col(whole, "time_ns")}
        check_points(whole, truth)
        before = ask(store, truth)
    finally:
        store.close()
    assert all(r == "right" for r, _ in before.values()), before

    damage(os.path.join(root, "index", "data.mdb"))

    store = steplog.open(root, **options)
    try:
        after = ask(store, truth)
    finally:
        store.close()
    bad = {q: a for q, a in after.items() if a[0] == "wrong" or (a[0] == "right" and a[1] != before[q][1])}
    assert not bad, f"reads of the damaged store neither right nor a CorruptionError: {bad}"
    return {q: r for q, (r, _) in after.items()}


def lmdb_rows(index_dir: str, table: str) -> list[tuple[bytes, bytes]]:
    import lmdb

    env = lmdb.open(index_dir, readonly=True, lock=False, max_dbs=32)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(table.encode(), txn=txn, create=False))]
    finally:
        env.close()


def assert_verify_reports(root: str) -> None:
    code, output = run_verify(root)
    assert code == 1 and "DAMAGED" in output, f"verify exit {code}:\n{output}"


def test_block_key_first_step_flipped_mid_leaf_is_raised_or_read_right(tmp_path):
    """The first-step field of one block key in the middle of a leaf turned over: the
    leaf's keys are out of order and a search for the series' start skips the blocks
    before it. No read, bounded or bucketed, may return the series short."""
    root = str(tmp_path / "s")
    values = np.ones(1024)
    rid = small_store(root, "loss", values, block_points=64)   # 16 blocks of 64 points
    index_dir = os.path.join(root, "index")
    rows = lmdb_rows(index_dir, "blocks")
    assert len(rows) == 16
    key, value = rows[7]                  # the node LMDB's binary search looks at first

    def damage(mdb):
        with open(mdb, "rb") as f:
            data = bytearray(f.read())
        at = data.find(key + value)
        assert at >= 0
        data[at + 8] ^= 0xFF              # top byte of the biased first step: the key now sorts first
        with open(mdb, "wb") as f:
            f.write(bytes(data))

    reads = [{}, dict(start=0, stop=1024), dict(start=0), dict(buckets=16, method="lttb"),
             dict(buckets=20, x="time"), dict(buckets=7)]
    got = damaged_reads(root, rid, "loss", values, reads, damage, block_points=64)
    assert [k for k, _ in lmdb_rows(index_dir, "blocks")] != [k for k, _ in rows], "the damage missed the live page"
    assert "raised" in got.values(), got
    assert_verify_reports(root)


def test_blocks_branch_separator_flipped_is_raised_or_read_right(tmp_path):
    """The first-step field of a separator key on a branch page of the blocks table turned
    over: every leaf is intact (a cursor walk sees every block, each checksum holds) but
    searches descend into the wrong child and skip whole leaves."""
    import lmdb

    page = 4096
    root = str(tmp_path / "s")
    n = 64 * 400
    values = np.ones(n)
    rid = small_store(root, "loss", values, block_points=64)   # 400 blocks: several leaf pages
    index_dir = os.path.join(root, "index")
    keys = [k for k, _ in lmdb_rows(index_dir, "blocks")]

    def damage(mdb):
        with open(mdb, "rb") as f:
            data = bytearray(f.read())
        seps = []              # a block key that also appears on a branch page (flags & 1)
        for k in keys:
            i = data.find(k)
            while i >= 0:
                flags = struct.unpack_from("<H", data, (i // page) * page + 10)[0]
                if flags & 1:
                    seps.append(i)
                i = data.find(k, i + 1)
        assert seps, "no branch page"
        at = seps[len(seps) // 2]
        data[at + 8] ^= 0xFF   # its first-step field now sorts before every block of the series
        with open(mdb, "wb") as f:
            f.write(bytes(data))

    reads = [{}, dict(start=0, stop=n), dict(buckets=20, x="time"), dict(buckets=10)]
    got = damaged_reads(root, rid, "loss", values, reads, damage, block_points=64)
    env = lmdb.open(index_dir, readonly=True, lock=False, max_dbs=32)
    try:
        with env.begin() as txn:
            db = env.open_db(b"blocks", txn=txn, create=False)
            assert [bytes(k) for k in txn.cursor(db=db).iternext(values=False)] == keys   # every leaf intact
            assert any(txn.get(k, db=db) is None for k in keys), "the damage missed the live branch page"
    finally:
        env.close()
    assert "raised" in got.values(), got
    assert_verify_reports(root)


def test_series_key_flipped_is_raised_not_read_as_never_logged(tmp_path):
    """One byte inside the name hash of a series-table key: the exact-key lookup misses,
    and that miss must not read as a series never logged (an empty table)."""
    from steplog.engine.index import name_hash

    root = str(tmp_path / "s")
    values = np.ones(200)
    rid = small_store(root, "special", values)

    def damage(mdb):
        with open(mdb, "rb") as f:
            data = bytearray(f.read())
        at = data.find(bytes.fromhex(rid) + name_hash("special", ""))   # the key: run id + name hash
        assert at >= 0
        data[at + 26] ^= 0x5C                                           # one bit pattern inside the name hash
        with open(mdb, "wb") as f:
            f.write(bytes(data))

    got = damaged_reads(root, rid, "special", values, [{}, dict(buckets=5)], damage)
    key = bytes.fromhex(rid) + name_hash("special", "")
    assert key not in [k for k, _ in lmdb_rows(os.path.join(root, "index"), "series")], "the damage missed the key"
    assert got["read{}"] == "raised", got
    assert_verify_reports(root)


def test_series_info_key_flipped_is_raised_not_read_as_empty(tmp_path):
    """The series id in the key of the one series_info entry turned from 1 to 0: the
    series' stats are missing, which must not read as an empty series (0 points)."""
    root = str(tmp_path / "s")
    values = np.arange(1000.0)
    rid = small_store(root, "loss", values, block_points=64)
    index_dir = os.path.join(root, "index")
    (key, value), = lmdb_rows(index_dir, "series_info")

    def damage(mdb):
        with open(mdb, "rb") as f:
            data = bytearray(f.read())
        at = data.find(key + value)
        assert at >= 0
        data[at + 7] ^= 0x01                # series_id (big-endian u64): 1 -> 0
        with open(mdb, "wb") as f:
            f.write(bytes(data))

    got = damaged_reads(root, rid, "loss", values, [{}, dict(buckets=5)], damage, block_points=64)
    assert [k for k, _ in lmdb_rows(index_dir, "series_info")] == [bytes(8)], "the damage missed the key"
    assert got["read{}"] == "raised", got
    assert_verify_reports(root)


if __name__ == "__main__" and sys.argv[1:2] == ["query"]:
    query_child(sys.argv[2], sys.argv[3])
