"""Downsampled reads: ``Store.read(buckets=N)`` (minmax over steps, time, relative time),
LTTB, and ``Store.read_many``.

Every expectation is computed here with numpy from the points the test wrote (in write
order), never from steplog's own code: a read must behave as if it bucketed the raw
points sorted stably by step (ties in write order). Large series (300k to 1M points,
1000-point blocks) make reads take the rollup path; short ranges and few points take
the raw path; ranges whose ends are not multiples of anything cut rollup groups and
blocks. Reads that could loop forever run under ``hang_guard`` so that a hang fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import signal
import tempfile
import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steplog
from _helpers import stored_counts

BUCKET_STATS = ["count", "nan_count", "min", "max", "mean", "first", "first_step", "last", "last_step"]
POINT_COLUMNS = ["step", "time", "value", "time_ns"]
MEAN_RTOL = 1e-9
HANG_SECONDS = 2      # a correct read of the small series guarded by this takes milliseconds
TEST_SECONDS = 120    # no test here should come near this


def bucket_columns(x: str = "step") -> list[str]:
    return [f"{x}_start", f"{x}_end"] + BUCKET_STATS


# -- guards and small helpers ----------------------------------------------------------

@contextlib.contextmanager
def hang_guard(seconds: float = HANG_SECONDS):
    """Raise TimeoutError in the main thread if the body runs longer than ``seconds``
    (nests: an enclosing guard's timer is restored)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"no return within {seconds} s (an endless loop?)")

    began = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - began), 0.001))


@pytest.fixture(autouse=True)
def no_test_hangs():
    """A test that hangs (see the endless loops below) fails instead of stalling the suite."""
    with hang_guard(TEST_SECONDS):
        yield


def col(table: pa.Table, name: str) -> np.ndarray:
    """A column as numpy (timestamps and durations as int64 in their unit)."""
    column = table.column(name)
    if pa.types.is_timestamp(column.type) or pa.types.is_duration(column.type):
        column = column.cast(pa.int64())
    return np.asarray(column.to_numpy())


def fbits(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, np.float64)).view(np.uint64)


def assert_tables_equal(got: pa.Table, want: pa.Table, what: str = "") -> None:
    """Equal tables; a mean column only to MEAN_RTOL (points flushed by the background
    flusher between two reads are summed in another order)."""
    assert got.column_names == want.column_names, what
    assert got.num_rows == want.num_rows, what
    for name in want.column_names:
        if name == "mean":
            np.testing.assert_allclose(col(got, name), col(want, name), rtol=MEAN_RTOL, atol=1e-12,
                                       err_msg=f"{what} column {name}")
        else:
            np.testing.assert_array_equal(col(got, name), col(want, name), err_msg=f"{what} column {name}")


def sort_points(steps, values, times=None):
    """Write order -> stable order by step (ties stay in write order)."""
    steps = np.asarray(steps, np.int64)
    values = np.asarray(values, np.float64)
    order = np.argsort(steps, kind="stable")
    if times is None:
        return steps[order], values[order]
    return steps[order], values[order], np.asarray(times, np.int64)[order]


# -- the reference: stats of slices of step-sorted points, with numpy only ----------------

