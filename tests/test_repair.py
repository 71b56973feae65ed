"""``steplog repair``: the segments are the source of truth.

A store written by 8 processes at once is snapshotted (runs, series, every point bit
for bit, tensor summaries, bucketed reads), its index is deleted or overwritten with
random bytes, ``steplog repair`` rebuilds it, and the snapshot must come back the same
(bucket means up to the order sums are folded in). Repair refuses while a process is
writing. The checked-in version-1 store opens (upgraded), reads back what its script
logged, verifies, and survives repair with its index intact or rebuilt.

Every child is a real process (``python -c`` or ``python -m steplog``) with a timeout
on every wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import steplog

from _helpers import SPECIAL_VALUES, assert_points, bits, columns, list_tree

TIMEOUT = 120
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
V1_STORE = os.path.join(FIXTURES, "store-v1")
V1_IDS = os.path.join(FIXTURES, "store-v1.json")
WRITERS = 8
BUCKETS = 7


# -- processes --------------------------------------------------------------------------


def cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steplog", *args], capture_output=True, text=True,
                          timeout=timeout)


def repair(path, expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = cli("repair", str(path))
    if expect_ok:
        assert result.returncode == 0, f"repair exit {result.returncode}:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def verify_ok(path) -> None:
    result = cli("verify", str(path))
    assert result.returncode == 0, f"verify exit {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


def wait_line(proc: subprocess.Popen, timeout: float = TIMEOUT) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "child did not answer in time"
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
        raise AssertionError(f"child died: {err[-4000:]}")
    return line


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"child exit {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
    return out


def copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


# -- snapshots --------------------------------------------------------------------------


COUNTS = ["metric", "context", "kind", "count", "step_min", "step_max"]   # metrics() columns before aggregates


def canon(column) -> object:
    """A column as plain values that compare exactly: floats by their bits, times as ns."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return ("list", array.offsets.to_pylist(), array.is_null().to_pylist(), canon(array.flatten()))
    if not (pa.types.is_floating(kind) or pa.types.is_timestamp(kind) or pa.types.is_integer(kind)):
        return ("py", array.to_pylist())
    if array.null_count:
        return ("nulls", array.is_null().to_pylist(), canon(array.fill_null(0)))
    if pa.types.is_floating(kind):
        return ("f64", bits(array.to_numpy(zero_copy_only=False)).tolist())
    if pa.types.is_timestamp(kind) or pa.types.is_integer(kind):
        return ("int", array.cast(pa.int64()).to_numpy(zero_copy_only=False).tolist())
    return ("py", array.to_pylist())


def table_canon(table: pa.Table, skip=()) -> dict:
    return {"columns": table.column_names,
            **{name: canon(table.column(name)) for name in table.column_names if name not in skip}}


def snapshot(path) -> dict:
    """Everything a reader sees of the store. ``means`` holds bucket means apart: they
    are compared up to rounding, everything else exactly."""
    shot = {"means": {}}
    with steplog.open(path, flush_interval=None) as store:
        runs = store.runs()
        shot["runs"] = runs.to_pylist()
        for run_id in runs.column("id").to_pylist():
            table = store.metrics(run_id)
            metrics = table.to_pylist()
            # the mean of a series is a sum of its points: repair adds them in another order
            shot[("metrics", run_id)] = table_canon(table, skip=("mean",))
            shot["means"][("metrics", run_id)] = table.column("mean").to_numpy(zero_copy_only=False)
            for row in metrics:
                context = None if row["context"] is None else json.loads(row["context"])
                key = (run_id, row["metric"], row["context"])
                if row["kind"] == "scalar":
                    shot[("points",) + key] = table_canon(store.read(run_id, row["metric"], context=context))
                    buckets = store.read(run_id, row["metric"], context=context, buckets=BUCKETS)
                    shot[("buckets",) + key] = table_canon(buckets, skip=("mean",))
                    shot["means"][key] = buckets.column("mean").to_numpy(zero_copy_only=False)
                else:
                    shot[("tensor",) + key] = table_canon(store.read_tensor(run_id, row["metric"], context=context))
    return shot


