"""Tensor-summary benchmarks (engine/summary.py): one 16 M-element float32 tensor (GB/s
of tensor data), numpy computing the same statistics on it, and 10,000 tensors of 1,000
float32 elements through summarize_many (summaries/s). Single thread.

Targets: >= 1 GB/s and >= 3x numpy for the large tensor; >= 100,000 summaries/s.

Full sizes when benchmarks run; tiny ones under --benchmark-disable (CI runs the suites
as plain tests, in seconds) or with STEPLOG_BENCH_SIZE=tiny. Every test checks its
result, never a time.

    .venv/bin/python -m pytest benchmarks/test_tensor_summaries.py --benchmark-only
    .venv/bin/python -m pytest -q benchmarks/test_tensor_summaries.py --benchmark-disable    # as CI runs it
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np

from steplog.engine import summary

QUANTILES = [0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99]
LARGE = 16 * 1024 * 1024           # elements (64 MiB of float32)
LARGE_TINY = 100_000
MANY, MANY_TINY, SMALL = 10_000, 200, 1_000


def tiny(benchmark) -> bool:
    size = os.environ.get("STEPLOG_BENCH_SIZE")
    return size == "tiny" if size else benchmark.disabled


@functools.lru_cache(maxsize=2)
def large_tensor(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def small_tensors(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal(SMALL, dtype=np.float32) for _ in range(n)]


def numpy_summary(x: np.ndarray, bins: int = 64):
    """The statistics of summarize, the numpy way: (stats, counts, edges)."""
    nan = np.count_nonzero(np.isnan(x))
    inf = np.count_nonzero(np.isinf(x))
    f = x[np.isfinite(x)].astype(np.float64)
    counts, edges = np.histogram(f, bins=bins)
    stats = np.array([x.size, nan, inf, f.min(), f.max(), f.mean(), f.std(), np.sqrt(f @ f),
                      np.count_nonzero(f == 0) / f.size, *np.quantile(f, QUANTILES)])
    return stats, counts, edges


def assert_matches_numpy(s: summary.Summary, x: np.ndarray) -> None:
    stats, counts, edges = numpy_summary(x)
    np.testing.assert_array_equal(s.stats[:5], stats[:5])
    np.testing.assert_allclose(s.stats[5:9], stats[5:9], rtol=1e-9, atol=1e-12)
    bound = (stats[4] - stats[3]) / summary.Q * (1 + 1e-9)
    assert np.all(np.abs(s.stats[9:] - stats[9:]) <= bound)
    np.testing.assert_array_equal(s.edges, edges)
    np.testing.assert_array_equal(s.counts, counts)


def median_s(benchmark) -> float | None:
    return benchmark.stats.stats.median if benchmark.enabled and benchmark.stats is not None else None


def test_summarize_large_float32(benchmark):
    """summarize() of a 16 M-element float32 tensor (two passes: derived edges).
    Target: >= 1 GB/s and >= 3x numpy (timed here too, best of 3).

        .venv/bin/python -m pytest benchmarks/test_tensor_summaries.py::test_summarize_large_float32 --benchmark-only
    """
    x = large_tensor(LARGE_TINY if tiny(benchmark) else LARGE)
    summary.summarize(x[:1000])                                   # compile, or load from numba's cache
    benchmark.group = "summary-large"
    benchmark.extra_info["target"] = ">= 1 GB/s, >= 3x numpy"
    benchmark.extra_info["elements"] = x.size
    s = benchmark(summary.summarize, x)
    if (median := median_s(benchmark)) is not None:
        numpy_s = min(timed(numpy_summary, x) for _ in range(3))
        benchmark.extra_info["GB_per_s"] = round(x.nbytes / median / 1e9, 3)
        benchmark.extra_info["numpy_s"] = round(numpy_s, 4)
        benchmark.extra_info["speedup_vs_numpy"] = round(numpy_s / median, 2)
    assert s.stats[0] == x.size
    assert_matches_numpy(s, x)


def test_summarize_large_float32_edges(benchmark):
    """summarize(edges=...) of the same tensor: one pass, adaptive fine histogram.

        .venv/bin/python -m pytest benchmarks/test_tensor_summaries.py::test_summarize_large_float32_edges --benchmark-only
    """
    x = large_tensor(LARGE_TINY if tiny(benchmark) else LARGE)
    edges = np.linspace(-4.0, 4.0, 65)
    summary.summarize(x[:1000], edges=edges)
    benchmark.group = "summary-large"
    s = benchmark(summary.summarize, x, edges=edges)
    if (median := median_s(benchmark)) is not None:
        benchmark.extra_info["GB_per_s"] = round(x.nbytes / median / 1e9, 3)
    assert s.stats[0] == x.size
    np.testing.assert_array_equal(s.counts, np.histogram(x.astype(np.float64), bins=edges)[0])


def test_numpy_large_float32(benchmark):
    """numpy computing the same statistics (the baseline of the 3x target).

        .venv/bin/python -m pytest benchmarks/test_tensor_summaries.py::test_numpy_large_float32 --benchmark-only
    """
    x = large_tensor(LARGE_TINY if tiny(benchmark) else LARGE)
    benchmark.group = "summary-large"
    stats, counts, edges = benchmark.pedantic(numpy_summary, args=(x,), rounds=3)
    if (median := median_s(benchmark)) is not None:
        benchmark.extra_info["GB_per_s"] = round(x.nbytes / median / 1e9, 3)
    assert stats[0] == x.size and counts.sum() == x.size
    assert_matches_numpy(summary.summarize(x), x)


def test_summarize_many_small(benchmark):
    """summarize_many() of 10,000 float32 tensors of 1,000 elements (one kernel call).
    Target: >= 100,000 summaries/s.

        .venv/bin/python -m pytest benchmarks/test_tensor_summaries.py::test_summarize_many_small --benchmark-only
    """
    tensors = small_tensors(MANY_TINY if tiny(benchmark) else MANY)
    summary.summarize_many(tensors[:3])
    benchmark.group = "summary-many"
    benchmark.extra_info["target"] = ">= 100,000 summaries/s"
    benchmark.extra_info["tensors"] = len(tensors)
    many = benchmark(summary.summarize_many, tensors)
    if (median := median_s(benchmark)) is not None:
        benchmark.extra_info["summaries_per_s"] = round(len(tensors) / median)
    assert many.stats.shape == (len(tensors), len(summary.SUMMARY_FIELDS))
    assert (many.stats[:, 0] == SMALL).all() and (many.counts.sum(axis=1) == SMALL).all()
    for i in (0, len(tensors) // 2, len(tensors) - 1):
        one = summary.summarize(tensors[i])
        np.testing.assert_array_equal(many.stats[i], one.stats)
        np.testing.assert_array_equal(many.counts[i], one.counts)
    assert_matches_numpy(summary.Summary(many.stats[0], many.edges[0], many.counts[0]), tensors[0])


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0