def segment_stats(steps: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Stats of the points steps/values[lo[i]:hi[i]] (points sorted by step, ties in write
    order), for every i; plus ``scale`` (mean |value| of non-NaN values) for tolerances."""
    lo = np.asarray(lo, np.int64)
    hi = np.asarray(hi, np.int64)
    n = len(lo)
    count = hi - lo
    isnan = np.isnan(values)
    cum_nan = np.concatenate(([0], np.cumsum(isnan)))
    nan_count = cum_nan[hi] - cum_nan[lo]
    valid = count - nan_count
    out = {"count": count, "nan_count": nan_count}
    mn, mx, total, abs_total = (np.full(n, np.nan) for _ in range(4))
    first, last = np.full(n, np.nan), np.full(n, np.nan)
    first_step, last_step = np.zeros(n, np.int64), np.zeros(n, np.int64)
    nonempty = count > 0
    if nonempty.any():
        idx = np.empty(2 * int(nonempty.sum()), np.int64)
        idx[0::2], idx[1::2] = lo[nonempty], hi[nonempty]
        ext = np.append(values, np.nan)            # so that an index == len(values) is valid
        zeroed = np.where(np.isnan(ext), 0.0, ext)
        mn[nonempty] = np.fmin.reduceat(ext, idx)[0::2]
        mx[nonempty] = np.fmax.reduceat(ext, idx)[0::2]
        with np.errstate(invalid="ignore", over="ignore"):
            total[nonempty] = np.add.reduceat(zeroed, idx)[0::2]
            abs_total[nonempty] = np.add.reduceat(np.abs(zeroed), idx)[0::2]
        first[nonempty] = values[lo[nonempty]]
        first_step[nonempty] = steps[lo[nonempty]]
        last[nonempty] = values[hi[nonempty] - 1]
        last_step[nonempty] = steps[hi[nonempty] - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid > 0, total / np.maximum(valid, 1), np.nan)
        scale = np.where(valid > 0, abs_total / np.maximum(valid, 1), 0.0)
    out.update(min=mn, max=mx, mean=mean, first=first, first_step=first_step, last=last, last_step=last_step,
               scale=scale)
    return out


def assert_stats(table: pa.Table, want: dict, *, ties_in_any_order: np.ndarray | None = None) -> None:
    """Compare the stat columns of ``table`` with ``want`` (from segment_stats).

    ties_in_any_order: sorted steps of all points, given when points at equal steps may
    have been written in either order (two processes); first/last are then compared only
    where their step is unique."""
    for name in ("count", "nan_count", "first_step", "last_step"):
        np.testing.assert_array_equal(col(table, name), want[name], err_msg=name)
    for name in ("min", "max"):
        np.testing.assert_array_equal(col(table, name), want[name], err_msg=name)
    got_mean = col(table, "mean")
    want_mean = want["mean"]
    with np.errstate(invalid="ignore"):
        ok = ((np.isnan(got_mean) & np.isnan(want_mean)) | (got_mean == want_mean)
              | (np.abs(got_mean - want_mean) <= MEAN_RTOL * np.maximum(np.abs(want_mean), want["scale"])))
    assert ok.all(), (f"mean differs in rows {np.flatnonzero(~ok)[:10]}: got {got_mean[~ok][:5]}, "
                      f"want {want_mean[~ok][:5]}")
    for name, step_name in (("first", "first_step"), ("last", "last_step")):
        got, expected = col(table, name), want[name]
        if ties_in_any_order is not None:
            at = want[step_name]
            unique = (np.searchsorted(ties_in_any_order, at, "right")
                      - np.searchsorted(ties_in_any_order, at, "left")) == 1
            got, expected = got[unique], expected[unique]
        np.testing.assert_array_equal(got, expected, err_msg=name)


def check_step_buckets(table: pa.Table, steps, values, start, stop, n, *, sorted_points=None,
                       ties_in_any_order: bool = False) -> None:
    """Everything ``read(start=, stop=, buckets=n)`` (minmax, x="step") must satisfy for
    the points ``steps``/``values`` (write order)."""
    s_steps, s_values = sorted_points if sorted_points is not None else sort_points(steps, values)
    assert table.column_names == bucket_columns("step")
    assert table.num_rows <= n, f"{table.num_rows} rows for buckets={n}"
    first_in = 0 if start is None else int(np.searchsorted(s_steps, start, "left"))
    end_in = len(s_steps) if stop is None else int(np.searchsorted(s_steps, stop, "left"))
    total = max(end_in - first_in, 0)
    if total == 0:
        assert table.num_rows == 0, "no point in range but rows returned"
        return
    starts, ends = col(table, "step_start"), col(table, "step_end")
    assert table.num_rows >= 1
    assert (starts < ends).all(), "a bucket with step_end <= step_start"
    assert (ends[:-1] <= starts[1:]).all(), "buckets overlap or are out of order"
    if start is not None:
        assert starts[0] >= start
    if stop is not None:
        assert ends[-1] <= stop
    # widths: every bucket not cut by an end of the range has the same width, and all
    # bucket edges lie on one grid of that width (left-out empty buckets are whole)
    lo_eff = start if start is not None else int(s_steps[0])
    hi_eff = stop if stop is not None else int(s_steps[-1]) + 1
    widths = ends - starts
    whole = (starts != lo_eff) & (ends != hi_eff)
    if whole.any():
        width = widths[whole][0]
        assert (widths[whole] == width).all(), f"bucket widths differ: {np.unique(widths)}"
        assert (widths <= width).all(), f"a cut bucket wider than the others: {np.unique(widths)}"
        edges = np.concatenate((starts[1:], ends[:-1]))
        if len(edges):   # Python ints: edges may lie 2**64 apart
            assert all((int(e) - int(edges[0])) % int(width) == 0 for e in edges), \
                "bucket edges off the grid of the bucket width"
    # exact stats over the raw points of each bucket; the counts add up to the range
    lo = np.searchsorted(s_steps, starts, "left")
    hi = np.searchsorted(s_steps, ends, "left")
    want = segment_stats(s_steps, s_values, lo, hi)
    assert int(col(table, "count").sum()) == total, "bucket counts do not add up to the points in range"
    assert (want["count"] > 0).all(), "an empty bucket was returned"
    assert_stats(table, want, ties_in_any_order=s_steps if ties_in_any_order else None)


def check_time_buckets(table: pa.Table, steps, values, times, start, stop, n, x: str, origin_us: int = 0,
                       ties_in_any_order: bool = False) -> None:
    """``read(x="time"|"relative", buckets=n)``: rows over the axis of whole microseconds,
    time // 1000 - origin_us."""
    steps, values, times = (np.asarray(a, t) for a, t in ((steps, np.int64), (values, np.float64),
                                                          (times, np.int64)))
    keep = np.ones(len(steps), bool)
    if start is not None:
        keep &= steps >= start
    if stop is not None:
        keep &= steps < stop
    steps, values, axis = steps[keep], values[keep], times[keep] // 1000 - origin_us
    assert table.column_names == bucket_columns(x)
    assert table.num_rows <= n
    if not len(steps):
        assert table.num_rows == 0
        return
    kind = pa.types.is_timestamp if x == "time" else pa.types.is_duration
    for name in (f"{x}_start", f"{x}_end"):
        assert kind(table.column(name).type), f"{name} has type {table.column(name).type}"
    starts, ends = col(table, f"{x}_start"), col(table, f"{x}_end")
    assert (starts < ends).all()
    assert (ends[:-1] <= starts[1:]).all()
    assert int(col(table, "count").sum()) == len(steps)
    rows = []
    for s, e in zip(starts, ends):
        inside = (axis >= s) & (axis < e)
        b_steps, b_values = sort_points(steps[inside], values[inside])
        rows.append(segment_stats(b_steps, b_values, [0], [len(b_steps)]))
    want = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    assert (want["count"] > 0).all(), "an empty bucket was returned"
    assert_stats(table, want, ties_in_any_order=np.sort(steps) if ties_in_any_order else None)


def check_lttb(table: pa.Table, s_steps, s_values, start, stop, n) -> None:
    """``read(method="lttb", buckets=n)``: at most n raw points, sorted by step, first and last kept."""
    assert table.column_names == POINT_COLUMNS
    first_in = 0 if start is None else int(np.searchsorted(s_steps, start, "left"))
    end_in = len(s_steps) if stop is None else int(np.searchsorted(s_steps, stop, "left"))
    total = max(end_in - first_in, 0)
    assert table.num_rows <= n
    if total == 0:
        assert table.num_rows == 0
        return
    got_steps, got_values = col(table, "step"), col(table, "value")
    assert (np.diff(got_steps) >= 0).all(), "LTTB points not sorted by step"
    if total <= n:
        np.testing.assert_array_equal(got_steps, s_steps[first_in:end_in])
        np.testing.assert_array_equal(fbits(got_values), fbits(s_values[first_in:end_in]))
        return
    for step, value in zip(got_steps, got_values):     # every point is a raw point in range
        a, b = np.searchsorted(s_steps, step, "left"), np.searchsorted(s_steps, step, "right")
        assert first_in <= a < b <= end_in, f"step {step} is not a step in range"
        assert fbits([value])[0] in set(fbits(s_values[a:b]).tolist()), f"({step}, {value}) is not a raw point"
    if n >= 2:
        assert (got_steps[0], fbits([got_values[0]])[0]) == (s_steps[first_in], fbits([s_values[first_in]])[0])
        assert (got_steps[-1], fbits([got_values[-1]])[0]) == (s_steps[end_in - 1],
                                                                fbits([s_values[end_in - 1]])[0])


# -- a large series with everything in it (shared by the module) ------------------------

BIG_N = 1_000_000
SPIKE_STEP, SPIKE = 777_777, 1e6
NEG_LO, NEG_HI = -150_000, 150_000


class Big:
    pass


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """One open store: run "big" with
    loss: 1M dense steps over 2 flushes, NaNs (1% and an all-NaN stretch), +-inf, a spike;
          then 50k out-of-order duplicate steps (flushed), then 20k out-of-order points,
          some past the stored range (log_batch, not flushed), then 300 more logged one
          by one (-10 to 1.06M) that stay in the store's buffer;
    neg:  300k dense steps from -150000 to 149999."""
    path = tmp_path_factory.mktemp("big") / "big.steplog"
    store = steplog.open(path, block_points=1000, flush_interval=None)
    run = store.start_run(experiment="big")
    rng = np.random.default_rng(20240601)
    steps = np.arange(BIG_N, dtype=np.int64)
    values = rng.normal(size=BIG_N)
    values[rng.random(BIG_N) < 0.01] = np.nan
    values[600_000:610_000] = np.nan          # whole rollup groups with no value
    values[100_000], values[100_500], values[200_000] = np.inf, -np.inf, np.inf
    values[SPIKE_STEP] = SPIKE
    dup_steps = rng.integers(0, BIG_N, 50_000)
    dup_values = rng.normal(size=50_000)
    tail_steps = rng.integers(0, BIG_N + 50_000, 20_000)
    tail_values = rng.normal(size=20_000)
    tail_values[::97] = np.nan
    run.log_batch("loss", steps[:400_000], values[:400_000])
    store.flush()
    run.log_batch("loss", steps[400_000:], values[400_000:])
    store.flush()
    run.log_batch("loss", dup_steps, dup_values)
    store.flush()
    neg_steps = np.arange(NEG_LO, NEG_HI, dtype=np.int64)
    neg_values = np.sin(neg_steps / 1000.0) + rng.normal(scale=0.01, size=len(neg_steps))
    run.log_batch("neg", neg_steps, neg_values)
    store.flush()
    run.log_batch("loss", tail_steps, tail_values)     # queued: the flusher writes it in the background
    buffered_steps = rng.integers(-10, BIG_N + 60_000, 300)
    buffered_values = rng.normal(size=300)
    for step, value in zip(buffered_steps.tolist(), buffered_values.tolist()):
        run.log("loss", value, step=step)              # stays in the buffer: unflushed
    b = Big()
    b.store, b.run_id = store, run.id
    b.steps = np.concatenate((steps, dup_steps, tail_steps, buffered_steps))
    b.values = np.concatenate((values, dup_values, tail_values, buffered_values))
    flushed = stored_counts(store, run.id)[("loss", None)]
    assert flushed <= len(b.steps) - 300, "the last 300 points should still be buffered"
    b.sorted = sort_points(b.steps, b.values)
    b.neg_steps, b.neg_values = neg_steps, neg_values
    b.neg_sorted = sort_points(neg_steps, neg_values)
    yield b
    store.close()


BIG_RANGES = [
    (None, None),
    (0, BIG_N),
    (123_457, 876_543),          # both ends cut rollup groups and blocks
    (-5_000_000, 5_000_000),     # beyond the data on both sides
    (999_000, 1_100_000),        # the stored end, then only unflushed points
    (500_001, 500_999),          # short: raw path
    (777_000, 778_000),
    (345_678, 345_679),          # one step
    (99_999, 100_501),           # +inf and -inf
    (600_100, 609_900),          # all NaN but the duplicates
    (None, 250_001),
    (654_321, None),
    (-10, 3),                    # only buffered points below step 0
    (1_050_000, 1_060_000),      # only buffered points
]


@pytest.mark.parametrize("n", [7, 100, 1000])
@pytest.mark.parametrize("start, stop", BIG_RANGES)
def test_minmax_buckets_of_a_large_series(big, start, stop, n):
    table = big.store.read(big.run_id, "loss", start=start, stop=stop, buckets=n)
    check_step_buckets(table, big.steps, big.values, start, stop, n, sorted_points=big.sorted)


@pytest.mark.parametrize("n", [2, 7, 1000])
@pytest.mark.parametrize("start, stop", [(None, None), (-123_457, 98_765), (NEG_LO, 0), (-1000, 1000),
                                         (0, None), (-10**7, -NEG_LO - 1), (-149_999, -149_000)])
def test_minmax_buckets_of_negative_steps(big, start, stop, n):
    table = big.store.read(big.run_id, "neg", start=start, stop=stop, buckets=n)
    check_step_buckets(table, big.neg_steps, big.neg_values, start, stop, n, sorted_points=big.neg_sorted)


def test_rollup_path_and_raw_path_are_both_exercised(big, monkeypatch):
    """A guard on this file's coverage: wide ranges are read from rollups, short ones from points."""
    from steplog.query import reader

    calls = []
    original = reader.SeriesReader._add_rollups

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(reader.SeriesReader, "_add_rollups", spy)
    table = big.store.read(big.run_id, "loss", start=123_457, stop=876_543, buckets=1000)   # 753 steps a bucket
    assert calls, "a range of 753 steps a bucket over dense steps should be read from rollups"
    check_step_buckets(table, big.steps, big.values, 123_457, 876_543, 1000, sorted_points=big.sorted)
    calls.clear()
    table = big.store.read(big.run_id, "loss", start=500_001, stop=600_000, buckets=1000)   # 100 steps a bucket
    assert not calls, "100 steps a bucket should be bucketed from the raw points"
    check_step_buckets(table, big.steps, big.values, 500_001, 600_000, 1000, sorted_points=big.sorted)


@pytest.mark.parametrize("start, stop, n", [(None, None, 7), (None, None, 100), (None, None, 1000),
                                            (700_000, 850_000, 7), (770_000, 790_001, 50),
                                            (777_000, 778_000, 7), (777_700, 777_800, 3),
                                            (777_777, 777_778, 1), (SPIKE_STEP - 5000, None, 20)])
def test_spike_is_the_max_of_its_bucket_at_every_zoom(big, start, stop, n):
    table = big.store.read(big.run_id, "loss", start=start, stop=stop, buckets=n)
    starts, ends, maxes = col(table, "step_start"), col(table, "step_end"), col(table, "max")
    holding = np.flatnonzero((starts <= SPIKE_STEP) & (SPIKE_STEP < ends))
    assert len(holding) == 1, "no (or several) buckets hold the spike's step"
    assert maxes[holding[0]] == SPIKE
    assert (maxes == SPIKE).sum() == 1


def test_nan_and_inf_in_buckets(big):
    # the row over [99_999, 100_501) holds +inf (100_000) and -inf (100_500): min/max are
    # infinite and the sum, hence the mean, is NaN
    table = big.store.read(big.run_id, "loss", start=99_999, stop=100_501, buckets=1)
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["min"] == -np.inf and row["max"] == np.inf
    assert np.isnan(row["mean"])
    # only +inf: max and mean are +inf
    table = big.store.read(big.run_id, "loss", start=199_990, stop=200_010, buckets=1)
    row = table.to_pylist()[0]
    assert row["max"] == np.inf and row["mean"] == np.inf
    # the all-NaN stretch (the 50k duplicate steps may land in it: compare with numpy)
    for n in (1, 9, 50):
        table = big.store.read(big.run_id, "loss", start=600_000, stop=610_000, buckets=n)
        check_step_buckets(table, big.steps, big.values, 600_000, 610_000, n, sorted_points=big.sorted)


def test_all_nan_buckets_have_nan_min_max_mean(open_store):
    store = open_store(block_points=1000)
    run = store.start_run()
    steps = np.arange(20_000)
    values = np.where((steps >= 4096) & (steps < 12_288), np.nan, 1.0)
    run.log_batch("m", steps, values)
    store.flush()
    for n, (start, stop) in [(5, (None, None)), (3, (4096, 12_288)), (40, (4000, 13_000)), (2, (5000, 5100))]:
        table = store.read(run.id, "m", start=start, stop=stop, buckets=n)
        check_step_buckets(table, steps, values, start, stop, n)
    table = store.read(run.id, "m", start=4096, stop=12_288, buckets=2)
    assert table.num_rows >= 1
    assert (col(table, "nan_count") == col(table, "count")).all()
    for name in ("min", "max", "mean", "first", "last"):
        assert np.isnan(col(table, name)).all(), name


# -- small cases ------------------------------------------------------------------------

def test_empty_ranges_and_missing_series_return_no_rows(open_store):
    store = open_store()
    run = store.start_run()
    run.log_batch("m", np.arange(100, 200), np.ones(100))
    store.flush()
    run.log_batch("u", np.arange(100, 200), np.ones(100))       # unflushed only
    for name in ("m", "u", "never-logged"):
        for start, stop in [(150, 150), (160, 150), (0, 100), (200, 10**6), (-10**9, -10**8), (None, 100),
                            (200, None)]:
            for n in (1, 4):
                table = store.read(run.id, name, start=start, stop=stop, buckets=n, missing_ok=True)
                assert table.num_rows == 0, (name, start, stop, n)
                assert table.column_names == bucket_columns("step")
                table = store.read(run.id, name, start=start, stop=stop, buckets=n, method="lttb",
                                   missing_ok=True)
                assert table.num_rows == 0 and table.column_names == POINT_COLUMNS
                table = store.read(run.id, name, start=start, stop=stop, buckets=n, method="lttb",
                                   x="relative", missing_ok=True)
                assert table.num_rows == 0 and table.column_names == ["step", "time", "relative", "value", "time_ns"]
    # a run with no series at all
    other = store.start_run()
    assert store.read(other.id, "m", buckets=3, missing_ok=True).num_rows == 0


@pytest.mark.parametrize("flushed", [False, True])
@pytest.mark.parametrize("value", [2.5, float("nan"), float("-inf")])
def test_single_point_series(open_store, flushed, value):
    store = open_store()
    run = store.start_run()
    run.log("m", value, step=42)
    if flushed:
        store.flush()
    table = store.read(run.id, "m", buckets=5)
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert (row["step_start"], row["step_end"], row["count"]) == (42, 43, 1)
    assert row["nan_count"] == int(np.isnan(value))
    assert row["first_step"] == row["last_step"] == 42
    for name in ("min", "max", "mean", "first", "last"):
        np.testing.assert_array_equal(row[name], value, err_msg=name)
    for start, stop, n in [(0, 100, 1), (42, 43, 1), (-10**6, 10**6, 3), (-10**6, 10**6, 1000), (43, 100, 2),
                           (0, 42, 2), (None, 42, 1), (42, None, 1)]:
        table = store.read(run.id, "m", start=start, stop=stop, buckets=n)
        check_step_buckets(table, [42], [value], start, stop, n)
        check_lttb(store.read(run.id, "m", start=start, stop=stop, buckets=n, method="lttb"),
                   np.array([42]), np.array([value]), start, stop, n)


@pytest.mark.parametrize("flush", ["none", "first", "both"])
def test_out_of_order_and_duplicate_steps_in_a_second_batch(open_store, flush):
    """The second log_batch repeats steps of the first (and itself) and goes back in steps;
    equal steps: first is the earliest written, last the latest. Unflushed points are
    read through the same store."""
    store = open_store(block_points=1000)
    run = store.start_run()
    rng = np.random.default_rng(7)
    s1 = np.arange(20_000, dtype=np.int64)
    v1 = rng.normal(size=len(s1))
    s2 = np.concatenate((rng.integers(0, 20_000, 3000), [0, 0, 19_999, 19_999, 5000, 5000, 25_000, 20_100]))
    v2 = rng.normal(size=len(s2)) + 10.0
    v2[::50] = np.nan
    run.log_batch("m", s1, v1)
    if flush in ("first", "both"):
        store.flush()
    run.log_batch("m", s2, v2)
    s3 = np.concatenate((rng.integers(0, 21_000, 200), [0, 19_999, 5000]))   # logged one by one: buffered
    v3 = rng.normal(size=len(s3)) - 10.0
    for step, value in zip(s3.tolist(), v3.tolist()):
        run.log("m", value, step=step)
    if flush == "both":
        store.flush()
    else:
        flushed = sum(stored_counts(store, run.id).values())
        assert flushed <= len(s1) + len(s2), "the points logged one by one should still be buffered"
    steps, values = np.concatenate((s1, s2, s3)), np.concatenate((v1, v2, v3))
    for start, stop in [(None, None), (1234, 17_777), (5000, 5001), (0, 1), (19_999, 30_000), (0, 600),
                        (20_000, None)]:
        for n in (1, 3, 7, 40, 400):
            table = store.read(run.id, "m", start=start, stop=stop, buckets=n)
            check_step_buckets(table, steps, values, start, stop, n)
    # the tie rules, spelled out: step 0 was written by batch 1, then by batch 2, then by log()
    row = store.read(run.id, "m", start=0, stop=1, buckets=1).to_pylist()[0]
    assert row["count"] == int((steps == 0).sum())
    assert row["first"] == v1[0]
    assert row["last"] == v3[s3 == 0][-1]


def test_reopen_after_close_and_resume(open_store, store_path):
    rng = np.random.default_rng(11)
    store = open_store(block_points=1000)
    run = store.start_run()
    run_id = run.id
    parts = [(np.arange(0, 150_000), rng.normal(size=150_000)),
             (np.arange(150_000, 300_000), rng.normal(size=150_000)),
             (rng.integers(-1000, 310_000, 5000), rng.normal(size=5000) * 100)]
    for s, v in parts:
        run.log_batch("m", s, v)
        store.flush()
    steps = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    queries = [(None, None, 7), (None, None, 1000), (1111, 298_765, 100), (-5000, 5000, 3), (299_000, None, 10),
               (77_777, 78_999, 64)]
    before = [store.read(run_id, "m", start=a, stop=b, buckets=n) for a, b, n in queries]
    store.close()
    store = open_store(block_points=1000)
    for (a, b, n), old in zip(queries, before):
        table = store.read(run_id, "m", start=a, stop=b, buckets=n)
        check_step_buckets(table, steps, values, a, b, n)
        assert_tables_equal(table, old, f"after reopen {a, b, n}")
    # the resumed run gets more points, some flushed and some not
    run = store.run(run_id)
    more = (rng.integers(0, 320_000, 3000), rng.normal(size=3000))
    run.log_batch("m", *more)
    store.flush()
    last = (np.array([5, 5, 299_999, 400_000]), np.array([1e3, -1e3, 7.0, 8.0]))
    for step, value in zip(*(a.tolist() for a in last)):
        run.log("m", value, step=step)                  # buffered
    steps = np.concatenate((steps, more[0], last[0]))
    values = np.concatenate((values, more[1], last[1]))
    for a, b, n in queries + [(None, None, 2)]:
        check_step_buckets(store.read(run_id, "m", start=a, stop=b, buckets=n), steps, values, a, b, n)


# -- two processes ------------------------------------------------------------------------

TWO_PROC_POINTS = 100_000
TWO_PROC_CHUNK = 30_000


def two_proc_points(which: int, base_ns: int):
    """Points of writer ``which`` (0 or 1): even or odd steps, plus every multiple of 1000
    (written by both: ties across processes), in shuffled chunks."""
    rng = np.random.default_rng(100 + which)
    own = np.arange(which, 2 * TWO_PROC_POINTS, 2, dtype=np.int64)
    shared = np.arange(0, 2 * TWO_PROC_POINTS, 1000, dtype=np.int64)
    steps = np.concatenate((own, shared))
    steps = steps[rng.permutation(len(steps))] if which else steps
    values = rng.normal(size=len(steps)) + which
    values[rng.random(len(steps)) < 0.002] = np.nan
    times = base_ns + steps * 1000 + which
    return steps, values, times


def two_proc_writer(path: str, run_id: str, which: int, base_ns: int) -> None:
    steps, values, times = two_proc_points(which, base_ns)
    store = steplog.open(path, block_points=1000, flush_interval=None)
    try:
        run = store.run(run_id)
        for lo in range(0, len(steps), TWO_PROC_CHUNK):
            hi = lo + TWO_PROC_CHUNK
            run.log_batch("loss", steps[lo:hi], values[lo:hi], times=times[lo:hi])
            store.flush()
    finally:
        store.close()


def test_series_written_by_two_processes(open_store, store_path):
    store = open_store(block_points=1000)
    run_id = store.start_run().id
    store.close()
    base_ns = time.time_ns()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=two_proc_writer, args=(str(store_path), run_id, which, base_ns)) for which in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    parts = [two_proc_points(which, base_ns) for which in (0, 1)]
    steps = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    times = np.concatenate([p[2] for p in parts])
    store = open_store(block_points=1000)
    assert store.read(run_id, "loss").num_rows == len(steps)
    sorted_points = sort_points(steps, values)
    for start, stop, n in [(None, None, 7), (None, None, 1000), (1, 299_999, 50), (123_457, 234_567, 100),
                           (5000, 5001, 1), (4990, 5010, 4), (-100, 10**6, 13)]:
        table = store.read(run_id, "loss", start=start, stop=stop, buckets=n)
        check_step_buckets(table, steps, values, start, stop, n, sorted_points=sorted_points,
                           ties_in_any_order=True)
    for start, stop, n in [(None, None, 16), (1000, 150_000, 5)]:
        table = store.read(run_id, "loss", start=start, stop=stop, buckets=n, x="time")
        check_time_buckets(table, steps, values, times, start, stop, n, "time", ties_in_any_order=True)


