"""Helpers shared by the test modules (expectations are computed here with numpy)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# float64 bit patterns that must survive storage unchanged
SPECIAL_BITS = np.array([
    0x7FF8000000000000,  # the default quiet NaN
    0xFFF8000000000000,  # negative quiet NaN
    0x7FF8000000000001,  # quiet NaN with a payload
    0xFFF8DEADBEEF0001,  # negative NaN with a payload
    0x7FF0000000000001,  # signalling NaN
    0x7FF4000000000000,  # signalling NaN, other payload
    0x7FF0000000000000,  # +inf
    0xFFF0000000000000,  # -inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,  # +0.0
    0x0000000000000001,  # smallest subnormal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    0xFFEFFFFFFFFFFFFF,  # most negative finite
], dtype=np.uint64)
SPECIAL_VALUES = SPECIAL_BITS.view(np.float64)


def bits(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64)).view(np.uint64)


def fbits(value: float) -> int:
    """The bit pattern of one float64."""
    return int(np.float64(value).view(np.uint64))


def columns(table: pa.Table):
    """(steps, times, values) of a read result as numpy int64, int64, float64."""
    steps = table.column("step").to_numpy()
    times = table.column("time_ns").to_numpy()
    values = table.column("value").to_numpy()
    return steps.astype(np.int64, copy=False), times.astype(np.int64, copy=False), values


def expected(steps, values, times=None, start=None, stop=None):
    """Points in write order -> what a read must return: stable sort by step, then range."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    times = None if times is None else np.asarray(times, dtype=np.int64)
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    times = None if times is None else times[order]
    keep = np.ones(len(steps), dtype=bool)
    if start is not None:
        keep &= steps >= start
    if stop is not None:
        keep &= steps < stop
    return steps[keep], values[keep], None if times is None else times[keep]


def assert_points(table: pa.Table, steps, values, times=None, start=None, stop=None):
    """The table holds exactly the given points (write order), sorted as a read must."""
    want_steps, want_values, want_times = expected(steps, values, times, start, stop)
    got_steps, got_times, got_values = columns(table)
    assert got_steps.tolist() == want_steps.tolist()
    assert bits(got_values).tolist() == bits(want_values).tolist()
    if want_times is not None:
        assert got_times.tolist() == want_times.tolist()


def list_tree(root) -> set[str]:
    """Every file and folder under root, as paths relative to it."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def stored_counts(store, run_id: str) -> dict:
    """(metric, context JSON or None) -> points of that series in the index, flushed ones
    only (Store.metrics counts unflushed points too)."""
    with store._index.read() as txn:
        return {(name, context or None): txn.series_info(entry.series_id).count
                for entry, name, context in txn.run_series(bytes.fromhex(run_id))}


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def copy_fixture(tmp_path, name: str):
    """A copy of the fixture store ``name`` ("store-v3") and the ids its script wrote."""
    import json
    import shutil

    path = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), path)
    with open(os.path.join(FIXTURES, f"{name}.json")) as f:
        return path, json.load(f)


def index_version(path) -> int:
    """The format version a store's index says, read without upgrading it."""
    from steplog.engine.index import Index
    from steplog.engine.layout import StoreLayout

    index = Index(StoreLayout(str(path)).index_dir, sync=False, create=False, readonly=True)
    try:
        return index.version
    finally:
        index.close()


def file_sizes(path) -> dict:
    """Every file of a store and its size, but LMDB's lock file (its reader table, which
    any open may create: a fresh clone of a fixture has none)."""
    return {name: os.path.getsize(os.path.join(path, name)) for name in list_tree(path)
            if os.path.isfile(os.path.join(path, name)) and not name.endswith("lock.mdb")}
