"""A version-2 store (tests/fixtures/store-v2, made by make_store_v2.py with the
version-2 code) opens upgraded to the current version, reads back what was logged, verifies
clean and survives repair."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import steplog
from steplog.engine.check import verify
from steplog.engine.index import FORMAT_VERSION, ROLLUP_MIN_POINTS, Index
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
V2_STORE = os.path.join(FIXTURES, "store-v2")


@pytest.fixture
def v2(tmp_path):
    path = tmp_path / "store-v2"
    shutil.copytree(V2_STORE, path)
    with open(os.path.join(FIXTURES, "store-v2.json")) as f:
        return path, json.load(f)


def index_state(path) -> dict:
    index = Index(StoreLayout(str(path)).index_dir, sync=False, create=False)
    try:
        with index.read() as txn:
            rollups = {}
            for table, key, _ in txn.tables():
                if table == "rollups":
                    series_id = int.from_bytes(key[:8], "big")
                    rollups[series_id] = rollups.get(series_id, 0) + 1
            counts = {entry.series_id: txn.series_info(entry.series_id).count for _, entry, _, _ in txn.all_series()
                      if entry.kind == 1}   # scalar series
            heartbeat_keys = [len(key) for table, key, _ in txn.tables() if table == "heartbeats"]
        return {"version": index.version, "rollups": rollups, "counts": counts, "heartbeat_keys": heartbeat_keys}
    finally:
        index.close()


def check(path, ids) -> None:
    steps = np.arange(10_000, dtype=np.int64)
    values = np.cos(steps / 100.0)
    values[11] = np.nan
    values[12] = -np.inf
    with steplog.open(path, flush_interval=None) as store:
        loss = store.read(ids["long"], "loss")
        np.testing.assert_array_equal(loss.column("step").to_numpy(), steps)
        np.testing.assert_array_equal(loss.column("value").to_numpy(), values)
        np.testing.assert_array_equal(loss.column("time_ns").to_numpy(),
                                      steps * 1000 + 1_700_000_000_000_000_000)
        buckets = store.read(ids["long"], "loss", buckets=7)
        assert sum(buckets.column("count").to_pylist()) == 10_000
        assert sum(buckets.column("nan_count").to_pylist()) == 1
        assert min(buckets.column("min").to_pylist()) == -np.inf
        small = store.read(ids["long"], "small")
        assert small.column("step").to_pylist() == [i * 2 for i in range(60)]
        assert small.column("value").to_pylist() == [i * 0.5 for i in range(60)]
        assert store.read(ids["long"], "small", buckets=3).column("count").to_pylist() != []
        assert sum(store.read(ids["long"], "small", buckets=3).column("count").to_pylist()) == 60
        assert store.read(ids["long"], "single").column("value").to_pylist() == [7.0]
        grads = store.read_tensor(ids["long"], "grad")
        assert grads.column("count").to_pylist() == [101.0]
        statuses = {r["id"]: r["status"] for r in store.runs().to_pylist()}
        assert statuses == {ids["long"]: "finished", ids["left"]: "crashed"}   # its writer is long gone
        run = store.run(ids["long"])   # and it takes new points
        run.log("single", 8.0, step=4)
        run.end()
        assert store.read(ids["long"], "single").column("value").to_pylist() == [7.0, 8.0]


def test_v2_store_opens_upgraded_and_reads_back(v2):
    path, ids = v2
    before = index_state(path)
    assert before["version"] == 2 and set(before["heartbeat_keys"]) == {16}
    assert all(before["rollups"].get(sid) for sid, n in before["counts"].items() if n)   # v2: every scalar series
    check(path, ids)
    after = index_state(path)
    assert after["version"] == FORMAT_VERSION == 5
    assert [sid for sid in after["rollups"]] == [sid for sid, n in after["counts"].items() if n >= ROLLUP_MIN_POINTS]
    assert set(after["heartbeat_keys"]) <= {28}
    layout = StoreLayout(str(path))
    index = Index(layout.index_dir, sync=False, create=False)
    try:
        checked, damage = verify(layout, index)
    finally:
        index.close()
    assert damage == [] and checked > 0


def test_v2_store_upgraded_then_rebuilt_from_segments(v2):
    path, ids = v2
    with steplog.open(path, flush_interval=None):
        pass
    report = repair(StoreLayout(str(path)))
    assert report.orphans == 0 and report.damage == []
    check(path, ids)