# -- LTTB ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 100, 1000])
@pytest.mark.parametrize("start, stop", [(None, None), (123_457, 876_543), (500_001, 500_999), (-10, 5),
                                         (999_990, None)])
def test_lttb_of_a_large_series(big, start, stop, n):
    table = big.store.read(big.run_id, "loss", start=start, stop=stop, buckets=n, method="lttb")
    check_lttb(table, *big.sorted, start, stop, n)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 49, 50, 60])
def test_lttb_small_n(open_store, n):
    """n=2 must give the first and the last point; n=1 at most one point."""
    store = open_store()
    run = store.start_run()
    steps = np.arange(50)
    values = np.cos(steps / 3.0)
    values[0], values[-1], values[10] = np.nan, np.inf, np.nan   # first/last are kept whatever their value
    run.log_batch("m", steps, values)
    store.flush()
    table = store.read(run.id, "m", buckets=n, method="lttb")
    check_lttb(table, steps, values, None, None, n)


def test_lttb_with_unflushed_duplicates_and_ranges(open_store):
    store = open_store()
    run = store.start_run()
    rng = np.random.default_rng(3)
    s1, v1 = np.arange(0, 3000, 2), rng.normal(size=1500)
    s2, v2 = rng.integers(-50, 3100, 800), rng.normal(size=800)
    run.log_batch("m", s1, v1)
    store.flush()
    run.log_batch("m", s2, v2)
    s_steps, s_values = sort_points(np.concatenate((s1, s2)), np.concatenate((v1, v2)))
    for start, stop in [(None, None), (100, 2900), (-50, -49), (1500, 1501)]:
        for n in (3, 17, 300, 5000):
            table = store.read(run.id, "m", start=start, stop=stop, buckets=n, method="lttb")
            check_lttb(table, s_steps, s_values, start, stop, n)


