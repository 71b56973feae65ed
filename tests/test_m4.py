"""M4 reads (``Store.read(method="m4")``, query/m4.py): the real points holding each
bucket's first, min, max and last value, equal to a brute-force M4 over the full read
of the same store.

The brute force takes ``store.read`` (every point, by step, ties in write order), cuts
the range into the same buckets and picks each bucket's points with numpy; the read
under test descends the rollups and decodes a few blocks. Both must give the same
points, bit for bit, with their times.
"""

from __future__ import annotations

import numpy as np
import pytest

import steplog
from steplog.engine.index import ROLLUP_MIN_POINTS
from steplog.engine.writer import SeriesKey
from steplog.query import m4
from steplog.query.read import Points

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def m4_read(store, run_id: str, name: str, start=None, stop=None, buckets=80) -> Points:
    """``store.read(method="m4")`` as Points (time_ns as the times)."""
    table = store.read(run_id, name, start=start, stop=stop, buckets=buckets, method="m4", missing_ok=True)
    return Points(*(table.column(c).to_numpy() for c in ("step", "time_ns", "value")))


def decoded_by(store, run_id: str, name: str, buckets: int) -> tuple[list, int, list]:
    """What an M4 read of the whole series decodes: the zones at its bucket edges, the
    number of points, and all the blocks of the series."""
    key = SeriesKey(bytes.fromhex(run_id), name, "")
    with store._snapshot([key]) as (_, readers):
        reader = readers[key]
        lo, hi = reader.step_bounds()
        edges, base = m4.bucket_edges(lo, hi, buckets), reader.entry.rollup_shift
        zones = m4._zones(m4._Blocks(reader, base), edges, base)[0]
        sources = m4._from_rollups(reader, edges, np.array(edges[:-1], np.int64))[0]
        return zones, sum(len(p) for p in sources), reader.blocks_in(lo, hi)


def at(steps: np.ndarray, x: int) -> int:
    """Index of the first step >= x in sorted int64 steps; x may lie past int64."""
    return len(steps) if x > INT64_MAX else int(np.searchsorted(steps, x))


