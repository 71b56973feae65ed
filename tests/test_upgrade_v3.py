"""A version-3 store (tests/fixtures/store-v3, made by make_store_v3.py with the
version-3 code) reads as it is when opened read-only, aggregates included (decoded from
its blocks), touching no file; opened to write it is upgraded to version 4 with the
aggregates of every scalar series, verifies clean and survives repair."""

from __future__ import annotations


import numpy as np
import pytest

import steplog
from steplog.engine.check import verify
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair

from _helpers import copy_fixture, file_sizes, index_version
from test_aggregates import check, kept

SCALARS = ["loss", "small", "mixed", "single"]


@pytest.fixture
def v3(tmp_path):
    return copy_fixture(tmp_path, "store-v3")


def series_rows(store, run_id) -> dict:
    table = store.series(runs=[run_id])
    return {(r["metric"], r["context"]): r for r in table.to_pylist()}


def test_read_only_open_reads_aggregates_from_blocks_and_writes_nothing(v3):
    path, ids = v3
    before = file_sizes(path)
    assert index_version(path) == 3
    with steplog.open(path, mode="r") as store:
        assert store._index.version == 3
        rows = series_rows(store, ids["long"])
        for name in SCALARS:
            points = store.read(ids["long"], name)
            values = points.column("value").to_numpy()
            row = rows[(name, None)]
            assert row["count"] == len(values)
            np.testing.assert_equal([row["first"], row["last"], row["min"], row["max"]],
                                    [values[0], values[-1], np.nanmin(values), np.nanmax(values)])
        assert rows[("acc", '{"subset":"val"}')]["last"] == 0.75
        assert rows[("grad", None)]["kind"] == "tensor" and rows[("grad", None)]["min"] is None
        assert store.runs(where="metrics.loss.min < 0").column("name").to_pylist() == ["long"]
    assert file_sizes(path) == before


def test_open_to_write_upgrades_and_keeps_every_scalar_series(v3):
    path, ids = v3
    with steplog.open(path, flush_interval=None) as store:
        assert store._index.version == steplog.FORMAT_VERSION == 5
        for name in SCALARS:
            check(store, ids["long"], name)
        check(store, ids["long"], "acc", {"subset": "val"})
        nan_only = kept(store, ids["nan"], "loss")
        assert (nan_only.count, nan_only.nan_count, nan_only.min_seq) == (2, 2, 0)
        assert kept(store, ids["long"], "grad") is None   # tensor summaries keep counts only
        with store.run(ids["long"]) as run:   # and it takes new points, merged in
            run.log("mixed", -7.0, step=100)
        check(store, ids["long"], "mixed")
        assert kept(store, ids["long"], "mixed").min == -7.0
    layout = StoreLayout(str(path))
    index = Index(layout.index_dir, sync=False, create=False)
    try:
        checked, damage = verify(layout, index)
    finally:
        index.close()
    assert damage == [] and checked > 0


def test_upgraded_then_rebuilt_from_segments(v3):
    path, ids = v3
    with steplog.open(path, flush_interval=None) as store:
        upgraded = {name: kept(store, ids["long"], name) for name in SCALARS}
    report = repair(StoreLayout(str(path)))
    assert report.orphans == 0 and report.damage == []
    with steplog.open(path, mode="r") as store:
        for name in SCALARS:
            got = kept(store, ids["long"], name)
            assert got._replace(sum=0.0).pack() == upgraded[name]._replace(sum=0.0).pack()   # bit for bit
            check(store, ids["long"], name)