# -- time axes ----------------------------------------------------------------------------

@pytest.fixture
def timed(open_store):
    """A series with given times that are not in step order, duplicate steps, NaNs; the
    second batch is not flushed by the test (the background flusher may write it)."""
    store = open_store()
    run = store.start_run()
    rng = np.random.default_rng(5)
    now = time.time_ns()
    s1 = np.arange(3000, dtype=np.int64)
    t1 = now + rng.permutation(3000).astype(np.int64) * 1_000_003 + 10**9
    v1 = rng.normal(size=3000)
    v1[::37] = np.nan
    s2 = rng.integers(0, 3200, 500)
    t2 = now + rng.integers(0, 4 * 10**9, 500)
    v2 = rng.normal(size=500)
    v2[5] = np.inf
    run.log_batch("m", s1, v1, times=t1)
    store.flush()
    run.log_batch("m", s2, v2, times=t2)
    steps, values, times = (np.concatenate(p) for p in ((s1, s2), (v1, v2), (t1, t2)))
    return store, run.id, steps, values, times


TIME_QUERIES = [(None, None, 1), (None, None, 5), (None, None, 64), (500, 2500, 7), (0, 1, 3), (2999, 10**6, 9),
                (10**6, 10**7, 4)]


@pytest.mark.parametrize("start, stop, n", TIME_QUERIES)
def test_time_axis(timed, start, stop, n):
    store, run_id, steps, values, times = timed
    table = store.read(run_id, "m", start=start, stop=stop, buckets=n, x="time")
    check_time_buckets(table, steps, values, times, start, stop, n, "time")