def assert_same(before: dict, after: dict) -> None:
    assert sorted(map(str, before)) == sorted(map(str, after))
    assert after["runs"] == before["runs"]
    for key in before:
        if key not in ("means", "runs"):
            assert after[key] == before[key], f"differs after repair: {key}"
    assert before["means"].keys() == after["means"].keys()
    for key, want in before["means"].items():
        np.testing.assert_allclose(after["means"][key], want, rtol=1e-9, atol=0, equal_nan=True,
                                   err_msg=f"bucket means of {key}")


def without_run(shot: dict, run_id: str) -> dict:
    out = {key: value for key, value in shot.items()
           if key not in ("means", "runs") and run_id not in key}
    out["runs"] = [row for row in shot["runs"] if row["id"] != run_id]
    out["means"] = {key: value for key, value in shot["means"].items() if run_id not in key}
    return out


# -- a store written by 8 processes at once ----------------------------------------------

WRITER = r'''
import json, os, sys, time
import numpy as np
import steplog

path, me, shared_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
special = np.frombuffer(bytes.fromhex(sys.argv[4]), dtype=np.float64)
rng = np.random.default_rng(100 + me)
ids = {}
store = steplog.open(path, block_points=64, flush_interval=None)

main = store.start_run(experiment=f"exp{me % 3}", name=f"w{me}",
                       params={"lr": 10.0 ** -me, "seed": me, "model": {"depth": 10 + me, "act": "relu"}},
                       tags={"writer": str(me), "kind": "main"})
ids["main"] = main.id
loss = rng.standard_normal(1500)
loss[[3, 400, 1200]] = np.nan
loss[10], loss[800] = np.inf, -np.inf
main.log_batch("loss", steps=np.arange(1500), values=loss[:1500])
main.flush()
val = rng.standard_normal(700)
val[5] = np.nan
main.log_batch("loss", steps=np.arange(0, 1400, 2), values=val, context={"subset": "val"})
for k in range(150):
    main.log("acc", float(rng.random()), step=k * 7)
    main.log("acc", float(k), step=k * 7 + 3, context={"subset": "val", "fold": me % 2})
main.log("acc", float("nan"), step=2000)
main.log("acc", float("inf"), step=2001)
for k in range(60):
    main.log({"lr": 0.1 / (k + 1), "momentum": 0.9})   # step=None, one step each
main.flush()
shuffled = np.concatenate([rng.permutation(400), rng.integers(0, 400, 100)]).astype(np.int64)
main.log_batch("shuffled", steps=shuffled, values=rng.standard_normal(len(shuffled)))
main.log_batch("special", steps=np.arange(len(special)), values=special)
main.log_batch("negative", steps=np.arange(-300, 0) * 3, values=np.cos(np.arange(300.0)))
for k in range(6):
    main.log_tensor("grad/fc1", rng.standard_normal((32, 16)) * (k + 1), step=k, bins=16)
    main.log_tensor("weights", rng.uniform(-3, 3, 200), step=k * 10, edges=np.linspace(-3, 3, 9))
odd = rng.standard_normal(100)
odd[:3] = [np.nan, np.inf, -np.inf]
main.log_tensor("odd", odd, step=0, context={"layer": me})
main.log_tensors({"w1": np.ones(10) * me, "w2": np.zeros(5)}, step=3)
main.flush()
main.log_params({"later": me, "lr": 0.5})
main.set_tags({"stage": "trained"})
if me % 3 == 0:
    main.end("finished")
elif me % 3 == 1:
    main.end("failed")
# me % 3 == 2: left running; the process dies below with the run open

child = store.start_run(experiment="children", name=f"c{me}", parent=main.id, params={"parent_writer": me})
ids["child"] = child.id
for k in range(100):
    child.log("x", float(k * me), step=k)
child.log_tensor("t", rng.standard_normal(50), step=0)
child.end("finished" if me % 2 else "killed")

if me == 0:   # a run another process resumes once it is ended here
    shared = store.start_run(experiment="shared", name="shared", params={"lr": 1.0}, tags={"owner": "0"})
    for k in range(100):
        shared.log("shared_loss", 1.0 / (k + 1))
    shared.end("finished")
    ids["shared"] = shared.id
    with open(shared_file + ".tmp", "w") as f:
        f.write(shared.id)
    os.replace(shared_file + ".tmp", shared_file)
if me == WRITERS - 1:
    deadline = time.monotonic() + 90
    while not os.path.exists(shared_file):
        if time.monotonic() > deadline:
            sys.exit("the shared run was never published")
        time.sleep(0.02)
    with open(shared_file) as f:
        shared_id = f.read()
    resumed = store.run(shared_id)
    for k in range(50):
        resumed.log("shared_loss", -1.0 / (k + 1))   # step=None: continues after the other process
    resumed.log_batch("resumed_only", steps=np.arange(80), values=np.sqrt(np.arange(80.0)))
    resumed.flush()
    resumed.log_params({"resumed_by": me, "lr": 0.25})
    resumed.set_tags({"owner": str(me)})
    resumed.end("finished")
    ids["resumed"] = shared_id
if me % 3 == 2:   # dies without closing (nor ending its run), once its points are flushed
    store.flush()
    print(json.dumps(ids), flush=True)
    os._exit(0)
store.close()
print(json.dumps(ids))
'''.replace("WRITERS", str(WRITERS))


