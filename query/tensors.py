"""Tensor summaries as Arrow: rows as logged, or merged into step buckets.

A bucket merges the summaries whose steps fall in it: counts add up, min of mins, max
of maxes, mean and std combined exactly from each row's finite count, mean and std
(Chan's formula), l2 from the sum of squared norms, zero fraction weighted by finite
counts, histograms summed when every row of the bucket shares the same edges (else
null). Quantiles cannot be merged from quantiles: a bucket of more than one row has
null quantiles. A bucket without finite values has NaN min, max, mean, std and l2, as a
row has.

Squares of values near 1e-200 underflow and those near 1e200 overflow, so when a value
lies beyond 2**±300 means, stds and norms are merged after scaling each bucket by a power
of two near its largest magnitude, as rows are summarized (engine/summary.py). A power of
two scales exactly: where nothing under- or overflows, scaled and plain agree bit for bit.

Buckets are [step_start, step_end) of even width from the range's start (downsample.plan
without rollups). A range that holds INT64_MAX would end at 2**63, which int64 cannot
hold: its last bucket has step_end INT64_MAX and holds INT64_MAX as well (so
step_start == step_end == INT64_MAX for a range of that one step).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .read import time_column

COUNT_FIELDS = ("count", "nan_count", "inf_count")


class SummaryRows(NamedTuple):
    """Summary rows sorted by step. ``edges`` and ``counts`` are 2-d arrays (rows x bins+1,
    rows x bins) when every row has the same bins, else lists of per-row arrays."""

    steps: np.ndarray
    times: np.ndarray
    stats: np.ndarray            # rows x fields
    edges: "np.ndarray | list"
    counts: "np.ndarray | list"

    @classmethod
    def empty(cls, fields: int) -> "SummaryRows":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, fields)),
                   np.empty((0, 1)), np.empty((0, 0), np.int64))


def derived_edges(stats: np.ndarray, bins: int) -> np.ndarray:
    """Edges spread over each row's [min, max], as np.histogram spreads them (rows x bins+1)."""
    from ..engine.summary import SUMMARY_FIELDS

    col = {name: stats[:, i] for i, name in enumerate(SUMMARY_FIELDS)}
    finite = col["count"] - col["nan_count"] - col["inf_count"]
    lo, hi = col["min"].copy(), col["max"].copy()
    flat = lo == hi
    lo[flat] -= 0.5
    hi[flat] += 0.5
    none = finite == 0
    lo[none], hi[none] = 0.0, 1.0
    from .kernels import linspace_rows

    return linspace_rows(lo, hi, bins + 1)


def rows_from_blocks(parts: list, fields: int) -> SummaryRows:
    """Concatenate decoded Summaries (engine.block) and sort them by step, stably."""
    from ..engine.smallcodec import is_sorted

    parts = [p for p in parts if len(p.steps)]
    if not parts:
        return SummaryRows.empty(fields)
    steps = np.concatenate([p.steps for p in parts])
    order = slice(None) if is_sorted(steps) else np.argsort(steps, kind="stable")
    times, stats = np.concatenate([p.times for p in parts])[order], np.concatenate([p.stats for p in parts])[order]
    bins = {p.counts.shape[1] for p in parts}
    if len(bins) == 1 and all(p.edges is None for p in parts):   # the common case: no edges stored
        counts = np.concatenate([p.counts for p in parts])[order]
        return SummaryRows(steps[order], times, stats, derived_edges(stats, bins.pop()), counts)
    edges = [np.broadcast_to(p.edges, (len(p.steps), len(p.edges))) if p.edges is not None
             else derived_edges(p.stats, p.counts.shape[1]) for p in parts]
    if len(bins) == 1:
        all_edges, all_counts = np.concatenate(edges)[order], np.concatenate([p.counts for p in parts])[order]
    else:
        flat_edges = [row for block in edges for row in block]
        flat_counts = [row for p in parts for row in p.counts]
        indices = range(len(steps)) if isinstance(order, slice) else order
        all_edges, all_counts = [flat_edges[i] for i in indices], [flat_counts[i] for i in indices]
    return SummaryRows(steps[order], times, stats, all_edges, all_counts)