@pytest.mark.parametrize("start, stop, n", TIME_QUERIES)
def test_relative_axis(timed, start, stop, n):
    """relative = time - the run's start_time, in the microseconds both tables show: the
    origin taken from the rows (time_start - relative_start, the same for every row) is
    the start_time store.runs() gives."""
    store, run_id, steps, values, times = timed
    by_time = store.read(run_id, "m", start=start, stop=stop, buckets=n, x="time")
    table = store.read(run_id, "m", start=start, stop=stop, buckets=n, x="relative")
    assert table.num_rows == by_time.num_rows
    if not table.num_rows:
        check_time_buckets(table, steps, values, times, start, stop, n, "relative")
        return
    runs = store.runs()
    start_us = runs.column("start_time").cast(pa.int64()).to_pylist()[runs.column("id").to_pylist().index(run_id)]
    origin = col(by_time, "time_start") - col(table, "relative_start")
    assert (origin == origin[0]).all()
    assert (col(by_time, "time_end") - col(table, "relative_end") == origin[0]).all()
    assert int(origin[0]) == start_us, "relative origin is not the run's start_time"
    check_time_buckets(table, steps, values, times, start, stop, n, "relative", origin_us=start_us)


@pytest.mark.parametrize("x", ["time", "relative"])
def test_time_axis_empty_result_keeps_column_types(timed, x):
    """An empty result has the same schema as a non-empty one (timestamp / duration)."""
    store, run_id, *_ = timed
    full = store.read(run_id, "m", buckets=4, x=x)
    empty = store.read(run_id, "m", start=10**6, stop=10**7, buckets=4, x=x)
    assert empty.num_rows == 0
    assert empty.schema == full.schema


# -- read_many ----------------------------------------------------------------------------

