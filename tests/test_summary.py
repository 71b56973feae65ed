"""Tensor summaries (engine/summary.py) checked against numpy.

Every expectation is computed here with numpy from the tensor itself: the statistics of
its finite values as float64, ``np.histogram`` with the same edges (numpy's own edges for
``bins``), and ``np.quantile(..., method="linear")``, which the summary's quantiles must
match to within the documented bound (max - min) / 2048.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import steplog
from steplog.engine import summary
from steplog.engine.tensorstats import prepare

Q = 2048                      # the documented quantile bound: |error| <= max((max - min) / Q, FLOOR)
FLOOR = 1.2e-305              # (which only matters for subnormal-scale ranges)
TINY = 4 * np.finfo(np.float64).smallest_subnormal     # float64 rounding among subnormals
QS = np.array([0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99])
FIELDS = ("count", "nan_count", "inf_count", "min", "max", "mean", "std", "l2", "zero_fraction",
          "q01", "q05", "q25", "q50", "q75", "q95", "q99")
FLOATS = [np.float16, np.float32, np.float64]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
DTYPES = FLOATS + INTS + [np.bool_]
LARGE = 70_000                # above the size from which the kernel bins through its fine-bin table


# -- expectations, from numpy ---------------------------------------------------------------

def expected(x, bins=64, edges=None) -> dict:
    x = np.asarray(x)
    a = x.astype(np.float64).reshape(-1)
    finite = a[np.isfinite(a)]
    exp = {"count": x.size, "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum())}
    if finite.size:
        big = np.abs(finite).max()
        scale = big if big > 0 else 1.0
        with np.errstate(over="ignore"):                      # an l2 beyond float64 is inf
            exp.update(min=finite.min(), max=finite.max(), mean=scale * np.mean(finite / scale),
                       std=scale * np.std(finite / scale), l2=scale * np.sqrt(np.sum((finite / scale) ** 2)),
                       zero_fraction=np.count_nonzero(finite == 0) / finite.size)
        exp.update(zip(FIELDS[9:], np.quantile(finite, QS, method="linear")))
    else:
        exp.update(dict.fromkeys(FIELDS[3:], np.nan), zero_fraction=0.0)
    if edges is None:
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        elif finite.min() == finite.max():
            lo, hi = finite.min() - 0.5, finite.max() + 0.5
        else:
            lo, hi = finite.min(), finite.max()
        exp["edges"] = np.linspace(lo, hi, bins + 1)
        exp["counts"] = np.histogram(finite, bins=exp["edges"])[0]
        if lo < hi and np.all(exp["edges"][:-1] < exp["edges"][1:]):
            np_counts, np_edges = np.histogram(finite, bins=bins)    # numpy's own edges agree
            np.testing.assert_array_equal(np_edges, exp["edges"])
            np.testing.assert_array_equal(np_counts, exp["counts"])
    else:
        exp["edges"] = np.asarray(edges, dtype=np.float64)
        exp["counts"] = np.histogram(finite, bins=exp["edges"])[0]
    exp["finite"] = finite
    return exp


def check(x, bins=64, edges=None, result=None) -> summary.Summary:
    """summarize(x) (or ``result``) agrees with numpy; returns it."""
    s = summary.summarize(x, bins=bins, edges=edges) if result is None else result
    exp = expected(x, bins, edges)
    got = dict(zip(summary.SUMMARY_FIELDS, s.stats.tolist()))
    assert s.stats.dtype == np.float64 and s.stats.shape == (len(FIELDS),)
    for name in ("count", "nan_count", "inf_count", "zero_fraction"):
        assert got[name] == exp[name], name
    assert s.edges.dtype == np.float64 and s.counts.dtype == np.int64
    np.testing.assert_array_equal(s.edges, exp["edges"])
    np.testing.assert_array_equal(s.counts, exp["counts"])
    finite = exp["finite"]
    if finite.size == 0:
        assert all(np.isnan(got[name]) for name in FIELDS[3:8] + FIELDS[9:])
        return s
    mn, mx = exp["min"], exp["max"]
    assert got["min"] == mn and got["max"] == mx
    big = max(abs(mn), abs(mx))
    assert abs(got["mean"] - exp["mean"]) <= 1e-12 * big + TINY
    assert abs(got["std"] - exp["std"]) <= 1e-9 * exp["std"] + 1e-12 * big + TINY
    assert got["l2"] == exp["l2"] or abs(got["l2"] - exp["l2"]) <= 1e-12 * exp["l2"] + TINY
    bound = max((mx - mn) / Q, FLOOR) * (1 + 1e-9) + 4e-16 * big + TINY
    for name in FIELDS[9:]:
        assert mn <= got[name] <= mx, name
        assert abs(got[name] - exp[name]) <= bound, (name, got[name], exp[name], bound)
    return s


# -- data -------------------------------------------------------------------------------------

def random_tensor(rng, dtype, n: int, special: bool = True) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        x[rng.random(n) < 0.01] = 0.0
        x[: n // 10] = np.round(x[: n // 10], 1)          # duplicates
        x = x.astype(dtype)
        if special and n >= 10:
            x[rng.choice(n, 5, replace=False)] = [np.nan, np.inf, -np.inf, np.nan, -0.0]
        return x
    if dtype.kind == "b":
        return rng.random(n) < 0.3
    info = np.iinfo(dtype)
    if rng.random() < 0.5:
        return rng.integers(info.min, info.max, size=n, dtype=dtype, endpoint=True)
    return rng.integers(max(info.min, -50), 50, size=n, dtype=dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# -- every dtype, sizes, special values -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 7, 1000, 5000, LARGE])
def test_every_dtype_against_numpy(rng, dtype, n):
    check(random_tensor(rng, dtype, n))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_explicit_edges(rng, dtype):
    for n in (1000, LARGE):
        x = random_tensor(rng, dtype, n)
        finite = x.astype(np.float64)[np.isfinite(x.astype(np.float64))]
        lo, hi = np.quantile(finite, [0.1, 0.9])
        edges = np.linspace(lo, hi + 1, 17)                # values on both sides are left out
        check(x, edges=edges)
        check(x, edges=np.sort(np.unique(np.r_[finite[:30], lo - 1, hi + 2])))   # far from uniform


def test_summary_fields_and_types():
    assert summary.SUMMARY_FIELDS == FIELDS
    assert summary.Q == Q
    s = summary.summarize(np.arange(10.0), bins=5)
    assert isinstance(s, tuple) and s.stats.shape == (16,) and s.edges.shape == (6,) and s.counts.shape == (5,)
    assert s.as_dict()["count"] == 10.0 and list(s.as_dict()) == list(FIELDS)


def test_empty_tensor():
    for x in (np.empty(0), np.empty((3, 0, 2), np.float32), np.empty(0, np.int8)):
        s = check(x)
        assert s.stats[0] == 0 and not s.counts.any()
        assert np.isnan(s.stats[3:8]).all() and np.isnan(s.stats[9:]).all() and s.stats[8] == 0.0
        np.testing.assert_array_equal(s.edges, np.linspace(0.0, 1.0, 65))
    check(np.empty(0), edges=[0.0, 1.0, 2.0])


def test_zero_d_tensor():
    for x in (np.array(2.5), np.array(-3, np.int16), np.array(np.nan), np.array(True), np.float32(7.0)):
        s = check(x)
        assert s.stats[0] == 1


def test_all_nan_and_all_inf():
    for x in (np.full(100, np.nan), np.full((10, 10), np.inf, np.float32),
              np.array([np.nan, np.inf, -np.inf] * 50, np.float16), np.full(LARGE, np.nan)):
        s = check(x)
        assert s.stats[1] + s.stats[2] == x.size
        check(x, edges=[-1.0, 0.0, 1.0])


def test_constant_tensors():
    for x in (np.full(1000, 3.0), np.zeros(LARGE, np.float32), np.full(10, 7, np.uint8), np.ones(5, bool),
              np.full(100, -2.5e-300)):
        s = check(x)
        assert (s.stats[9:] == x.flat[0]).all()            # every quantile is the value, exactly
        check(x, edges=[-10.0, 0.0, 10.0])


def test_large_constant_gives_equal_edges():
    """[min - 0.5, max + 0.5] collapses when 0.5 is below the value's spacing (numpy's own
    np.histogram(x, bins=64) refuses then): all edges equal, everything in the last bin."""
    x = np.full(50, 1e20)
    s = summary.summarize(x)
    np.testing.assert_array_equal(s.edges, np.linspace(1e20 - 0.5, 1e20 + 0.5, 65))
    np.testing.assert_array_equal(s.counts, np.histogram(x, bins=s.edges)[0])
    assert s.counts[-1] == 50


def test_special_values_mixed(rng):
    x = rng.standard_normal(3000)
    x[::7] = np.nan
    x[1::11] = np.inf
    x[2::13] = -np.inf
    x[3::17] = 0.0
    x[4::19] = -0.0
    check(x)
    check(x.astype(np.float32), edges=np.linspace(-1, 1, 9))
    check(np.r_[x, rng.standard_normal(LARGE)])


def test_extreme_magnitudes():
    rng = np.random.default_rng(5)
    big = rng.standard_normal(5000) * 1e300                # l2 needs its rescaled pass
    check(big)
    check(rng.standard_normal(5000) * 1e-200)              # squares underflow without it
    f32 = np.full(LARGE, 3e38, np.float32)                 # float32 squares overflow in float32
    f32[::2] = -3e38
    check(f32)
    info = np.iinfo(np.int64)
    check(np.array([info.min, info.max, 0, -1, 1], np.int64))
    check(np.array([0, np.iinfo(np.uint64).max, 2**63], np.uint64))
    check(np.array([np.finfo(np.float64).max, np.finfo(np.float64).max / 2, 1.0]))
    check(np.array([5e-324, -5e-324, 0.0, 1e-310]))        # subnormals


def test_range_overflowing_float64_is_counted():
    """max - min beyond float64 (documented: mean, std and quantiles lose meaning)."""
    x = np.array([-1.7e308, 1.7e308, 0.0, 1.0, np.nan])
    s = summary.summarize(x)
    got = s.as_dict()
    assert (got["count"], got["nan_count"], got["min"], got["max"]) == (5, 1, -1.7e308, 1.7e308)
    assert s.counts.sum() == 4 and np.isfinite(s.edges).all()
    np.testing.assert_array_equal(s.counts, np.histogram(x[:4], bins=s.edges)[0])
    assert s.edges[0] == -1.7e308 and s.edges[-1] == 1.7e308
    assert got["min"] <= got["q50"] <= got["max"]
    assert abs(got["mean"] - np.mean(x[:4] / 2.0 ** 1000) * 2.0 ** 1000) <= 1e-12 * 1.7e308
    assert got["std"] == pytest.approx(np.std(x[:4] / 2.0 ** 1000) * 2.0 ** 1000, rel=1e-12)
    assert got["l2"] == np.inf                              # sqrt(2) * 1.7e308 is beyond float64
    s = summary.summarize(x, edges=[-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(s.counts, [1, 1])


# -- float16 ------------------------------------------------------------------------------------

def test_every_float16_value():
    """All 65536 float16 bit patterns: converted exactly, NaN and inf counted."""
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    check(x)
    check(x, edges=np.linspace(-70000.0, 70000.0, 101))
    check(x, edges=[-1.0, -6e-5, -6e-8, 0.0, 6e-8, 6e-5, 1.0])
    check(x.reshape(256, 256).T[::3, 1::2])


# -- layouts: the input is read in place --------------------------------------------------------

def views(rng, dtype):
    base = random_tensor(rng, dtype, 24 * 30 * 20).reshape(24, 30, 20)
    yield "transposed", base.T
    yield "fortran", np.asfortranarray(base)
    yield "strided", base.reshape(-1)[::3]
    yield "reversed", base.reshape(-1)[::-1]
    yield "reversed strided", base[::-2, :, ::-3]
    yield "block", base[3:20, 5:25, 2:17]
    yield "three levels", base[::2, 1::3, ::2]
    yield "transposed three levels", base[1::2, ::-4, 3::5].transpose(2, 0, 1)
    yield "broadcast", np.broadcast_to(base[0, 0], (7, 20))
    yield "column", base[:, 3, 4]
    yield "size one axes", base[:1, 5:6, :]
    ro = base[::2].copy()
    ro.flags.writeable = False
    yield "read-only", ro


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int16, np.uint64, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_non_contiguous_views(rng, dtype):
    for name, view in views(rng, dtype):
        try:
            check(view)
            check(view, edges=np.linspace(-2, 2, 5))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def test_views_are_not_copied(rng):
    base = rng.standard_normal((40, 50))
    for view in (base.T, base[::-1, ::2], base[3:30, 5:45], base.reshape(-1)[::7], base[::2, ::-3].T):
        flat, rows, dims = prepare.layout(view)
        assert np.shares_memory(flat, base)


def test_large_strided_view(rng):
    base = rng.standard_normal((600, 300)).astype(np.float32)
    check(base[::2, ::-1])                                 # 90,000 values, table path, two levels
    check(base.T[::3], edges=np.linspace(-3, 3, 31))


def test_odd_layouts_and_byte_orders(rng):
    rec = np.zeros(500, dtype=[("a", np.float64), ("b", np.int8)])
    rec["a"] = rng.standard_normal(500)
    check(rec["a"])                                        # stride 9: not a multiple of the item size
    check(rng.standard_normal(300).astype(">f4"))          # non-native byte order
    check(rng.integers(-9, 9, 300).astype(">i8").reshape(10, 30).T)


def test_accepts_array_likes():
    check([1, 2, 3, 4.5])
    check(3.0)
    check([[True, False], [False, False]])


def test_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.randn(40, 30)
    t[3, 4] = float("nan")
    check(np.asarray(t))
    check(np.asarray(t.T))
    check(np.asarray(t.to(torch.float16)))


# -- histogram edges ----------------------------------------------------------------------------

def test_values_exactly_on_derived_edges():
    for lo, hi, bins in ((-1.0, 1.0, 64), (0.1, 0.7, 10), (-3.3, 1e3, 17), (1e6, 1e6 + 1e-4, 64)):
        edges = np.linspace(lo, hi, bins + 1)
        near = np.r_[edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]
        x = np.r_[lo, hi, near[(near >= lo) & (near <= hi)]]
        x = np.repeat(x, 3)
        s = check(x, bins=bins)
        np.testing.assert_array_equal(s.edges, edges)
        check(np.r_[x, np.full(LARGE, (lo + hi) / 2)], bins=bins)   # the table path too


@pytest.mark.parametrize("edges", [
    np.linspace(-1.0, 1.0, 9),
    np.linspace(0.1, 0.9, 41),
    np.array([-5.0, -1.0, -0.5, 0.0, 0.001, 0.3, 4.0]),
    np.geomspace(1e-3, 1e3, 25),
    np.array([-1.0, 1.0]),
    np.linspace(-4.0, 4.0, 1001),
], ids=["uniform", "fine", "irregular", "geometric", "one bin", "1000 bins"])
def test_values_exactly_on_explicit_edges(rng, edges):
    near = np.r_[edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]
    x = np.r_[np.repeat(near, 2), rng.standard_normal(500) * 2]
    check(x, edges=edges)
    check(x.astype(np.float32), edges=edges)
    check(np.r_[x, rng.standard_normal(LARGE)], edges=edges)
    check(x, bins=len(edges) - 1)


def test_uniformish_explicit_edges(rng):
    """Edges within a bin width of uniform take the fast formula and its correction."""
    edges = np.linspace(-2.0, 2.0, 33)
    edges[1:-1] += rng.uniform(-0.04, 0.04, 31)
    for x in (rng.standard_normal(3000), rng.standard_normal(LARGE)):
        check(x, edges=edges)


def test_histogram_bins_argument(rng):
    x = rng.standard_normal(5000)
    for bins in (1, 2, 3, 10, 100, 1000, 5000):
        check(x, bins=bins)
    check(rng.standard_normal(LARGE), bins=7)


def test_edges_accept_lists_and_ints():
    s = check(np.arange(10), edges=[0, 2, 5, 9])
    assert s.edges.dtype == np.float64
    check(np.arange(10.0), edges=np.array([0, 3, 10], np.int32))


# -- quantiles --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["normal", "cauchy", "increasing", "decreasing", "clusters", "outlier"])
def test_quantile_error_bound(rng, kind):
    """|quantile - np.quantile| <= (max - min) / 2048, with derived and with caller edges
    (one pass: the adaptive fine histogram widens as the range grows)."""
    n = 200_000
    x = {
        "normal": lambda: rng.standard_normal(n),
        "cauchy": lambda: rng.standard_cauchy(n),
        "increasing": lambda: np.sort(rng.standard_normal(n)) * 1e3,
        "decreasing": lambda: -np.sort(rng.exponential(size=n)) + 7.0,
        "clusters": lambda: np.r_[rng.normal(-100, 0.01, n // 2), rng.normal(100, 0.01, n // 2)],
        "outlier": lambda: np.r_[rng.standard_normal(n), 1e9],
    }[kind]()
    check(x)
    check(x, edges=[-1.0, 0.0, 1.0])
    check(x[:3000], edges=[-1.0, 0.0, 1.0])


def test_quantiles_of_few_values():
    for x in ([5.0], [1.0, 2.0], [0.0, 0.0, 1.0], [-1.0, 3.0, 3.0, 3.0, 10.0], [2, 1]):
        check(np.array(x))
        check(np.array(x), edges=[0.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 300),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_property_against_numpy(x):
    finite = x[np.isfinite(x)]
    if finite.size and finite.max() / 2 - finite.min() / 2 > np.finfo(np.float64).max / 2:
        return                                              # documented: the range overflows float64
    check(x)
    check(x, edges=[-1e10, -1.0, 0.0, 1.0, 1e10])


# -- many tensors ------------------------------------------------------------------------------

def assert_many_equal_single(tensors, **kwargs):
    many = summary.summarize_many(iter(tensors), **kwargs)
    bins = len(kwargs["edges"]) - 1 if kwargs.get("edges") is not None else kwargs.get("bins", 64)
    assert many.stats.shape == (len(tensors), len(FIELDS))
    assert many.edges.shape == (len(tensors), bins + 1) and many.counts.shape == (len(tensors), bins)
    for i, t in enumerate(tensors):
        one = summary.summarize(t, **kwargs)
        np.testing.assert_array_equal(many.stats[i], one.stats)
        np.testing.assert_array_equal(many.edges[i], one.edges)
        np.testing.assert_array_equal(many.counts[i], one.counts)
        check(t, result=summary.Summary(many.stats[i], many.edges[i], many.counts[i]), **kwargs)
    return many


def test_many_equals_one_by_one(rng):
    tensors = [random_tensor(rng, np.float32, int(n)) for n in rng.integers(0, 3000, 40)]
    assert_many_equal_single(tensors)
    assert_many_equal_single(tensors, bins=7)
    assert_many_equal_single(tensors, edges=np.linspace(-1, 1, 11))


def test_many_mixed_dtypes_shapes_and_layouts(rng):
    tensors = [random_tensor(rng, dt, 500) for dt in DTYPES]
    tensors += [np.array(3.5), np.empty(0), np.full(10, np.nan), rng.standard_normal((30, 40)).T[::2],
                rng.standard_normal(LARGE).astype(np.float32), np.arange(12, dtype=np.int8).reshape(3, 4)[:, ::-1],
                [1.0, 2.0], np.float64(4.0), rng.standard_normal(100).astype(">f8")]
    rng.shuffle(tensors)
    assert_many_equal_single(tensors)
    assert_many_equal_single(tensors, edges=[-3.0, -1.0, 0.0, 0.5, 60.0])


def test_many_edge_cases(rng):
    many = summary.summarize_many([])
    assert many.stats.shape == (0, 16) and many.edges.shape == (0, 65) and many.counts.shape == (0, 64)
    assert_many_equal_single([rng.standard_normal(10)])
    assert_many_equal_single([rng.standard_normal(5) for _ in range(3)])   # (passed as an iterator)


# -- argument checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("bins, error", [
    (0, steplog.InvalidArgumentError), (-3, steplog.InvalidArgumentError),
    (2.5, steplog.InvalidTypeError), ("8", steplog.InvalidTypeError), (True, steplog.InvalidTypeError),
    (None, steplog.InvalidTypeError),
])
def test_bad_bins(bins, error):
    with pytest.raises(error) as info:
        summary.summarize(np.ones(3), bins=bins)
    assert info.value.argument == "bins"
    with pytest.raises(error):
        summary.summarize_many([np.ones(3)], bins=bins)


@pytest.mark.parametrize("edges, error", [
    (np.ones((2, 3)), steplog.InvalidArgumentError),
    ([1.0], steplog.InvalidArgumentError),
    ([], steplog.InvalidArgumentError),
    ([0.0, 2.0, 1.0], steplog.InvalidArgumentError),
    ([0.0, 1.0, 1.0], steplog.InvalidArgumentError),
    ([0.0, np.nan], steplog.InvalidArgumentError),
    ([0.0, np.inf], steplog.InvalidArgumentError),
    (np.array([0, 1], complex), steplog.InvalidTypeError),
    (["a", "b"], steplog.InvalidTypeError),
    (np.array([True, False]), steplog.InvalidTypeError),
])
def test_bad_edges(edges, error):
    with pytest.raises(error) as info:
        summary.summarize(np.ones(3), edges=edges)
    assert info.value.argument == "edges"


@pytest.mark.parametrize("tensor", [
    np.ones(3, complex), np.array(["a", "b"]), np.array([object(), 1], dtype=object),
    np.array(["2024-01-01"], dtype="datetime64[D]"), np.zeros(3, dtype=[("a", "f4")]),
    np.ones(2, np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else np.ones(2, np.clongdouble),
])
def test_bad_tensor_dtype(tensor):
    with pytest.raises(steplog.InvalidTypeError) as info:
        summary.summarize(tensor)
    assert info.value.argument == "tensor"
    assert isinstance(info.value, TypeError)
    with pytest.raises(steplog.InvalidTypeError) as info:
        summary.summarize_many([np.ones(2), tensor])
    assert info.value.argument == "tensors[1]"


def test_bad_tensors_argument():
    with pytest.raises(steplog.InvalidTypeError) as info:
        summary.summarize_many(np.ones((3, 4)))
    assert info.value.argument == "tensors"
    with pytest.raises(steplog.InvalidTypeError):
        summary.summarize_many(5)
