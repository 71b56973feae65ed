"""Tensor summaries: the entry points. The kernels are in engine/tensorstats/ (its
``__init__`` lists the parts); importing this module imports numba, so the rest of
steplog imports it lazily (inside functions). Kernels are compiled on first use and
cached on disk; one specialisation per input dtype (13 of them), each compiled when a
tensor of that dtype is first summarised, saying so on stderr when that is slow
(engine/jit.py).

What a summary holds (``SUMMARY_FIELDS``, one float64 each; counts are exact integers):

    count nan_count inf_count | min max mean std l2 zero_fraction | q01 q05 q25 q50 q75 q95 q99

plus a histogram: ``edges`` (float64, bins + 1) and ``counts`` (int64, bins).

* ``count`` is the number of elements; ``nan_count`` and ``inf_count`` (+inf and -inf)
  are counted and left out of every other statistic: those are over the *finite*
  values, each converted to float64.
* ``min``/``max`` are exact; ``mean``, ``std`` (population) and ``l2`` as in
  tensorstats/moments.py; ``zero_fraction`` = zeros (+0.0 and -0.0) / finite values.
* No finite value (empty tensor, all NaN/inf): min, max, mean, std, l2 and the
  quantiles are NaN, zero_fraction is 0, the histogram counts are all zero. A 0-d
  tensor is one element.
* The histogram is over the caller's ``edges`` or ``bins`` bins over [min, max], with
  np.histogram's counts bit for bit (tensorstats/histogram.py); the quantiles are
  within (max - min) / 2048 of np.quantile's linear method (tensorstats/quantiles.py).
* ``summarize_many`` (which reads each tensor in the same order from a concatenated
  copy) equals ``summarize`` bit for bit.

The input is read in place (tensorstats/prepare.py); bad input is refused by
tensorstats/validate.py, the one validator of tensors and edges.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import InvalidTypeError
from .jit import announce
from .tensorstats.fields import MAX_BINS, NSTATS, Q, QUANTILES, SUMMARY_FIELDS
from .tensorstats.prepare import in_kernel_order, layout, readonly, views
from .tensorstats.segment import summarize_segments
from .tensorstats.validate import histogram_args, tensor_array

__all__ = ["MAX_BINS", "Q", "QUANTILES", "SUMMARY_FIELDS", "ManySummaries", "Summary", "summarize",
           "summarize_many"]


def _kernel_dtype(flat, bits, lut, *_rest) -> str:
    """The tensor dtype a summary kernel is compiled for (float16 arrives as uint16 bits)."""
    return "float16" if lut is not None else str(flat.dtype)


announce(summarize_segments, "tensor-summary", _kernel_dtype)


class Summary(NamedTuple):
    """One tensor's summary: ``stats`` in SUMMARY_FIELDS order, the histogram's edges and counts."""

    stats: np.ndarray    # float64, len(SUMMARY_FIELDS)
    edges: np.ndarray    # float64, bins + 1
    counts: np.ndarray   # int64, bins

    def as_dict(self) -> dict[str, float]:
        return dict(zip(SUMMARY_FIELDS, self.stats.tolist()))


class ManySummaries(NamedTuple):
    """Summaries of n tensors, one row each."""

    stats: np.ndarray    # float64, n x len(SUMMARY_FIELDS)
    edges: np.ndarray    # float64, n x (bins + 1)
    counts: np.ndarray   # int64, n x bins


def summarize(tensor: np.ndarray, bins: int = 64, edges: np.ndarray | None = None) -> Summary:
    """Summary of ``tensor`` (any shape, strides and numeric or bool dtype): the
    SUMMARY_FIELDS statistics, and a histogram over ``edges`` (1-d, strictly increasing,
    finite; ``bins`` is then ignored) or over ``bins`` bins spread over [min, max]."""
    nbins, fixed, mode = histogram_args(bins, edges)
    a = tensor_array(tensor, "tensor")
    flat, rows, dims = layout(a)
    flat, bits, lut, fmt = views(readonly(flat))
    stats = np.empty((1, NSTATS))
    out_edges = np.empty((1, nbins + 1))
    counts = np.empty((1, nbins), np.int64)
    summarize_segments(flat, bits, lut, fmt, np.array([0, rows.shape[0]], np.int64), rows,
                       np.array([dims], np.int64), fixed, mode, nbins, stats, out_edges, counts)
    return Summary(stats[0], out_edges[0], counts[0])


def summarize_many(tensors, bins: int = 64, edges: np.ndarray | None = None) -> ManySummaries:
    """Summaries of many tensors, one row each, equal to ``summarize`` of each in turn.

    The tensors of each dtype are concatenated into one buffer (a copy, made to avoid a
    Python and kernel call per tensor) and summarised by one kernel call that loops over
    them (``summarize_segments``)."""
    nbins, fixed, mode = histogram_args(bins, edges)
    if isinstance(tensors, np.ndarray):
        raise InvalidTypeError("tensors", "must be a sequence of arrays, got one array")
    try:
        tensors = list(tensors)
    except TypeError:
        raise InvalidTypeError("tensors", f"must be a sequence of arrays, got {type(tensors).__name__}") from None
    n = len(tensors)
    stats = np.empty((n, NSTATS))
    out_edges = np.empty((n, nbins + 1))
    counts = np.empty((n, nbins), np.int64)
    if n == 0:
        return ManySummaries(stats, out_edges, counts)
    first = tensor_array(tensors[0], "tensors[0]")
    dt = first.dtype
    if first is tensors[0] and all(type(t) is np.ndarray and t.dtype == dt and t.flags.c_contiguous
                                   for t in tensors):
        groups = {dt: (None, tensors)}           # the common case: one dtype, C-contiguous arrays
    else:
        groups = {}
        for i, t in enumerate(tensors):
            t = tensor_array(t, f"tensors[{i}]")
            group = groups.get(t.dtype)
            if group is None:
                group = groups[t.dtype] = ([], [])
            group[0].append(i)
            group[1].append(in_kernel_order(t))
    for index, group in groups.values():
        m = len(group)
        sizes = np.fromiter((t.size for t in group), np.int64, m)
        flat = np.concatenate(group, axis=None) if m > 1 else group[0].reshape(-1)
        flat, bits, lut, fmt = views(readonly(flat))
        dims = np.empty((m, 4), np.int64)
        dims[:, 0] = 1
        dims[:, 1] = 0
        dims[:, 2] = sizes
        dims[:, 3] = 1
        row_starts = np.zeros(m, np.int64)
        np.cumsum(sizes[:-1], out=row_starts[1:])
        seg_rows = np.arange(m + 1, dtype=np.int64)
        if index is None:
            summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, mode, nbins,
                               stats, out_edges, counts)
        else:
            g_stats = np.empty((m, NSTATS))
            g_edges = np.empty((m, nbins + 1))
            g_counts = np.empty((m, nbins), np.int64)
            summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, mode, nbins,
                               g_stats, g_edges, g_counts)
            stats[index] = g_stats
            out_edges[index] = g_edges
            counts[index] = g_counts
    return ManySummaries(stats, out_edges, counts)