@pytest.fixture
def many(open_store):
    """Runs a1, a2 (experiment "a") and b1 ("b"); metrics loss, loss{split: val}, acc;
    some points unflushed (b1's loss entirely). Unflushed points are logged one by one so
    that they stay in the buffer: a series the background flusher writes between two
    reads may be bucketed differently by them (raw path while only buffered, rollups
    once stored), which would make read_many and read differ for no fault of read_many."""
    store = open_store(block_points=500)
    rng = np.random.default_rng(9)
    runs = {"a1": store.start_run(experiment="a"), "a2": store.start_run(experiment="a"),
            "b1": store.start_run(experiment="b")}
    for i, (label, run) in enumerate(runs.items()):
        if label != "b1":
            run.log_batch("loss", np.arange(6000), rng.normal(size=6000) + i)
            run.log_batch("loss", np.arange(2000, 2500), rng.normal(size=500), context={"split": "val"})
        run.log_batch("acc", np.arange(0, 9000, 3), rng.random(3000))
    store.flush()
    for label, steps, context in (("a1", rng.integers(0, 7000, 300), None),
                                  ("a2", np.arange(2400, 2600), {"split": "val"}),
                                  ("b1", np.arange(-100, 4000, 11), None)):
        for step, value in zip(steps.tolist(), rng.normal(size=len(steps)).tolist()):
            runs[label].log("loss", value, step=step, context=context)
    flushed = stored_counts(store, runs["a1"].id)
    assert flushed[("loss", None)] == 6000, "a1's last 300 loss points should still be buffered"
    return store, {label: run.id for label, run in runs.items()}


def series_of(table: pa.Table) -> dict:
    """{(run_id, metric, context JSON or None): rows without the three label columns}."""
    labels = list(zip(*(table.column(c).to_pylist() for c in ("run_id", "metric", "context"))))
    out = {}
    for key in dict.fromkeys(labels):
        rows = np.array([label == key for label in labels])
        out[key] = table.filter(pa.array(rows)).drop_columns(["run_id", "metric", "context"])
    return out


def check_read_many(store, table, keys, **kwargs):
    """Each (run, metric, context) of ``keys`` has the rows of store.read(...); no other series appears."""
    assert table.column_names[:3] == ["run_id", "metric", "context"]
    groups = series_of(table)
    assert set(groups) <= set(keys), set(groups) - set(keys)
    for key in keys:
        run_id, metric, context = key
        want = store.read(run_id, metric, context=None if context is None else json.loads(context), **kwargs)
        assert table.column_names[3:] == want.column_names
        if key in groups:
            assert_tables_equal(groups[key], want, f"{key}")
        else:
            assert want.num_rows == 0, f"{key} missing from read_many"


