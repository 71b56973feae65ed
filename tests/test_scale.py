"""Many names: a series costs a pack member, not a block; small series keep no rollups;
a flush of one run seals that run alone; read_many sees every series once.

Real store, real numba, zstd and LMDB. Sizes are small: speeds are benchmarks'
business (benchmarks/scale.py), these check behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest

import steplog
from steplog.engine.check import verify
from steplog.engine.index import ROLLUP_MIN_POINTS, Index
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair
from steplog.engine.writer import SeriesKey


def index_tables(where) -> dict:
    """table -> number of entries of an index (a closed store's path, or an open Store)."""
    index = where._index if isinstance(where, steplog.Store) else Index(StoreLayout(str(where)).index_dir,
                                                                        sync=False, create=False)
    try:
        with index.read() as txn:
            counts: dict = {}
            for table, _, _ in txn.tables():
                counts[table] = counts.get(table, 0) + 1
            packed = sum(1 for ref in txn.all_blocks() if ref.header_bytes[:4] == b"SLPM")
        return {**counts, "packed": packed}
    finally:
        if not isinstance(where, steplog.Store):
            index.close()


def points(table) -> dict:
    return {"step": table.column("step").to_pylist(), "time": table.column("time_ns").to_pylist(),
            "value": table.column("value").to_pylist()}


def test_single_point_series_share_packs_and_keep_no_blocks_or_rollups(tmp_path):
    path = tmp_path / "s"
    n = 3000
    with steplog.open(path, flush_interval=None) as store:
        run = store.start_run()
        for i in range(n):
            run.log(f"m/{i}", float(i) if i % 7 else float("nan"), step=i % 5)
        run.end()
    tables = index_tables(path)
    assert tables.get("blocks", 0) == 0          # every series' only chunk is referenced from series_info
    assert tables.get("rollups", 0) == 0         # too small to keep rollups
    assert tables["packed"] == n
    with steplog.open(path, flush_interval=None) as store:
        for i in (0, 1, 7, 1234, n - 1):
            table = store.read(run.id, f"m/{i}")
            assert table.column("step").to_pylist() == [i % 5]
            value = table.column("value").to_pylist()[0]
            assert (np.isnan(value) if i % 7 == 0 else value == float(i))
            buckets = store.read(run.id, f"m/{i}", buckets=10)
            assert buckets.column("count").to_pylist() == [1]
        many = store.read_many()
        assert many.num_rows == n
        assert sorted(many.column("metric").to_pylist()) == sorted(f"m/{i}" for i in range(n))


def test_a_series_grows_from_a_pack_member_to_blocks_and_rollups(tmp_path):
    """Its first chunk moves from series_info to a block entry; reaching
    ROLLUP_MIN_POINTS folds every stored point into the rollups, exactly."""
    path = tmp_path / "s"
    rng = np.random.default_rng(3)
    values = rng.normal(size=ROLLUP_MIN_POINTS + 500)
    values[3] = np.nan
    values[4] = np.inf
    with steplog.open(path, flush_interval=None) as store:
        run = store.start_run()
        run.log("grow", float(values[0]), step=0)   # one point: a pack member
        run.flush()
        for step in range(1, 20):                     # a second small chunk
            run.log("grow", float(values[step]), step=step)
        run.flush()
        assert index_tables(store).get("rollups", 0) == 0
        run.log_batch("grow", np.arange(20, 1000), values[20:1000])
        run.flush()
        run.log_batch("grow", np.arange(1000, len(values)), values[1000:])   # crosses the threshold
        run.end()
    assert index_tables(path)["rollups"] > 0
    with steplog.open(path, flush_interval=None) as store:
        table = store.read(run.id, "grow")
        np.testing.assert_array_equal(table.column("step").to_numpy(), np.arange(len(values)))
        np.testing.assert_array_equal(table.column("value").to_numpy(), values)
        buckets = store.read(run.id, "grow", buckets=4)
        assert sum(buckets.column("count").to_pylist()) == len(values)
        assert sum(buckets.column("nan_count").to_pylist()) == 1
        assert max(buckets.column("max").to_pylist()) == np.inf
        assert min(buckets.column("min").to_pylist()) == np.nanmin(values)
        assert buckets.column("first").to_pylist()[0] == values[0]
    index = Index(StoreLayout(str(path)).index_dir, sync=False, create=False)
    try:
        checked, damage = verify(StoreLayout(str(path)), index)
    finally:
        index.close()
    assert damage == [] and checked > 0


def test_repair_rebuilds_packs_and_rollups(tmp_path):
    path = tmp_path / "s"
    with steplog.open(path, flush_interval=None) as store:
        run = store.start_run()
        for i in range(200):
            run.log(f"m/{i}", float(i), step=0)
        run.flush()
        run.log("m/5", 5.5, step=1)          # m/5: a member in series_info, then a second one
        run.log_batch("big", np.arange(ROLLUP_MIN_POINTS), np.ones(ROLLUP_MIN_POINTS))
        run.end()
        before = {i: points(store.read(run.id, f"m/{i}")) for i in (0, 5, 199)}
        big = store.read(run.id, "big", buckets=3).to_pydict()
    report = repair(StoreLayout(str(path)))
    assert report.orphans == 0 and report.damage == []
    with steplog.open(path, flush_interval=None) as store:
        assert {i: points(store.read(run.id, f"m/{i}")) for i in (0, 5, 199)} == before
        assert store.read(run.id, "m/5").column("step").to_pylist() == [0, 1]
        assert store.read(run.id, "big", buckets=3).to_pydict() == big
    assert index_tables(path)["rollups"] > 0


def test_flush_of_one_run_writes_that_run_and_leaves_the_others_buffered(tmp_path):
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        a, b = store.start_run(), store.start_run()
        a.log("x", 1.0, step=0)
        b.log("x", 2.0, step=0)
        writer = store._writer
        writer.flush(bytes.fromhex(a.id))
        with store._index.read() as txn:
            assert txn.get_series(bytes.fromhex(a.id), "x", "") is not None
            assert txn.get_series(bytes.fromhex(b.id), "x", "") is None   # not flushed: still buffered
        keys = [SeriesKey(bytes.fromhex(r.id), "x", "") for r in (a, b)]
        with writer.publish_lock:
            unflushed = writer.unflushed_many(keys + [SeriesKey(b"\0" * 16, "x", "")])
        assert [sum(len(c[0]) for c in unflushed[k]) for k in keys] == [0, 1]
        assert store.read(b.id, "x").column("value").to_pylist() == [2.0]   # unflushed, read all the same


@pytest.mark.parametrize("points", [1, 32, 33])
def test_pack_boundary(tmp_path, points):
    """Up to PACK_MAX_POINTS points in a flush go to a pack; more make a block."""
    path = tmp_path / "s"
    with steplog.open(path, flush_interval=None) as store:
        run = store.start_run()
        run.log_batch("x", np.arange(points), np.arange(points) * 0.25)
        run.log("y", 1.0, step=0)
        run.end()
        assert store.read(run.id, "x").column("value").to_pylist() == [i * 0.25 for i in range(points)]
    tables = index_tables(path)
    assert tables["packed"] == (2 if points <= 32 else 1)
