"""The run catalog (engine/catalog.py, query/catalog.py): every answer of runs() and
series() equals the one built from the records (query/runs.py runs_table over every
run record, and the index's aggregates), whether the catalog came from a snapshot, the
change log or the records; it sees changes made by other real processes and by resumed
runs; a read-only open answers without writing; a missing, stale or damaged snapshot is
ignored; repair builds a new one."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import steplog
from steplog.engine import catalog as engine_catalog
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair
from steplog.query.runs import runs_table

PARAMS = [{"lr": 0.1, "opt": "adam", "layers": [1, 2]}, {"lr": 1, "opt": "sgd", "bn": True},
          {"lr": "auto", "model": {"depth": 50}}, {"lr": 0.001, "bn": None, "big": 2**70}]


def from_records(store) -> pa.Table:
    """The runs table built from every run record, the way runs() was before the catalog."""
    with store._index.read() as txn:
        return runs_table(list(txn.runs()), txn.heartbeats())


def fill(store, n: int, offset: int = 0) -> list[str]:
    ids = []
    for i in range(n):
        with store.start_run(experiment=f"e{i % 2}", name=f"r{offset + i}", params=PARAMS[i % len(PARAMS)],
                             tags={"i": offset + i}) as run:
            run.log_batch("loss", np.arange(10), np.linspace(1, 0.1 * (i % 5), 10))
            run.log("acc", 0.1 * i, step=1, context={"subset": "val"})
        ids.append(run.id)
    return ids


def test_runs_equal_the_table_from_records_through_snapshot_and_log(open_store):
    store = open_store()
    fill(store, 6)
    assert store.runs().equals(from_records(store))          # from the records (no snapshot yet)
    assert engine_catalog.refresh(store._index, force=True)
    fill(store, 3, offset=6)
    with store.start_run(params={"lr": [3]}) as run:
        run.log_params({"extra": 1.5})
    assert store.runs().equals(from_records(store))          # snapshot + change log
    store._shared.catalog_view = None
    assert store.runs().equals(from_records(store))          # a fresh reader of the same state


def test_series_equal_the_index_and_the_points(open_store):
    store = open_store()
    ids = fill(store, 4)
    table = store.series()
    assert table.num_rows == 8
    for row in table.to_pylist():
        points = store.read(row["run_id"], row["metric"],
                            context=None if row["context"] is None else {"subset": "val"})
        values = points.column("value").to_numpy()
        assert row["count"] == len(values) and row["last"] == values[-1] and row["first"] == values[0]
        assert row["min"] == values.min() and row["max"] == values.max()
        assert row["mean"] == pytest.approx(values.mean())
    assert store.series(runs=[ids[1]]).column("run_id").to_pylist() == [ids[1]] * 2


def _other_process(path: str, run_id: str, queue) -> None:
    with steplog.open(path, flush_interval=None) as store:
        with store.run(run_id) as run:
            run.log("loss", -5.0, step=100)
        with store.start_run(experiment="e9", name="from-child", params={"lr": 0.5}) as run:
            run.log("loss", 0.0, step=0)
    queue.put("done")


def test_another_process_and_a_resumed_run_are_seen(store_path):
    with steplog.open(store_path, flush_interval=None) as store:
        ids = fill(store, 3)
        assert store.runs(where="metrics.loss.min < -1").num_rows == 0   # cached from here on
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_other_process, args=(str(store_path), ids[0], queue))
        child.start()
        assert queue.get(timeout=120) == "done"
        child.join(60)
        assert store.runs(where="metrics.loss.min < -1").column("id").to_pylist() == [ids[0]]
        assert store.runs(experiment="e9").column("name").to_pylist() == ["from-child"]
        assert store.runs().equals(from_records(store))


def test_read_only_open_answers_and_writes_nothing(store_path):
    with steplog.open(store_path, flush_interval=None) as store:
        fill(store, 5)
        engine_catalog.refresh(store._index, force=True)
        fill(store, 2, offset=5)   # after the snapshot: in the change log only
        want = from_records(store)
    data = os.path.join(StoreLayout(str(store_path)).index_dir, "data.mdb")
    before = (os.path.getsize(data), os.stat(data).st_mtime_ns)
    code = ("import steplog, sys; s = steplog.open(sys.argv[1], mode='r'); "
            "print(s.runs(where=\"params.lr < 0.5\").num_rows, s.runs().num_rows, s.series().num_rows)")
    out = subprocess.run([sys.executable, "-c", code, str(store_path)], capture_output=True, text=True, check=True)
    lr = want.column("params.lr").to_numpy(zero_copy_only=False)
    assert out.stdout.split() == [str(int(np.sum(lr < 0.5))), "7", "14"]
    assert (os.path.getsize(data), os.stat(data).st_mtime_ns) == before


def test_damaged_or_stale_snapshot_is_ignored(open_store):
    store = open_store()
    fill(store, 4)
    assert engine_catalog.refresh(store._index, force=True)
    store._index.write(lambda txn: txn.put_catalog({b"runs": b"not arrow"}))   # damaged (checksum holds)
    store._shared.catalog_view = None
    assert store.runs().equals(from_records(store))

    with store._index.read() as txn:
        old = engine_catalog.encode(engine_catalog.from_records(txn))
    fill(store, 2, offset=4)

    def stale(txn):   # an old snapshot that claims to be current
        values = dict(old)
        values[b"head"] = engine_catalog.HEAD.pack(engine_catalog.CATALOG_VERSION, txn.counter(b"next_change"), 4)
        txn.put_catalog(values)

    store._index.write(stale)
    store._shared.catalog_view = None
    assert store.runs().equals(from_records(store))
    assert store.runs().num_rows == 6


def test_log_trimmed_past_a_cached_catalog(open_store):
    store = open_store()
    fill(store, 3)
    store.runs()   # cached at this change_seq
    fill(store, 2, offset=3)
    assert engine_catalog.refresh(store._index, force=True)   # trims the log the cache would need
    with store._index.read() as txn:
        assert list(txn.changes(0)) == []
    assert store.runs().equals(from_records(store))


def test_repair_builds_a_new_snapshot(store_path):
    with steplog.open(store_path, flush_interval=None) as store:
        fill(store, 5)
        want = from_records(store)
    repair(StoreLayout(str(store_path)))
    with steplog.open(store_path, mode="r") as store:
        with store._index.read() as txn:
            assert engine_catalog.snapshot_seq(txn) is not None
        got = store.runs()
        assert got.drop_columns(["status"]).equals(want.drop_columns(["status"]))
        # loss ends at 0.1 * (i % 5)
        assert store.runs(where="metrics.loss.last < 0.15", order_by="name").column("name").to_pylist() == ["r0", "r1"]


def test_runs_where_order_limit_experiment(open_store):
    store = open_store()
    fill(store, 8)
    table = store.runs(where="params.lr < 0.5 and metrics.loss.last < 0.25", order_by="tags.i DESC")
    rows = [r for r in from_records(store).to_pylist()
            if isinstance(r["params.lr"], float) and r["params.lr"] < 0.5]
    last = {r["run_id"]: r["last"] for r in store.series().to_pylist() if r["metric"] == "loss"}
    want = sorted((r for r in rows if last[r["id"]] < 0.25), key=lambda r: -r["tags.i"])
    assert table.column("name").to_pylist() == [r["name"] for r in want]
    assert store.runs(experiment="e1", limit=2).column("name").to_pylist() == ["r1", "r3"]
    assert store.runs(experiment=["e0", "e1"]).num_rows == 8
    with pytest.raises(steplog.NotFoundError, match="e1"):
        store.runs(experiment="e11")
    with pytest.raises(steplog.InvalidArgumentError, match="where"):
        store.runs(where="params.lr <")
    only_e1 = store.runs(experiment="e1")
    assert "params.model.depth" not in only_e1.column_names   # no run of e1 has it


def test_kind_and_resources_are_columns_and_filters(tmp_path):
    """start_run(kind=, resources=) reach runs() as kind and resources.* columns, from
    and filter as an attribute and as resources.KEY."""
    with steplog.open(tmp_path / "s") as store:
        train = store.start_run(kind="train", resources={"gpus": 8, "node": {"type": "a100"}}, capture=False)
        prep = store.start_run(kind="preprocess", resources={"gpus": 0}, capture=False)
        plain = store.start_run(capture=False)
        table = store.runs()
        by_id = dict(zip(table.column("id").to_pylist(), table.to_pylist()))
        assert by_id[train.id]["kind"] == "train" and by_id[plain.id]["kind"] is None
        assert by_id[train.id]["resources.node.type"] == "a100" and by_id[prep.id]["resources.gpus"] == 0
        assert store.runs(where="resources.gpus >= 1").column("id").to_pylist() == [train.id]
        assert store.runs(where="kind = 'preprocess'").column("id").to_pylist() == [prep.id]
        assert store.runs(where="kind IS NULL").column("id").to_pylist() == [plain.id]