def _list_column(rows: "np.ndarray | list", dtype) -> pa.Array:
    if isinstance(rows, np.ndarray):   # rows x width: one flat buffer, no per-row work
        offsets = np.arange(rows.shape[0] + 1, dtype=np.int32) * rows.shape[1]
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(rows, dtype).reshape(-1)))
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(a) for a in rows], out=offsets[1:])
    flat = np.concatenate(rows).astype(dtype) if rows else np.empty(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _stat_columns(stats: np.ndarray) -> dict:
    from ..engine.summary import SUMMARY_FIELDS

    return {name: (stats[:, i].astype(np.int64) if name in COUNT_FIELDS else stats[:, i])
            for i, name in enumerate(SUMMARY_FIELDS)}


def rows_table(rows: SummaryRows) -> pa.Table:
    columns = {"step": rows.steps, "time": time_column(rows.times), **_stat_columns(rows.stats),
               "hist_edges": _list_column(rows.edges, np.float64),
               "hist_counts": _list_column(rows.counts, np.int64), "time_ns": rows.times}
    return pa.table(columns)


def buckets_table(rows: SummaryRows, lo: int, hi: int, n: int) -> pa.Table:
    """Merge rows with lo <= step < hi (hi up to 2**63) into at most n buckets of even step width."""
    from ..engine.summary import SUMMARY_FIELDS
    from . import downsample

    plan = downsample.plan(lo, hi, n, None)
    keys = downsample.bucket_keys(rows.steps, plan)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
    sizes = np.diff(np.r_[starts, len(keys)]).astype(np.int64)
    col = {name: rows.stats[:, i] for i, name in enumerate(SUMMARY_FIELDS)}
    merging = SUMMARY_FIELDS.index("zero_fraction") + 1   # the fields before the quantiles
    # each merged field is read several times: one transposed copy, instead of a strided
    # pass over all of stats for every read
    col.update(zip(SUMMARY_FIELDS, np.ascontiguousarray(rows.stats[:, :merging].T)))
    finite = col["count"] - col["nan_count"] - col["inf_count"]

    def total(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts) if len(starts) else np.empty(0)

    def known(values: np.ndarray) -> np.ndarray:   # NaN: the row has no finite values (weight 0)
        return np.where(np.isnan(values), 0.0, values)

    n_finite = total(finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(finite > 0, finite, 0)
        mean_s, std_s, l2_s = known(col["mean"]), known(col["std"]), known(col["l2"])
        big = np.fmax(np.abs(col["min"]), np.abs(col["max"]))
        extreme = bool(((big > 2.0 ** 300) | ((big < 2.0 ** -300) & (big > 0))).any())
        if extreme:   # every |value| of a bucket below 2**scale: no scaled square under- or overflows
            scale = np.where(n_finite > 0, np.frexp(_reduce(np.fmax, big, starts))[1], 0)
            row_scale = np.repeat(-scale, sizes)
            mean_s, std_s, l2_s = (np.ldexp(v, row_scale) for v in (mean_s, std_s, l2_s))
        mean = total(mean_s * weights) / n_finite
        spread = std_s ** 2 + (mean_s - np.repeat(mean, sizes)) ** 2
        std = np.sqrt(total(spread * weights) / n_finite)
        l2 = np.where(n_finite > 0, np.sqrt(total(l2_s ** 2)), np.nan)
        if extreme:
            mean, std, l2 = (np.ldexp(v, scale) for v in (mean, std, l2))
        merged = {
            "count": total(col["count"]), "nan_count": total(col["nan_count"]), "inf_count": total(col["inf_count"]),
            "min": _reduce(np.fmin, col["min"], starts), "max": _reduce(np.fmax, col["max"], starts),
            "mean": mean, "std": std, "l2": l2,
            "zero_fraction": np.where(n_finite > 0, total(col["zero_fraction"] * weights) / n_finite, 0.0),
        }
    single = sizes == 1
    for name in SUMMARY_FIELDS:
        if name not in merged:  # quantiles: kept only where a bucket holds one row
            merged[name] = np.where(single, col[name][starts], np.nan)
    stats = np.stack([merged[name] for name in SUMMARY_FIELDS], axis=1) if len(starts) else np.empty((0, len(SUMMARY_FIELDS)))
    ends = np.r_[starts[1:], len(keys)] if len(starts) else starts
    edges, counts = [], []
    for a, b in zip(starts, ends):
        if isinstance(rows.edges, np.ndarray):
            same = bool((rows.edges[a:b] == rows.edges[a]).all())
        else:
            same = all(np.array_equal(rows.edges[i], rows.edges[a]) for i in range(a + 1, b))
        edges.append(rows.edges[a] if same else None)
        counts.append(np.sum(rows.counts[a:b], axis=0) if same else None)
    step_start, step_end = downsample.bounds(plan, lo, hi, keys[starts] if len(starts) else np.empty(0, np.int64))
    columns = {"step_start": step_start, "step_end": step_end, "rows": sizes, **_stat_columns(stats),
               "hist_edges": pa.array([None if e is None else e.tolist() for e in edges], pa.list_(pa.float64())),
               "hist_counts": pa.array([None if c is None else c.tolist() for c in counts], pa.list_(pa.int64()))}
    return pa.table(columns)


def _reduce(ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return ufunc.reduceat(values, starts) if len(starts) else np.empty(0)
