"""Running out of room: a file-size limit makes ``flush()`` raise StorageFullError and
loses nothing flushed before; the LMDB map grows by itself, also across processes.

The disk-full cases run in a child process that sets RLIMIT_FSIZE a little above what
the store already holds (CPython ignores SIGXFSZ, so writes fail with EFBIG) and
reports on stdout what it saw; the parent, without a limit, checks the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import steplog
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout

from _helpers import assert_points, bits, columns

TIMEOUT = 120


def values_at(steps) -> np.ndarray:
    """Deterministic, hard to compress values (the segment grows fast)."""
    steps = np.asarray(steps, dtype=np.int64)
    return np.sin(steps * 0.618033988749895) * (1.0 + steps)


CHILD = r'''
import json, os, resource, sys
import numpy as np
import steplog

cfg = json.loads(sys.argv[1])
path, how = cfg["path"], cfg["how"]

def values_at(steps):
    steps = np.asarray(steps, dtype=np.int64)
    return np.sin(steps * 0.618033988749895) * (1.0 + steps)

def describe(exc):
    return {"type": type(exc).__module__ + "." + type(exc).__name__, "message": str(exc),
            "storage_full": isinstance(exc, steplog.StorageFullError), "oserror": isinstance(exc, OSError),
            "errno": getattr(exc, "errno", None)}

def largest_file():
    return max(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

store = steplog.open(path, block_points=1024, flush_interval=None, durability=cfg["durability"])
run = store.start_run(name="child")
report = {"run_id": run.id, "acked": 0, "acked_series": 0, "errors": []}
# something flushed under no limit first
run.log_batch("m", np.arange(2000), values_at(np.arange(2000)))
store.flush()
report["acked"] = step = 2000
limit = largest_file() + cfg["margin"]
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit if cfg["hard"] else resource.RLIM_INFINITY))
report["limit"] = limit
series = 0
try:
    for i in range(2000):
        if how == "segment":      # big batches: the segment file hits the limit
            run.log_batch("m", np.arange(step, step + 20000), values_at(np.arange(step, step + 20000)))
            step += 20000
        else:                     # many new series with one point: the index hits the limit
            for j in range(20):
                run.log("s%d" % (series + j), float(series + j), step=0)
            series += 20
        store.flush()
        report["acked"], report["acked_series"] = step, series
    report["errors"].append("never full")
except Exception as exc:
    report["errors"].append(describe(exc))
report["logged"], report["logged_series"] = step, series
try:                              # still full: the flush fails again, the same way
    store.flush()
    report["errors"].append("second flush passed")
except Exception as exc:
    report["errors"].append(describe(exc))
if not cfg["hard"]:               # room again: flushing keeps every point logged before
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    store.flush()
    report["retried"] = True
    store.close()
print(json.dumps(report), flush=True)
# with a hard limit the store is left open: the exit handler tries to flush, must not fail the exit
'''


def run_child(path: str, how: str, hard: bool, margin: int, durability: str = "commit") -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(
        {"path": path, "how": how, "hard": hard, "margin": margin, "durability": durability})],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def verify_exit_code(path: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True, text=True,
                            timeout=TIMEOUT)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("durability", ["commit", "none", "fsync"])
@pytest.mark.parametrize("how, hard", [("segment", True), ("index", True), ("segment", False), ("index", False)])
def test_file_size_limit_makes_flush_raise_storage_full(tmp_path, how, hard, durability):
    path = str(tmp_path / "store.steplog")
    with steplog.open(path, flush_interval=None) as store:          # what the store already holds
        before = store.start_run(name="before")
        before.log_batch("m", np.arange(5000), values_at(np.arange(5000)))
        before.end()
    report = run_child(path, how, hard, margin=64 << 10, durability=durability)   # a crash fails run_child
    assert len(report["errors"]) == 2, report
    for what, error in zip(("the flush that hit the limit", "the flush after it"), report["errors"]):
        assert error != "never full" and error != "second flush passed", report
        assert error["storage_full"], f"{what} raised {error['type']}: {error['message']}, not StorageFullError"
        # EFBIG, ENOSPC, or EIO: LMDB reports a write cut short by the file-size limit as EIO
        assert error["oserror"] and error["errno"] in (5, 27, 28), error
    assert report["acked"] >= 2000

    with steplog.open(path, flush_interval=None) as store:
        assert_points(store.read(before.id, "m"), np.arange(5000), values_at(np.arange(5000)))
        steps, _, values = columns(store.read(report["run_id"], "m"))
        if hard:   # every acknowledged point, maybe more of what was logged, nothing else
            assert report["acked"] <= len(steps) <= report["logged"]
        else:      # after the limit was lifted the retried flush wrote everything logged
            assert len(steps) == report["logged"]
        assert steps.tolist() == list(range(len(steps)))
        assert bits(values).tolist() == bits(values_at(steps)).tolist()
        if how == "index":
            metrics = {m["metric"]: m["count"] for m in store.metrics(report["run_id"]).to_pylist()}
            for i in range(report["acked_series"] if hard else report["logged_series"]):
                assert metrics.get(f"s{i}") == 1, f"series s{i}: {metrics.get(f's{i}')}"
                assert store.read(report["run_id"], f"s{i}").column("value").to_pylist() == [float(i)]
        # the store accepts and flushes new writes
        after = store.start_run(name="after")
        after.log_batch("m", np.arange(3000), values_at(np.arange(3000)))
        after.log("one", 1.5, step=7)
        store.flush()
        assert_points(store.read(after.id, "m"), np.arange(3000), values_at(np.arange(3000)))
        after.end()
    code, output = verify_exit_code(path)
    assert code == 0, output


# -- the LMDB map grows by itself -----------------------------------------------------------

def big_run_record(i: int) -> dict:
    return {"id": f"{i:032x}", "experiment": "map", "name": f"r{i}", "parent": None, "status": "finished",
            "start_time": 1_700_000_000_000_000_000 + i, "end_time": 1_700_000_000_000_000_001 + i,
            "params": {"blob": "x" * 10_000, "i": i}, "tags": {}}


def put_runs(index: Index, first: int, count: int, per_txn: int = 25) -> None:
    for lo in range(first, first + count, per_txn):
        index.write(lambda txn, lo=lo: [txn.put_run(bytes.fromhex(f"{i:032x}"), big_run_record(i))
                                        for i in range(lo, min(lo + per_txn, first + count))])


def test_index_map_grows_past_a_small_initial_map(tmp_path):
    layout = StoreLayout(tmp_path / "store.steplog")
    layout.create_dirs()
    index = Index(layout.index_dir, sync=False, map_size=1 << 20)
    try:
        put_runs(index, 0, 500)                       # about 5 MB through a 1 MiB map
        assert index.env.info()["map_size"] > 4 << 20
        index.write(lambda txn: txn.put_run(bytes.fromhex(f"{10**6:032x}"), big_run_record(10**6)))
        with index.read() as txn:
            records = {r["id"]: r for r in txn.runs()}
        assert len(records) == 501
        assert all(records[f"{i:032x}"]["params"] == big_run_record(i)["params"] for i in range(500))
    finally:
        index.close()
    with steplog.open(layout.root) as store:          # the store opens and lists them
        assert store.runs().num_rows == 501


GROW_CHILD = r'''
import sys
sys.path.insert(0, sys.argv[2])
from steplog.engine.index import Index
from test_resources import put_runs
index = Index(sys.argv[1], sync=False, map_size=1 << 20)
put_runs(index, 1000, 800)
print(index.env.info()["map_size"], flush=True)
index.close()
'''


def test_index_map_grown_by_another_process(tmp_path):
    """This process keeps a 1 MiB map open while another grows the file past it."""
    layout = StoreLayout(tmp_path / "store.steplog")
    layout.create_dirs()
    index = Index(layout.index_dir, sync=False, map_size=1 << 20)
    try:
        put_runs(index, 0, 50)
        result = subprocess.run([sys.executable, "-c", GROW_CHILD, layout.index_dir, os.path.dirname(__file__)],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout.split()[0]) > 8 << 20
        with index.read() as txn:                     # reading adopts the larger map
            assert sum(1 for _ in txn.runs()) == 850
        put_runs(index, 5000, 300)                    # and so does writing, growing it further
        with index.read() as txn:
            ids = [r["id"] for r in txn.runs()]
        assert len(ids) == 1150
        assert ids == sorted(ids)
    finally:
        index.close()
    with steplog.open(layout.root) as store:
        run = store.start_run(params={"blob": "y" * 5_000, "blob2": "y" * 5_000})
        run.log("m", 1.0, step=0)
        run.end()
        assert store.runs().num_rows == 1151
        assert store.read(run.id, "m").column("value").to_pylist() == [1.0]
