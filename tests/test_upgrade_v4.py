"""A version-4 store (tests/fixtures/store-v4, made by make_store_v4.py with the
version-4 code) reads as it is when opened read-only, with no artifacts and touching no
file; opened to write it is upgraded to version 5, logs artifacts, verifies clean and
survives repair with its points and artifacts."""

from __future__ import annotations

import os

import steplog
from steplog.engine.check import verify
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair

from _helpers import bits, copy_fixture, file_sizes, index_version


def test_read_only_open_has_no_artifacts_and_writes_nothing(tmp_path):
    path, ids = copy_fixture(tmp_path, "store-v4")
    before = file_sizes(path)
    with steplog.open(path, mode="r") as store:
        assert store._index.version == 4
        assert store.artifacts().num_rows == 0 and store.artifacts(ids["train"]).num_rows == 0
        assert store.read(ids["train"], "loss").num_rows == 6000
        assert set(store.runs().column("id").to_pylist()) == set(ids.values())
    assert file_sizes(path) == before and index_version(path) == 4


def test_upgrade_then_artifacts_verify_and_repair(tmp_path):
    path, ids = copy_fixture(tmp_path, "store-v4")
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(5000))
    with steplog.open(path) as store:
        assert store._index.version == steplog.FORMAT_VERSION == 5
        loss = store.read(ids["train"], "loss")
        with store.run(ids["eval"]) as run:
            logged = run.log_model(str(data), copy=True)
        runs = store.runs().sort_by("id")
    layout = StoreLayout(str(path))
    index = Index(layout.index_dir, sync=False, create=False, readonly=True)
    try:
        assert verify(layout, index)[1] == []
    finally:
        index.close()
    repair(layout)
    with steplog.open(path, mode="r") as store:
        again = store.read(ids["train"], "loss")
        assert again.column("step").equals(loss.column("step")) and again.column("time_ns").equals(loss.column("time_ns"))
        assert (bits(again.column("value")) == bits(loss.column("value"))).all()   # NaN and -inf kept
        fields = ["id", "name", "parent"]
        assert store.runs().sort_by("id").select(fields).equals(runs.select(fields))
        rows = store.artifacts().to_pylist()
        assert [(r["run_id"], r["sha256"], r["stored"]) for r in rows] == [(ids["eval"], logged["sha256"], True)]
        assert store.get_blob(logged["sha256"]) == data.read_bytes()