VAL = json.dumps({"split": "val"}, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("kwargs", [dict(start=100, stop=4000, buckets=7), dict(buckets=50),
                                    dict(start=2450, stop=2550, buckets=3), dict(start=-100, stop=10, buckets=2),
                                    dict(), dict(start=10, stop=3000),
                                    dict(start=0, stop=5000, buckets=10, method="lttb")])
def test_read_many_equals_read_per_series(many, kwargs):
    store, ids = many
    table = store.read_many(runs=[ids["a1"], ids["a2"], ids["b1"]], metrics=["loss"], **kwargs)
    keys = [(ids["a1"], "loss", None), (ids["a1"], "loss", VAL), (ids["a2"], "loss", None),
            (ids["a2"], "loss", VAL), (ids["b1"], "loss", None)]
    check_read_many(store, table, keys, **kwargs)
    assert set(series_of(table)) == set(keys) or "stop" in kwargs   # every series has points somewhere


def test_read_many_contexts_are_separate_series(many):
    store, ids = many
    table = store.read_many(runs=[ids["a2"]], metrics=["loss"], start=2000, stop=2600, buckets=1)
    groups = series_of(table)
    assert set(groups) == {(ids["a2"], "loss", None), (ids["a2"], "loss", VAL)}
    assert groups[(ids["a2"], "loss", VAL)].column("count").to_pylist() == [700]
    assert groups[(ids["a2"], "loss", None)].column("count").to_pylist() == [600]


def test_read_many_experiment_and_default_filters(many):
    store, ids = many
    a_keys = [(ids[r], m, c) for r in ("a1", "a2") for m, c in (("loss", None), ("loss", VAL), ("acc", None))]
    table = store.read_many(experiment="a", buckets=5)
    check_read_many(store, table, a_keys, buckets=5)
    assert set(series_of(table)) == set(a_keys)
    table = store.read_many(experiment="b", metrics=["acc"], start=30, stop=60, buckets=2)
    check_read_many(store, table, [(ids["b1"], "acc", None)], start=30, stop=60, buckets=2)
    assert set(table.column("run_id").to_pylist()) == {ids["b1"]}
    table = store.read_many(buckets=4)        # everything
    all_keys = a_keys + [(ids["b1"], "loss", None), (ids["b1"], "acc", None)]
    check_read_many(store, table, all_keys, buckets=4)
    assert set(series_of(table)) == set(all_keys)
    with pytest.raises(steplog.NotFoundError, match="experiment: no experiment 'nobody'"):
        store.read_many(experiment="nobody", buckets=4)
    assert store.read_many(experiment="nobody", buckets=4, missing_ok=True).num_rows == 0
    with pytest.raises(steplog.NotFoundError, match="metrics: no metric 'acx'; did you mean 'acc'"):
        store.read_many(runs=[ids["a1"]], metrics=["loss", "acx"], buckets=4)
    assert store.read_many(runs=[ids["a1"]], metrics=["nothing"], buckets=4, missing_ok=True).num_rows == 0


def test_read_many_unknown_run_raises_not_found(many):
    store, ids = many
    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(steplog.NotFoundError) as info:
        store.read_many(runs=[ids["a1"], unknown], buckets=3)
    assert unknown in str(info.value)


def test_read_many_unknown_run_from_an_iterator_names_it(many):
    """runs may be any iterable; the error names the unknown id however it was given."""
    store, ids = many
    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(steplog.NotFoundError) as info:
        store.read_many(runs=iter([ids["a1"], unknown]), buckets=3)
    assert unknown in str(info.value)


@pytest.mark.parametrize("x", ["time", "relative"])
def test_read_many_time_axis_with_a_series_empty_in_range(many, x):
    """loss{split: val} has no point in [3000, 4000) while the other series do."""
    store, ids = many
    table = store.read_many(runs=[ids["a1"], ids["a2"]], metrics=["loss"], start=3000, stop=4000, buckets=5, x=x)
    keys = [(ids[r], "loss", c) for r in ("a1", "a2") for c in (None, VAL)]
    check_read_many(store, table, keys, start=3000, stop=4000, buckets=5, x=x)


@pytest.mark.parametrize("x", ["time", "relative"])
def test_read_many_time_axis(many, x):
    store, ids = many
    table = store.read_many(runs=[ids["a1"], ids["b1"]], metrics=["loss"], start=0, stop=3000, buckets=5, x=x)
    keys = [(ids["a1"], "loss", None), (ids["a1"], "loss", VAL), (ids["b1"], "loss", None)]
    check_read_many(store, table, keys, start=0, stop=3000, buckets=5, x=x)


# -- bad arguments ------------------------------------------------------------------------

BAD = [
    (dict(buckets=0), ValueError, "buckets"),
    (dict(buckets=-3), ValueError, "buckets"),
    (dict(buckets="10"), TypeError, "buckets"),
    (dict(buckets=2.5), TypeError, "buckets"),
    (dict(buckets=10, method="x"), ValueError, "method"),
    (dict(buckets=10, x="bogus"), ValueError, "x"),
    (dict(method="lttb"), ValueError, "buckets"),
]


@pytest.mark.parametrize("kwargs, base, argument", BAD)
@pytest.mark.parametrize("call", ["read", "read_many"])
def test_bad_arguments_raise_typed_errors(open_store, call, kwargs, base, argument):
    store = open_store()
    run = store.start_run()
    run.log_batch("m", np.arange(10), np.ones(10))
    with pytest.raises(steplog.StepLogError) as info:
        if call == "read":
            store.read(run.id, "m", **kwargs)
        else:
            store.read_many(runs=[run.id], **kwargs)
    error = info.value
    assert isinstance(error, base), type(error).__mro__
    assert getattr(error, "argument", None) == argument, str(error)
    assert argument in str(error)


# -- library bugs found while writing these tests (kept failing on purpose) ----------------

def test_one_bucket_over_a_range_that_crosses_step_zero(open_store):
    """buckets=1 over steps -1000..999 must give one row of 2000 points."""
    store = open_store()
    run = store.start_run()
    steps = np.arange(-1000, 1000)
    values = steps * 0.5
    run.log_batch("m", steps, values)
    store.flush()
    with hang_guard():
        table = store.read(run.id, "m", buckets=1)
    check_step_buckets(table, steps, values, None, None, 1)


@pytest.mark.parametrize("start, stop, n, flushed", [
    (-2**63, None, 7, True),           # endless loop in the bucket plan
    (None, 2**63 - 1, 5, True),        # endless loop in the bucket plan
    (-2**63, 2**63 - 1, 1000, True),   # OverflowError
    (-2**63, None, 7, False),          # raw path: 1000 of the 4000 points
    (None, 2**63 - 1, 5, False),       # passes (raw path)
    (-2**62, 2**62, 3, False),         # passes (raw path)
])
def test_huge_step_ranges(open_store, flushed, start, stop, n):
    """Ranges as wide as int64 allows (e.g. start=-2**63 for "from the beginning")."""
    store = open_store()
    run = store.start_run()
    steps = np.arange(-1000, 3000)
    values = np.cos(steps / 10.0)
    run.log_batch("m", steps, values)
    if flushed:
        store.flush()
    with hang_guard():
        table = store.read(run.id, "m", start=start, stop=stop, buckets=n)
    check_step_buckets(table, steps, values, start, stop, n)


@pytest.mark.parametrize("flushed", [True, False])
@pytest.mark.parametrize("n", [1, 3])
def test_steps_at_the_top_of_int64(open_store, flushed, n):
    """Steps up to 2**63 - 2: every bucket end (at most 2**63 - 1) is an int64. Seen:
    with n=3 the last bucket's step_end wraps around to -2**63."""
    top = 2**63 - 2
    steps = np.array([top - 4 + i for i in range(5)], np.int64)
    values = np.arange(5.0)
    store = open_store()
    run = store.start_run()
    run.log_batch("m", steps, values)
    if flushed:
        store.flush()
    for start in (None, top - 2):
        table = store.read(run.id, "m", start=start, buckets=n)
        check_step_buckets(table, steps, values, start, None, n)


@pytest.mark.parametrize("n", [1, 3])
def test_step_int64_max_in_a_bucketed_read(open_store, n):
    """A series may hold step 2**63 - 1 (log accepts it). Its bucket cannot end one past
    it in int64, but the read must still return the points, not raise OverflowError."""
    top = 2**63 - 1
    steps = np.array([top - 4 + i for i in range(5)], np.int64)
    store = open_store()
    run = store.start_run()
    run.log_batch("m", steps, np.arange(5.0))
    store.flush()
    table = store.read(run.id, "m", buckets=n)
    assert 1 <= table.num_rows <= n
    assert int(col(table, "count").sum()) == 5
    assert col(table, "last_step").max() == top
    assert col(table, "max").max() == 4.0


# -- how many buckets a plan gives ----------------------------------------------------------

def spread_steps(lo: int, hi: int, n: int) -> np.ndarray:
    """2n distinct steps over [lo, hi), lo and hi - 1 among them, none more than
    ceil((hi - lo) / 2n) + 1 apart (every step when the range is shorter); Python ints,
    so that a range as wide as int64 does not overflow."""
    span = hi - lo
    if span <= 2 * n:
        return np.arange(lo, hi, dtype=np.int64)
    picks = [lo + (span - 1) * i // (2 * n - 1) for i in range(2 * n)]
    return np.array(picks, np.int64)


def above_level_0(lo: int, hi: int, n: int, base_shift: int) -> bool:
    """Whether groups of rollup level 1 (16 level-0 groups) fit in the wanted bucket width,
    and the level below the coarsest that fits is cheap to read (else N/2 buckets do)."""
    from steplog.engine.rollup import LEVELS, level_shift
    from steplog.query.downsample import FINER_PAGES, finer_pages

    wanted = -(-(hi - lo) // n)
    fitting = [k for k in range(LEVELS) if (1 << level_shift(base_shift, k)) <= wanted]
    return bool(fitting) and fitting[-1] >= 1 and finer_pages(lo, hi, fitting[-1], base_shift) <= FINER_PAGES


def check_row_count(table: pa.Table, n: int, lo: int, hi: int, base_shift: int) -> None:
    """Between ceil(n/2) and n rows; at least 3n/4 when a rollup level above 0 fits the
    wanted width (so widths rounded up to whole groups lose few buckets)."""
    assert -(-n // 2) <= table.num_rows <= n, f"{table.num_rows} rows for buckets={n}"
    if above_level_0(lo, hi, n, base_shift):
        assert 4 * table.num_rows >= 3 * n, f"{table.num_rows} rows for buckets={n} over {hi - lo} steps"


# Ranges (lo, hi) of at least 1000 steps, hi up to 2**63 (a stop past INT64_MAX cannot be
# passed, but a range read with stop=None ends there when the last step is INT64_MAX).
SPREAD_RANGES = [
    (0, 1_000_000),
    (-123_457, 876_543),
    (-2**63, -2**63 + 10**6),                 # at the bottom of int64
    (-2**63, 0),
    (-2**63, 3000),                           # from "the beginning" to a small step
    (-2**63, 2**63 - 1),                      # all of int64 but INT64_MAX
    (-2**62 - 12345, 2**62 + 999),
    (2**63 - 10**7, 2**63 - 1),
    (-(10**15) + 7, 3 * 10**15),
]
SPREAD_NS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 100, 127, 129, 250, 499]


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    """One store; for every SPREAD_RANGES range and n of SPREAD_NS a flushed series of
    spread_steps(lo, hi, n), so its rollup groups follow that spacing."""
    store = steplog.open(tmp_path_factory.mktemp("spread") / "s.steplog", block_points=256,
                         flush_interval=None)
    run = store.start_run()
    series = {}
    rng = np.random.default_rng(5)
    for lo, hi in SPREAD_RANGES:
        for n in SPREAD_NS:
            steps = spread_steps(lo, hi, n)
            values = rng.normal(size=len(steps))
            values[::7] = np.nan
            name = f"m/{lo}/{hi}/{n}"
            run.log_batch(name, steps, values)
            series[(lo, hi, n)] = (name, steps, values)
    store.flush()
    yield store, run.id, series
    store.close()


@pytest.mark.parametrize("lo, hi", SPREAD_RANGES)
def test_minmax_rows_between_half_and_all_buckets(spread, lo, hi):
    """A range holding points no further apart than the wanted bucket width gives
    between ceil(N/2) and N rows, with rollups of any spacing, at any place in int64."""
    from steplog.engine.rollup import base_shift

    store, run_id, series = spread
    for n in SPREAD_NS:
        name, steps, values = series[(lo, hi, n)]
        for start, stop in [(lo, hi), (None, None)]:
            with hang_guard():
                table = store.read(run_id, name, start=start, stop=stop, buckets=n)
            check_row_count(table, n, lo, hi, base_shift(steps))   # lo and hi - 1 are steps
            check_step_buckets(table, steps, values, start, stop, n)


@pytest.mark.parametrize("n", [*range(1, 40), 63, 64, 65, 100, 128, 250, 333, 512, 999, 1000, 4096])
def test_minmax_rows_of_a_dense_series_for_many_n(big, n):
    """buckets=7 over the 1 M dense steps once gave 4 rows: widths of two rollup groups."""
    from steplog.engine.rollup import BASE_POINTS_BITS

    table = big.store.read(big.run_id, "loss", start=0, stop=BIG_N, buckets=n)
    check_row_count(table, n, 0, BIG_N, BASE_POINTS_BITS)   # dense steps: 512-step groups
    check_step_buckets(table, big.steps, big.values, 0, BIG_N, n, sorted_points=big.sorted)


@st.composite
def plan_case(draw):
    """A step range [lo, hi) anywhere in int64 (hi up to 2**63), of any length from one
    step to 2**64, a bucket count, and a rollup base shift (None: no rollups)."""
    from steplog.engine.rollup import MAX_BASE_SHIFT

    bits = draw(st.integers(0, 64))
    span = draw(st.integers(max(1, 1 << bits >> 1), 1 << bits))
    lo = draw(st.one_of(st.integers(-2**63, 2**63 - 1),
                        st.sampled_from([-2**63, -2**63 + 1, -1, 0, 1, 2**62, 2**63 - 1])))
    lo = min(lo, 2**63 - span)
    n = draw(st.one_of(st.integers(1, 40), st.integers(1, 100_000)))
    base = draw(st.none() | st.integers(0, MAX_BASE_SHIFT))
    return lo, lo + span, n, base


@settings(max_examples=3000, deadline=None)
@given(plan_case())
def test_plan_gives_between_half_and_all_buckets(case):
    """downsample.plan over ranges anywhere in int64: at most N buckets that cover
    [lo, hi) and start inside it, rollup buckets on the group grid, and at least
    ceil(N/2) buckets when the range has N steps, 3N/4 when a level above 0 fits."""
    from steplog.engine.rollup import LEVELS, level_shift
    from steplog.query.downsample import INT64_MAX, plan

    lo, hi, n, base = case
    p = plan(lo, hi, n, base)
    assert 1 <= p.count <= n, p
    if hi - lo >= n:
        assert 2 * p.count >= n, p
    if base is not None and above_level_0(lo, hi, n, base):
        assert 4 * p.count >= 3 * n, p
    top = hi if p.level is not None else min(hi, INT64_MAX)
    assert p.origin <= lo < p.origin + p.width, p
    assert p.origin + (p.count - 1) * p.width < max(top, lo + 1) <= p.origin + p.count * p.width, p
    if p.level is not None:
        assert base is not None and 0 <= p.level < LEVELS
        group = 1 << level_shift(base, p.level)
        assert p.origin % group == 0 and p.width % group == 0, p
        assert group <= 2 * -(-(hi - lo) // n), "groups wider than two wanted buckets"


# -- random series against numpy -----------------------------------------------------------

VALUES = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.0]),
                   st.floats(-1e6, 1e6), st.integers(-5, 5).map(float))


@st.composite
def random_case(draw):
    """A series of up to 40 points (steps within ``spread`` of ``base``, out of order,
    duplicates) in 1 to 3 log_batch calls, each maybe followed by a flush; a step range
    and bucket counts. Half the cases are "wide": dense steps and a range of 2000+ steps
    for 1 to 3 buckets, which reads rollups once something is flushed."""
    wide = draw(st.booleans())
    n = draw(st.integers(1, 40))
    base = draw(st.integers(-3000, 3000))
    spread = draw(st.sampled_from([3, 60] if wide else [3, 60, 2000]))
    steps = draw(st.lists(st.integers(0, spread), min_size=n, max_size=n))
    values = draw(st.lists(VALUES, min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(1, n), max_size=2)))
    flushes = draw(st.lists(st.sampled_from([True, False]), min_size=3, max_size=3))
    if wide:
        start = draw(st.none() | st.integers(base - 4000, base))
        stop = draw(st.integers(base + spread + 2000, base + 12_000))
        buckets = draw(st.integers(1, 3))
    else:
        start = draw(st.none() | st.integers(-6000, 6000))
        stop = draw(st.none() | st.integers(-6000, 6000))
        buckets = draw(st.integers(1, 12))
    lttb_n = draw(st.integers(3, 12))
    time_n = draw(st.integers(1, 8))
    return (np.array(steps, np.int64) + base, np.array(values), np.array(times, np.int64) + 10**15,
            cuts, flushes, start, stop, buckets, lttb_n, time_n)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_random_series_against_numpy(case):
    steps, values, times, cuts, flushes, start, stop, n, lttb_n, time_n = case
    s_steps, s_values = sort_points(steps, values)
    lo = int(s_steps[0]) if start is None else start
    hi = int(s_steps[-1]) + 1 if stop is None else stop
    if n == 1 and lo < 0 < hi:
        n = 2   # buckets=1 across step 0 loops forever: test_one_bucket_over_a_range_that_crosses_step_zero
    with tempfile.TemporaryDirectory() as tmp:
        store = steplog.open(f"{tmp}/s.steplog", block_points=8, flush_interval=None)
        try:
            run = store.start_run()
            bounds = [0, *cuts, len(steps)]
            for (a, b), flush in zip(zip(bounds, bounds[1:]), flushes):
                if a < b:
                    run.log_batch("m", steps[a:b], values[a:b], times=times[a:b])
                if flush:
                    store.flush()
            with hang_guard():
                table = store.read(run.id, "m", start=start, stop=stop, buckets=n)
            check_step_buckets(table, steps, values, start, stop, n, sorted_points=(s_steps, s_values))
            table = store.read(run.id, "m", start=start, stop=stop, buckets=lttb_n, method="lttb")
            check_lttb(table, s_steps, s_values, start, stop, lttb_n)
            table = store.read(run.id, "m", start=start, stop=stop, buckets=time_n, x="time")
            check_time_buckets(table, steps, values, times, start, stop, time_n, "time")
        finally:
            store.close()