def write_store(root) -> tuple:
    """8 processes write one store at once; returns (path, the ids each printed)."""
    path = root / "store.steplog"
    shared_file = str(root / "shared-run-id")
    special = np.ascontiguousarray(SPECIAL_VALUES).tobytes().hex()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(me), shared_file, special],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me in range(WRITERS)]
    try:
        ids = [json.loads(finish(proc)) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)
    return path, ids


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(path, snapshot, ids) of a store 8 processes wrote at once; tests repair copies of it."""
    path, ids = write_store(tmp_path_factory.mktemp("written"))
    shot = snapshot(path)
    # the store holds what the writers wrote (so that comparing snapshots is not vacuous)
    runs = {row["id"]: row for row in shot["runs"]}
    assert len(runs) == 2 * WRITERS + 1
    shared = runs[ids[0]["shared"]]
    assert ids[WRITERS - 1]["resumed"] == ids[0]["shared"]
    assert (shared["status"], shared["params.resumed_by"], shared["params.lr"], shared["tags.owner"]) == \
        ("finished", WRITERS - 1, 0.25, str(WRITERS - 1))
    steps, _, values = columns(read_back(path, ids[0]["shared"], "shared_loss"))
    assert steps.tolist() == list(range(150))
    assert values.tolist() == [1.0 / (k + 1) for k in range(100)] + [-1.0 / (k + 1) for k in range(50)]
    statuses = {runs[i["main"]]["status"] for i in ids}
    assert statuses == {"finished", "failed", "crashed"}
    assert len(os.listdir(path / "segments")) >= 2
    return path, shot, ids


def read_back(path, run_id, name, **kwargs) -> pa.Table:
    with steplog.open(path, flush_interval=None) as store:
        return store.read(run_id, name, **kwargs)


def test_repair_rebuilds_deleted_index_of_a_store_written_by_8_processes(written, tmp_path):
    source, before, _ = written
    path = copy_store(source, tmp_path / "store.steplog")
    shutil.rmtree(path / "index")
    with pytest.raises(steplog.StepLogError):
        steplog.open(path)   # a missing index is not silently replaced by an empty one
    repair(path)
    assert_same(before, snapshot(path))
    verify_ok(path)

    # the repaired store takes new writes
    with steplog.open(path, block_points=64, flush_interval=None) as store:
        run = store.start_run(experiment="after-repair", name="new")
        run.log_batch("m", steps=np.arange(200), values=np.arange(200) * 0.5)
        run.log("m", float("nan"), step=200)
        store.flush()
        assert_points(store.read(run.id, "m"), list(range(201)), list(np.arange(200) * 0.5) + [float("nan")])
        run.end()
        new_id = run.id
    written_after = snapshot(path)
    assert_same(before, without_run(written_after, new_id))
    new = [row for row in written_after["runs"] if row["id"] == new_id]
    assert [(r["name"], r["experiment"], r["status"]) for r in new] == [("new", "after-repair", "finished")]

    # a second repair (index intact this time) gives the same store again
    repair(path)
    assert_same(written_after, snapshot(path))
    verify_ok(path)


def test_repair_rebuilds_an_index_overwritten_with_random_bytes(written, tmp_path):
    source, before, _ = written
    path = copy_store(source, tmp_path / "store.steplog")
    data = path / "index" / "data.mdb"
    size = os.path.getsize(data)
    with open(data, "wb") as f:
        f.write(np.random.default_rng(7).bytes(size))
    repair(path)
    assert_same(before, snapshot(path))


HOLDER = r'''
import sys
import numpy as np
import steplog

store = steplog.open(sys.argv[1], block_points=64, flush_interval=None)
run = store.start_run(experiment="live", name="holder")
run.log_batch("live", steps=np.arange(100), values=np.arange(100.0))
store.flush()
print(run.id, flush=True)
sys.stdin.readline()                       # the test says when to go on
run.log_batch("live", steps=np.arange(100, 150), values=np.arange(100.0, 150.0))
run.end()
store.close()
print("closed", flush=True)
'''


def digest_tree(root) -> dict:
    out = {}
    for rel in sorted(list_tree(root)):
        full = os.path.join(root, rel)
        if os.path.isfile(full) and not rel.startswith("index"):
            with open(full, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_repair_refuses_while_a_process_is_writing(written, tmp_path):
    source, _, _ = written
    path = copy_store(source, tmp_path / "store.steplog")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_line(holder)
        before = snapshot(path)
        tree, files = list_tree(path), digest_tree(path)
        result = repair(path, expect_ok=False)
        assert result.returncode != 0, result.stdout
        assert "refused" in result.stdout
        assert list_tree(path) == tree          # no new index, none moved aside, nothing left behind
        assert digest_tree(path) == files       # segments untouched
        assert_same(before, snapshot(path))
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert wait_line(holder) == "closed"
        finish(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=TIMEOUT)
    assert_points(read_back(path, run_id, "live"), list(range(150)), list(np.arange(150.0)))
    after = snapshot(path)
    repair(path)   # no one writes now
    assert_same(after, snapshot(path))


# -- write order across processes survives repair -----------------------------------------

FIRST_SEGMENT = r'''
import sys
import steplog

store = steplog.open(sys.argv[1], flush_interval=None)
store.start_run(name="holder")            # takes segment 1 and keeps it
print("ready", flush=True)
run_id = sys.stdin.readline().strip()
run = store.run(run_id)                   # resumes the run the other process wrote
for k in range(10):
    run.log("loss", 100.0 + k)            # step=None: steps 10..19
run.log("tie", 2.0, step=5)               # written after the other process's step 5
store.flush()
run.end()
store.close()
print("done", flush=True)
'''

SECOND_SEGMENT = r'''
import sys
import steplog

store = steplog.open(sys.argv[1], flush_interval=None)
run = store.start_run(name="main")        # segment 1 is held: this writes segment 2
for k in range(10):
    run.log("loss", float(k))             # steps 0..9
run.log("tie", 1.0, step=5)
store.flush()
print(run.id, flush=True)
sys.stdin.readline()
store.close()
'''


@pytest.fixture(scope="module")
def crossed(tmp_path_factory):
    """A run written first by a process with a later segment, then resumed by a process
    holding an earlier one: write order across segments is not segment order."""
    path = tmp_path_factory.mktemp("crossed") / "store.steplog"
    first = subprocess.Popen([sys.executable, "-c", FIRST_SEGMENT, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        assert wait_line(first) == "ready"
        second = subprocess.Popen([sys.executable, "-c", SECOND_SEGMENT, str(path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = wait_line(second)
        first.stdin.write(run_id + "\n")
        first.stdin.flush()
        assert wait_line(first) == "done"
        second.stdin.write("\n")
        second.stdin.flush()
        finish(second)
        finish(first)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)
    assert sorted(os.listdir(path / "segments")) == ["0000000000000001.seg", "0000000000000002.seg"]
    before = snapshot(path)
    assert read_back(path, run_id, "tie").column("value").to_pylist() == [1.0, 2.0]   # write order
    steps, _, values = columns(read_back(path, run_id, "loss"))
    assert steps.tolist() == list(range(20))
    repaired = copy_store(path, path.parent / "repaired.steplog")
    shutil.rmtree(repaired / "index")
    repair(repaired)
    return repaired, run_id, before


def test_repair_keeps_the_write_order_of_equal_steps_across_processes(crossed):
    path, run_id, before = crossed
    # step 5 was written first by the process of segment 2, then by the process of segment 1
    assert read_back(path, run_id, "tie").column("value").to_pylist() == [1.0, 2.0]
    assert_same(before, snapshot(path))


def test_repair_keeps_the_step_a_resumed_run_continues_from(crossed, tmp_path):
    source, run_id, _ = crossed
    path = copy_store(source, tmp_path / "store.steplog")
    with steplog.open(path, flush_interval=None) as store:
        run = store.run(run_id)
        run.log("loss", -1.0)                 # step=None: the series' last step + 1
        store.flush()
        steps, _, values = columns(store.read(run_id, "loss"))
    assert steps.tolist() == list(range(21))
    assert values.tolist() == [float(k) for k in range(10)] + [100.0 + k for k in range(10)] + [-1.0]


# -- version 1 ----------------------------------------------------------------------------


def v1_ids() -> dict:
    with open(V1_IDS) as f:
        return json.load(f)


def v1_digest() -> dict:
    out = {}
    for folder, _, files in os.walk(V1_STORE):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), V1_STORE)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def v1_copy(tmp_path):
    """A copy of the checked-in version-1 store; the checked-in one must stay as it is."""
    digest = v1_digest()
    path = copy_store(V1_STORE, tmp_path / "store-v1")
    yield path
    assert v1_digest() == digest


def check_v1(path) -> None:
    """The store holds what tests/fixtures/make_store_v1.py logged (expected values
    regenerated with numpy exactly as the script made them)."""
    ids = v1_ids()
    with steplog.open(path, flush_interval=None) as store:
        runs = {row["id"]: row for row in store.runs().to_pylist()}
        assert set(runs) == set(ids.values())
        a, b, child = runs[ids["a"]], runs[ids["b"]], runs[ids["child"]]
        assert (a["experiment"], a["name"], a["parent"], a["status"]) == ("fixture", "a", None, "finished")
        assert (a["params.lr"], a["params.model.depth"], a["params.opt"], a["tags.team"]) == (0.1, 50, "adam", "vision")
        assert (b["experiment"], b["name"], b["parent"], b["status"]) == ("fixture", "b", None, "finished")
        assert (b["params.lr"], b["params.model.depth"], b["params.opt"], b["tags.team"]) == (0.01, None, None, None)
        assert (child["experiment"], child["name"], child["parent"], child["status"]) == \
            ("other", "child", ids["a"], "failed")
        for run in (a, b, child):
            assert run["start_time"] is not None and run["end_time"] is not None
            assert run["start_time"] <= run["end_time"]
        assert a["end_time"] <= b["start_time"] and b["end_time"] <= child["start_time"]

        assert store.metrics(ids["a"]).select(COUNTS).to_pylist() == [
            {"metric": "acc", "context": '{"subset":"val"}', "kind": "scalar", "count": 100, "step_min": 0,
             "step_max": 297},
            {"metric": "grad/fc1", "context": None, "kind": "tensor", "count": 5, "step_min": 0, "step_max": 4},
            {"metric": "loss", "context": None, "kind": "scalar", "count": 300, "step_min": 0, "step_max": 299},
            {"metric": "w", "context": None, "kind": "tensor", "count": 1, "step_min": 0, "step_max": 0},
        ]
        assert store.metrics(ids["b"]).select(COUNTS).to_pylist() == [
            {"metric": "loss", "context": None, "kind": "scalar", "count": 100, "step_min": -50, "step_max": 49}]
        assert store.metrics(ids["child"]).select(COUNTS).to_pylist() == [
            {"metric": "x", "context": None, "kind": "scalar", "count": 1, "step_min": 0, "step_max": 0}]

        steps = np.arange(300, dtype=np.int64)
        values = np.sin(steps / 10.0)
        values[7] = np.nan
        values[8] = np.inf
        times = np.arange(300, dtype=np.int64) * 1000 + 1_700_000_000_000_000_000
        assert_points(store.read(ids["a"], "loss"), steps, values, times)
        assert_points(store.read(ids["a"], "loss", start=100, stop=200), steps, values, times, start=100, stop=200)
        buckets = store.read(ids["a"], "loss", buckets=BUCKETS)
        assert sum(buckets.column("count").to_pylist()) == 300
        assert sum(buckets.column("nan_count").to_pylist()) == 1
        assert min(buckets.column("min").to_pylist()) == np.nanmin(values)
        assert max(buckets.column("max").to_pylist()) == np.inf
        assert buckets.column("first").to_pylist()[0] == values[0]
        assert buckets.column("last").to_pylist()[-1] == values[-1]

        acc = store.read(ids["a"], "acc", context={"subset": "val"})   # times came from the clock
        assert_points(acc, [i * 3 for i in range(100)], [i / 100.0 for i in range(100)])
        with pytest.raises(steplog.NotFoundError, match="subset"):    # no such series without the context
            store.read(ids["a"], "acc")

        rng = np.random.default_rng(1)
        tensors = [rng.standard_normal(1000) for _ in range(5)]
        grads = store.read_tensor(ids["a"], "grad/fc1").drop_columns(["time", "time_ns"]).to_pydict()
        assert grads["step"] == list(range(5))
        assert grads["count"] == [1000.0] * 5
        assert grads["min"] == [t.min() for t in tensors]
        assert grads["max"] == [t.max() for t in tensors]
        np.testing.assert_allclose(grads["mean"], [t.mean() for t in tensors], rtol=1e-12, atol=1e-15)
        assert [sum(c) for c in grads["hist_counts"]] == [1000] * 5
        assert [len(c) for c in grads["hist_counts"]] == [16] * 5
        for edges, tensor in zip(grads["hist_edges"], tensors):
            np.testing.assert_allclose(edges, np.linspace(tensor.min(), tensor.max(), 17), rtol=1e-12)

        w = store.read_tensor(ids["a"], "w").drop_columns(["time", "time_ns"]).to_pydict()
        tensor, edges = np.arange(10.0), np.linspace(0, 10, 5)
        assert w["step"] == [0]
        assert (w["count"], w["min"], w["max"]) == ([10.0], [tensor.min()], [tensor.max()])
        np.testing.assert_allclose(w["mean"], [tensor.mean()], rtol=1e-12)
        assert w["hist_edges"] == [edges.tolist()]
        assert w["hist_counts"] == [np.histogram(tensor, edges)[0].tolist()]

        times_b = np.arange(100, dtype=np.int64) + 1_700_000_000_000_000_000
        assert_points(store.read(ids["b"], "loss"), np.arange(-50, 50), np.cos(np.arange(100.0)), times_b)
        assert_points(store.read(ids["b"], "loss", start=-10, stop=10), np.arange(-50, 50),
                      np.cos(np.arange(100.0)), times_b, start=-10, stop=10)
        x = store.read(ids["child"], "x")
        assert columns(x)[0].tolist() == [0] and bits(columns(x)[2]).tolist() == bits([1.5]).tolist()


def index_version(path) -> int:
    """The format version the index holds, read without opening (so without upgrading) the store."""
    from steplog.engine.index import Index

    index = Index(str(path / "index"), sync=False, create=False)
    try:
        return index.version
    finally:
        index.close()


def test_v1_store_opens_upgraded_reads_back_and_verifies(v1_copy):
    assert index_version(v1_copy) == 1
    verify_ok(v1_copy)           # as version 1, before any upgrade: verify never writes
    assert index_version(v1_copy) == 1
    check_v1(v1_copy)
    assert index_version(v1_copy) == steplog.FORMAT_VERSION == 5
    verify_ok(v1_copy)
    check_v1(v1_copy)   # opens as it is now


def test_v1_store_repaired_with_its_index_intact(v1_copy):
    assert index_version(v1_copy) == 1
    repair(v1_copy)
    assert index_version(v1_copy) == steplog.FORMAT_VERSION
    check_v1(v1_copy)
    verify_ok(v1_copy)


def test_v1_store_upgraded_then_rebuilt_from_segments(v1_copy):
    with steplog.open(v1_copy, flush_interval=None):
        pass
    before = snapshot(v1_copy)
    shutil.rmtree(v1_copy / "index")
    repair(v1_copy)
    assert_same(before, snapshot(v1_copy))
    check_v1(v1_copy)
    verify_ok(v1_copy)

    # and it takes new writes, then a second rebuild still holds everything
    ids = v1_ids()
    with steplog.open(v1_copy, flush_interval=None) as store:
        run = store.run(ids["b"])
        run.log("loss", 5.0, step=50)
        run.log_params({"resumed": True})
        run.end()
    shutil.rmtree(v1_copy / "index")
    repair(v1_copy)
    with steplog.open(v1_copy, flush_interval=None) as store:
        b = [row for row in store.runs().to_pylist() if row["id"] == ids["b"]][0]
        assert (b["status"], b["params.resumed"], b["params.lr"]) == ("finished", True, 0.01)
        assert_points(store.read(ids["b"], "loss"), list(range(-50, 51)), list(np.cos(np.arange(100.0))) + [5.0])
