"""``Store.read(method="lttb")``: NaN and inf stay visible, and the time axes.

A diverging loss (finite, then inf, then NaN) must show where it diverged; NaN and inf
points count within n (query/kernels.py lttb). With x="time" and x="relative" the
points are chosen over time and come back in time order; x="relative" adds the time
since the run started as a "relative" duration column, as the minmax path names its
bounds relative_start and relative_end.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steplog.query.downsample import lttb_indices


def col(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if pa.types.is_timestamp(column.type) or pa.types.is_duration(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy())


def check_raw_points(table: pa.Table, steps: np.ndarray, values: np.ndarray, n: int) -> None:
    """At most n rows, sorted by step, each a logged (step, value), the first and last kept."""
    got_steps, got_values = col(table, "step"), col(table, "value")
    assert 0 < table.num_rows <= n
    assert (np.diff(got_steps) > 0).all()
    at = np.searchsorted(steps, got_steps)
    assert (steps[at] == got_steps).all()
    assert (values[at].view(np.uint64) == got_values.view(np.uint64)).all()
    assert got_steps[0] == steps[0] and got_steps[-1] == steps[-1]


@pytest.fixture
def diverging(open_store):
    """loss: 20000 steps, finite until step 15000, +inf at 15000, NaN from 15001 on
    (flushed); spiky: finite with NaN at five steps and inf and -inf at three, far apart."""
    store = open_store(block_points=1000)
    run = store.start_run()
    steps = np.arange(20_000, dtype=np.int64)
    loss = np.exp(-steps / 5000.0)
    loss[15_000], loss[15_001:] = np.inf, np.nan
    spiky = np.sin(steps / 300.0)
    odd = {2_000: np.nan, 4_500: np.inf, 7_000: np.nan, 9_500: -np.inf, 12_000: np.nan, 14_500: np.inf,
           16_000: np.nan, 18_500: np.nan}
    for step, value in odd.items():
        spiky[step] = value
    run.log_batch("loss", steps, loss)
    run.log_batch("spiky", steps, spiky)
    store.flush()
    return store, run.id, steps, loss, spiky, odd


@pytest.mark.parametrize("n", [3, 4, 10, 100, 1000])
def test_the_step_where_a_loss_diverged_is_shown(diverging, n):
    store, run_id, steps, loss, *_ = diverging
    table = store.read(run_id, "loss", buckets=n, method="lttb")
    check_raw_points(table, steps, loss, n)
    got = dict(zip(col(table, "step").tolist(), col(table, "value").tolist()))
    assert got.get(15_000) == np.inf, "the first inf is not shown"
    if n >= 4:
        assert any(np.isnan(v) for s, v in got.items() if s > 15_000), "the NaN stretch is not shown"
        assert sum(np.isfinite(v) for v in got.values()) >= n // 2, "the finite curve lost its points"


@pytest.mark.parametrize("n", [30, 100, 1000])
def test_every_nan_and_inf_far_apart_is_shown(diverging, n):
    """Eight NaN and inf steps at least 1500 steps apart: each lands in a bucket of its
    own once the buckets are narrower, and the rest of the budget keeps the curve."""
    store, run_id, steps, _, spiky, odd = diverging
    table = store.read(run_id, "spiky", buckets=n, method="lttb")
    check_raw_points(table, steps, spiky, n)
    shown = set(col(table, "step").tolist())
    assert set(odd) <= shown, f"not shown: {sorted(set(odd) - shown)}"
    assert table.num_rows >= n - len(odd), "the NaN and inf points took more than their share"


def test_nan_and_inf_count_within_n_for_a_series_all_nan_and_inf(open_store):
    store = open_store()
    run = store.start_run()
    values = np.where(np.arange(500) % 2, np.nan, np.inf)
    run.log_batch("m", np.arange(500), values)
    for n in (1, 2, 3, 7, 64):
        table = store.read(run.id, "m", buckets=n, method="lttb")
        assert table.num_rows == n
        assert not np.isfinite(col(table, "value")).any()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, -2.5, 7.0, np.nan, np.inf, -np.inf]) | st.floats(-1e3, 1e3),
                min_size=1, max_size=300),
       st.integers(1, 320))
def test_lttb_indices_properties(values, n):
    """At most n indices, ascending, first and last kept (n >= 2); n exactly when all
    the values are finite and there are more than n; the first NaN or inf between the
    ends kept when n >= 3."""
    y = np.array(values, np.float64)
    x = np.arange(len(y), dtype=np.int64) * 3 - 10**18
    keep = lttb_indices(x, y, n)
    size = len(y)
    assert len(keep) == min(n, size) if np.isfinite(y).all() or n >= size else len(keep) <= n
    assert (np.diff(keep) > 0).all() and (keep >= 0).all() and (keep < size).all()
    if n >= 2:
        assert keep[0] == 0 and keep[-1] == size - 1
    else:
        assert list(keep) == [size - 1]
    odd = np.flatnonzero(~np.isfinite(y[1:-1])) + 1
    if n >= 3 and len(odd):
        assert odd[0] in keep, "the first NaN or inf is not kept"


# -- time axes --------------------------------------------------------------------------

@pytest.fixture
def timed(open_store):
    """Times that are not in step order; some NaN."""
    store = open_store()
    run = store.start_run()
    rng = np.random.default_rng(2)
    steps = np.arange(4000, dtype=np.int64)
    times = time.time_ns() + 10**9 + rng.permutation(4000).astype(np.int64) * 1_000_003
    values = np.cos(steps / 100.0)
    values[::53] = np.nan
    run.log_batch("m", steps[:3000], values[:3000], times=times[:3000])
    store.flush()
    run.log_batch("m", steps[3000:], values[3000:], times=times[3000:])   # not flushed by the test
    return store, run.id, steps, values, times


@pytest.mark.parametrize("x", ["time", "relative"])
@pytest.mark.parametrize("n", [2, 3, 50, 5000])
def test_time_axes_choose_over_time(timed, x, n):
    store, run_id, steps, values, times = timed
    table = store.read(run_id, "m", buckets=n, method="lttb", x=x)
    assert table.column_names == (["step", "time", "value", "time_ns"] if x == "time" else
                                  ["step", "time", "relative", "value", "time_ns"])
    assert table.num_rows == min(n, len(steps))
    got_times, got_steps = col(table, "time_ns"), col(table, "step")
    assert (col(table, "time") == got_times // 1000).all()
    assert (np.diff(got_times) >= 0).all(), "not in time order"
    assert got_times[0] == times.min() and got_times[-1] == times.max()
    assert (times[got_steps] == got_times).all(), "a point's time is not its own"
    assert (values[got_steps].view(np.uint64) == col(table, "value").view(np.uint64)).all()


def test_relative_is_the_time_since_the_run_started(timed):
    store, run_id, steps, values, times = timed
    table = store.read(run_id, "m", start=100, stop=2000, buckets=40, method="lttb", x="relative")
    assert table.schema.field("relative").type == pa.duration("us")
    origin = col(table, "time") - col(table, "relative")
    runs = store.runs()
    start_us = runs.column("start_time").cast(pa.int64()).to_pylist()[runs.column("id").to_pylist().index(run_id)]
    assert (origin == start_us).all(), "relative is not time minus the run's start_time"
    empty = store.read(run_id, "m", start=10**6, buckets=40, method="lttb", x="relative")
    assert empty.num_rows == 0 and empty.schema == table.schema


def test_read_many_relative_per_run(open_store):
    """Each run's points are relative to that run's own start."""
    store = open_store()
    first, second = store.start_run(), store.start_run()
    base = time.time_ns() + 10**9
    for run, offset in ((first, 0), (second, 5 * 10**9)):
        run.log_batch("m", np.arange(100), np.arange(100.0), times=base + offset + np.arange(100) * 10**6)
    table = store.read_many(runs=[first.id, second.id], metrics=["m"], buckets=10, method="lttb", x="relative")
    assert table.column_names == ["run_id", "metric", "context", "step", "time", "relative", "value", "time_ns"]
    for run in (first, second):
        part = table.filter(pa.compute.equal(table.column("run_id"), run.id))
        want = store.read(run.id, "m", buckets=10, method="lttb", x="relative")
        assert part.num_rows == want.num_rows == 10
        assert (col(part, "relative") == col(want, "relative")).all()
    relative_first = col(table.filter(pa.compute.equal(table.column("run_id"), first.id)), "relative")
    relative_second = col(table.filter(pa.compute.equal(table.column("run_id"), second.id)), "relative")
    assert relative_second[0] - relative_first[0] > 4 * 10**6   # µs later, not shifted to one origin