def brute_m4(steps: np.ndarray, values: np.ndarray, start, stop, buckets: int) -> np.ndarray:
    """Indices into the full read (by step, ties in write order) of the M4 points."""
    if not len(steps):
        return np.empty(0, np.int64)
    lo = int(steps[0]) if start is None else max(start, int(steps[0]))
    hi = int(steps[-1]) + 1 if stop is None else min(stop, int(steps[-1]) + 1)
    if lo >= hi:
        return np.empty(0, np.int64)
    count = min(buckets, hi - lo)
    chosen = []
    for j in range(count):
        i, k = at(steps, lo + j * (hi - lo) // count), at(steps, lo + (j + 1) * (hi - lo) // count)
        if i == k:
            continue
        part = values[i:k]
        picks = {"first": i, "last": k - 1}
        numbers = np.flatnonzero(~np.isnan(part))
        if len(numbers):   # argmin/argmax: the first of equal values, the lowest step, earliest written
            picks["min"] = i + numbers[np.argmin(part[numbers])]
            picks["max"] = i + numbers[np.argmax(part[numbers])]
        nans = np.flatnonzero(np.isnan(part))
        if len(nans):
            picks["nan"] = i + nans[0]
        if len(set(picks.values())) == 5:
            del picks["first"]
        chosen += picks.values()
    return np.unique(np.array(chosen, np.int64))


def full_read(store, run_id: str, name: str):
    table = store.read(run_id, name)
    return (table.column("step").to_numpy(), table.column("time_ns").to_numpy(),
            table.column("value").to_numpy())


def check(store, run_id: str, name: str, start, stop, buckets: int, full=None) -> Points:
    steps, times, values = full if full is not None else full_read(store, run_id, name)
    got = m4_read(store, run_id, name, start, stop, buckets)
    want = brute_m4(steps, values, start, stop, buckets)
    assert len(got) <= 4 * buckets
    assert got.steps.tolist() == steps[want].tolist(), (start, stop, buckets)
    assert got.times.tolist() == times[want].tolist()
    assert got.values.view(np.uint64).tolist() == values[want].view(np.uint64).tolist()
    return got


def random_values(rng, n: int) -> np.ndarray:
    """A noisy walk with spikes either way, NaN, +inf, -inf, -0.0 and runs of equal values."""
    values = np.cumsum(rng.normal(size=n))
    odd = rng.integers(0, n, size=(6, max(1, n // 2000)))
    values[odd[0]] = np.nan
    values[odd[1]] = np.inf
    values[odd[2]] = -np.inf
    values[odd[3]] = -0.0
    values[odd[4]] = 1e9 * rng.choice([-1, 1], size=odd.shape[1])
    values[odd[5]] = np.round(values[odd[5]])   # equal values: ties
    return values


def random_steps(rng, n: int) -> np.ndarray:
    """Mostly ascending with gaps, a shuffled stretch (out of order) and repeated steps."""
    gaps = np.where(rng.random(n) < 0.002, rng.integers(100, 20_000, n), 1)
    steps = np.cumsum(gaps).astype(np.int64)
    a = int(rng.integers(0, n // 2))
    rng.shuffle(steps[a:a + n // 5])
    repeats = rng.integers(0, n, n // 20)
    steps[repeats] = steps[rng.integers(0, n, len(repeats))]
    return steps


def log_random(store, rng, n: int, unflushed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """A series "m" of n points in several flushed batches, a second pass over some of its
    steps, and ``unflushed`` points logged last and not flushed."""
    run = store.start_run()
    steps, values = random_steps(rng, n), random_values(rng, n)
    cuts = np.sort(rng.integers(0, n, 4))
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
        run.log_batch("m", steps[a:b], values[a:b], times=rng.integers(0, 2**62, b - a))
        store.flush()
    again = rng.integers(0, n, n // 10)
    run.log_batch("m", steps[again], random_values(rng, len(again)))
    store.flush()
    if unflushed:
        late = rng.choice(steps, unflushed)
        late[: unflushed // 4] = int(steps.max()) + rng.integers(1, 5000, unflushed // 4)   # past the stored end
        run.log_batch("m", late, random_values(rng, unflushed))
    return run.id, steps, values


QUERIES = [(None, None, 1), (None, None, 2), (None, None, 5), (None, None, 16), (None, None, 80)]


@pytest.mark.parametrize("n, unflushed, seed, block_points", [(1000, 0, 1, 512), (3000, 200, 2, 512),
                                                               (40_000, 0, 3, 512), (60_000, 500, 4, 512),
                                                               (60_000, 300, 5, 8192)])
def test_m4_matches_brute_force(tmp_path, n, unflushed, seed, block_points):
    """Small blocks: the groups the edges cut are decoded as level-0 groups; blocks of
    8192 points: often as level-1 groups that one block holds."""
    rng = np.random.default_rng(seed)
    with steplog.open(tmp_path / "s", block_points=block_points, flush_interval=None) as store:
        run_id, steps, _ = log_random(store, rng, n, unflushed)
        full = full_read(store, run_id, "m")
        lo, hi = int(full[0][0]), int(full[0][-1]) + 1
        ranges = [(int(a), int(b)) for a, b in rng.integers(lo - 1000, hi + 1000, (6, 2))]
        ranges += [(lo + (hi - lo) // 3, None), (None, lo + (hi - lo) // 4), (hi + 5, hi + 10), (hi - 1, hi),
                   (INT64_MIN, INT64_MAX)]
        queries = QUERIES + [(a, b, int(k)) for (a, b), k in zip(ranges, rng.integers(1, 100, len(ranges)))]
        middle = int(np.median(steps))
        queries.append((middle, middle + 3000, 10**7))   # more buckets than steps: a bucket a step
        if n <= 3000:
            queries.append((None, None, 10**7))
        for start, stop, buckets in queries:
            check(store, run_id, "m", start, stop, buckets, full)


def test_level_one_groups_in_one_block(tmp_path):
    """Flushes of whole blocks on level-1 group edges: each level-1 group is one block,
    decoded whole at the bucket edges and where the descent stops; a second pass over
    a stretch of steps makes its groups span two blocks, which go down to level 0."""
    rng = np.random.default_rng(9)
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        run = store.start_run()
        n = 16 * 8192
        steps, values = np.arange(n, dtype=np.int64), random_values(rng, n)
        for a in range(0, n, 4 * 8192):
            run.log_batch("m", steps[a:a + 4 * 8192], values[a:a + 4 * 8192], times=steps[a:a + 4 * 8192] + 5)
            store.flush()
        run.log_batch("m", steps[50_000:60_000], random_values(rng, 10_000))
        store.flush()
        zones = decoded_by(store, run.id, "m", 5)[0]
        assert max(b - a for a, b in zones) >= 8192 > min(b - a for a, b in zones)   # level-1 and level-0 zones
        full = full_read(store, run.id, "m")
        for start, stop, buckets in [(None, None, 1), (None, None, 5), (None, None, 7), (None, None, 60),
                                     (3000, 120_000, 9), (51_000, 59_000, 3)]:
            check(store, run.id, "m", start, stop, buckets, full)


def test_ties_across_zone_and_group_blocks_in_write_order(tmp_path):
    """Step 60500 holds the bucket's max in a block of the first pass, which no zone
    touches, and its min in a later block that reaches back into a zone: the two come
    back in write order, the max first."""
    rng = np.random.default_rng(3)
    with steplog.open(tmp_path / "s", block_points=20_000, flush_interval=None) as store:
        run = store.start_run()
        steps = np.arange(100_000, dtype=np.int64)
        values = rng.normal(size=len(steps))
        values[60_500] = 1000.0
        run.log_batch("m", steps, values)
        store.flush()
        again = np.arange(49_000, 61_001, dtype=np.int64)
        later = rng.normal(size=len(again))
        later[again == 60_500] = -1000.0
        run.log_batch("m", again, later)
        store.flush()
        got = check(store, run.id, "m", None, None, 2)
        assert got.values[got.steps == 60_500].tolist() == [1000.0, -1000.0]


def test_below_and_above_rollup_threshold_take_both_paths(tmp_path):
    """A series of ROLLUP_MIN_POINTS - 1 points keeps no rollups (decoded whole); one more
    flush past the threshold gives it rollups, which the read then descends."""
    rng = np.random.default_rng(7)
    with steplog.open(tmp_path / "s", block_points=256, flush_interval=None) as store:
        run = store.start_run()
        n = ROLLUP_MIN_POINTS - 1
        run.log_batch("m", np.arange(n), random_values(rng, n))
        store.flush()
        assert rollup_shift(store, run.id) is None
        for buckets in (1, 3, 80):
            check(store, run.id, "m", None, None, buckets)
        run.log_batch("m", np.arange(n, 4 * n), random_values(rng, 3 * n))
        store.flush()
        assert rollup_shift(store, run.id) is not None
        for buckets in (1, 3, 7, 80):
            check(store, run.id, "m", None, None, buckets)


def rollup_shift(store, run_id):
    key = SeriesKey(bytes.fromhex(run_id), "m", "")
    with store._snapshot([key]) as (_, readers):
        return readers[key].entry.rollup_shift


def test_unflushed_only_and_missing(tmp_path):
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        run = store.start_run()
        run.log_batch("m", [5, 3, 5, 9], [1.0, np.nan, -2.0, 4.0])
        got = check(store, run.id, "m", None, None, 1)
        assert got.steps.tolist() == [3, 5, 9]   # first and NaN at 3, min -2 the later 5, max and last 9
        assert got.values[1] == -2.0
        assert len(m4_read(store, run.id, "absent")) == 0
        assert len(m4_read(store, run.id, "m", 10, 20)) == 0
        assert len(m4_read(store, run.id, "m", 7, 7)) == 0


def test_five_points_drop_the_first(tmp_path):
    """first 1.0, then NaN, min -5, max 9, last 2: five distinct points in one bucket,
    and the first gives way so that the read stays within 4 * buckets."""
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        run = store.start_run()
        run.log_batch("m", [0, 1, 2, 3, 4, 5], [1.0, np.nan, -5.0, 0.5, 9.0, 2.0])
        store.flush()
        got = check(store, run.id, "m", None, None, 1)
        assert got.steps.tolist() == [1, 2, 4, 5]


def test_bucket_edges_on_group_edges(tmp_path):
    """A range that starts (ends) inside a level-0 group and ends (starts) on a group
    edge: its first (last) point is in the cut group, its last (first) in a whole group
    that nothing else leads to, and a block of its own."""
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        run = store.start_run()
        steps = np.arange(40_000, dtype=np.int64)
        values = np.zeros(len(steps))
        values[3000], values[4000], values[33_000], values[34_000] = 10.0, -10.0, 10.0, -10.0
        run.log_batch("m", steps, values)
        store.flush()
        group = 1 << rollup_shift(store, run.id)
        for start, stop in [(100, 20 * group), (100, 20 * group + 1), (60 * group, 39_900),
                            (8 * group, 60 * group)]:
            got = check(store, run.id, "m", start, stop, 1)
            assert got.steps[0] == start and got.steps[-1] == min(stop, 40_000) - 1


def test_steps_at_the_ends_of_int64(tmp_path):
    rng = np.random.default_rng(11)
    with steplog.open(tmp_path / "s", block_points=256, flush_interval=None) as store:
        run = store.start_run()
        wide = INT64_MIN + np.arange(5000, dtype=np.int64) * np.int64(3 * 2**50)   # past the rollup threshold
        wide[-1] = INT64_MAX
        run.log_batch("m", wide, random_values(rng, len(wide)))
        run.log_batch("m", np.repeat(np.int64(INT64_MAX), 3), [7.0, -7.0, np.nan])
        store.flush()
        for start, stop, buckets in [(None, None, 1), (None, None, 3), (None, None, 80), (0, None, 4),
                                     (INT64_MAX, None, 2), (None, INT64_MIN + 1, 5)]:
            check(store, run.id, "m", start, stop, buckets)
        got = m4_read(store, run.id, "m", INT64_MAX, None, 1)
        assert got.steps.tolist() == [INT64_MAX] * 3


def test_numpy_twin_and_kernel_agree():
    """The two folds give the same role table over parts with repeats, NaN, inf, steps
    outside the windows that count, and steps at the ends of int64."""
    rng = np.random.default_rng(5)
    for trial in range(60):
        scale = int(rng.choice([1, 2**56]))
        parts, windows = [], []
        lo, last = sorted(int(x) * scale for x in rng.integers(-40, 40, 2))
        if trial == 0:
            lo, last = INT64_MIN, INT64_MAX
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(0, 300))
            steps = rng.integers(-50, 50, n) * scale
            values = rng.choice([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 2.5], n)
            parts.append(Points(steps, np.zeros(n, np.int64), values))
            cuts = np.unique(rng.integers(lo, last, 6, endpoint=True)) if trial % 2 else np.array([lo, last])
            windows.append((cuts[:-1:2].copy(), cuts[1::2].copy()))
        edges = m4.bucket_edges(lo, last + 1, int(rng.integers(1, 20)))
        starts = np.array(edges[:-1], np.int64)
        kernel = m4.fold(parts, windows, starts, numpy=False)
        twin = m4.fold(parts, windows, starts, numpy=True)
        for k, t in zip(kernel, twin):
            assert k.view(np.uint64).tolist() == t.view(np.uint64).tolist()
        counted = any((m4.in_spans(p.steps, *w)).any() for p, w in zip(parts, windows))
        assert (kernel[0] >= 0).any() == counted


@pytest.fixture(scope="module")
def long_series(tmp_path_factory):
    """2 M points of a smooth curve with one single-step spike, flushed."""
    n, spike = 2_000_000, 1_234_567
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps / 50_000.0)
    values[spike] = 50.0
    store = steplog.open(tmp_path_factory.mktemp("long") / "s", flush_interval=None)
    run = store.start_run()
    for a in range(0, n, 500_000):
        run.log_batch("m", steps[a:a + 500_000], values[a:a + 500_000], times=steps[a:a + 500_000] * 1000 + 7)
    store.flush()
    yield store, run.id, spike
    store.close()


def test_spike_in_two_million_points(long_series):
    store, run_id, spike = long_series
    got = m4_read(store, run_id, "m", buckets=80)
    assert len(got) <= 320
    assert spike in got.steps.tolist()
    assert got.values[got.steps == spike].tolist() == [50.0]
    assert got.times[got.steps == spike].tolist() == [spike * 1000 + 7]


def test_long_series_matches_brute_force(long_series):
    """Whole-series and zoomed reads with buckets from 1 (descending every rollup level) to
    1000 (decoding whole where buckets are narrower than two level-0 groups)."""
    store, run_id, spike = long_series
    full = full_read(store, run_id, "m")
    for start, stop, buckets in [(None, None, 1), (None, None, 3), (None, None, 80), (None, None, 1000),
                                 (spike - 100_000, spike + 77_777, 80), (777, 1_999_000, 17)]:
        check(store, run_id, "m", start, stop, buckets, full)


def test_long_series_decodes_few_blocks(long_series):
    """8 buckets of 250,000 points: the read decodes a block at each edge and one for
    each bucket's min and max at most, not the series: its cost does not grow with it."""
    store, run_id, _ = long_series
    _, decoded, everything = decoded_by(store, run_id, "m", 8)
    per_block = everything[0].header.count
    assert decoded <= (9 + 2 * 8) * per_block < sum(r.header.count for r in everything) / 8
