"""Rollup aggregates in numpy: the twin of engine.rollupkernels for the write path of
processes that have not imported numba (a script that logs a few thousand points).

Same arguments, same results bit for bit (tests/test_smallrollup.py) as the kernels'
_group_points, _coarsen and fold_groups, whose loops decide every tie; these follow
them. A point is folded as a group of one (a NaN point as a group of one NaN: min +inf,
max -inf, sum +0.0, which leave an aggregate as the kernel's skipping does: a running
sum starts at +0.0 and so is never -0.0, and x + 0.0 is x for every other x). In
application order (write order of points, ascending id of groups) each group's
aggregate is then: first and last the first smallest and the last largest step's
values; min and max the first value equal to them (0.0 or -0.0, whichever came first);
the sum added in order from +0.0, one position of every group at a time.
"""

from __future__ import annotations

import numpy as np


def _fold_all(gids, cnt, nan, mn, mx, sm, first, fstep, last, lstep):
    """Fold groups (in application order) into the aggregates of their distinct ids."""
    uniq, keys = np.unique(gids, return_inverse=True)
    keys = keys.reshape(-1)
    u, n = len(uniq), len(gids)
    out_cnt = np.zeros(u, np.int64)
    np.add.at(out_cnt, keys, cnt)
    out_nan = np.zeros(u, np.int64)
    np.add.at(out_nan, keys, nan)
    order = np.arange(n)
    by_first = np.lexsort((order, fstep, keys))
    by_last = np.lexsort((order, lstep, keys))
    starts = np.searchsorted(keys[by_first], np.arange(u))
    ends = np.append(starts[1:], n) - 1
    head, tail = by_first[starts], by_last[ends]
    grouped = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[grouped], np.arange(u))
    out_mn = _first_extreme(mn[grouped], bounds, np.minimum)
    out_mx = _first_extreme(mx[grouped], bounds, np.maximum)
    out_sm = _sequential_sums(sm[grouped], bounds)
    return (uniq, out_cnt, out_nan, out_mn, out_mx, out_sm, first[head], fstep[head], last[tail], lstep[tail])


def _first_extreme(values: np.ndarray, bounds: np.ndarray, ufunc) -> np.ndarray:
    """Per segment (starting at ``bounds``, NaN-free), the first value equal to its
    extreme: the kernels keep the one seen first of 0.0 and -0.0."""
    if not len(values):
        return values.copy()
    extreme = ufunc.reduceat(values, bounds)
    segment = np.repeat(np.arange(len(bounds)), np.diff(np.append(bounds, len(values))))
    hits = np.flatnonzero(values == extreme[segment])
    firsts = hits[np.searchsorted(segment[hits], np.arange(len(bounds)))]
    return values[firsts]


def _sequential_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per segment, 0.0 + v0 + v1 + ... in order (numpy's reductions sum pairwise): one
    position of every segment at a time, or one segment at a time, whichever loops less."""
    lengths = np.diff(np.append(bounds, len(values)))
    sums = np.zeros(len(bounds))
    with np.errstate(over="ignore", invalid="ignore"):
        if len(bounds) <= (lengths.max() if len(lengths) else 0):
            for i, (lo, n) in enumerate(zip(bounds.tolist(), lengths.tolist())):
                sums[i] = np.cumsum(np.concatenate(([0.0], values[lo:lo + n])))[-1]
        else:
            for k in range(int(lengths.max()) if len(lengths) else 0):
                live = np.flatnonzero(lengths > k)
                sums[live] += values[bounds[live] + k]
    return sums


def _group_points(steps, values, shift):
    """As rollupkernels._group_points: the aggregates of the groups ``steps >> shift``."""
    nans = np.isnan(values)
    ones = np.ones(len(steps), np.int64)
    return _fold_all(steps >> shift, ones, nans.astype(np.int64), np.where(nans, np.inf, values),
                     np.where(nans, -np.inf, values), np.where(nans, 0.0, values), values, steps, values, steps)


def _coarsen(gid, cnt, nan, mn, mx, sm, first, fstep, last, lstep, bits):
    """As rollupkernels._coarsen: the groups one level up (groups of count 0 are skipped)."""
    keep = cnt > 0
    fields = [a[keep] for a in (gid >> bits, cnt, nan, mn, mx, sm, first, fstep, last, lstep)]
    return _fold_all(*fields)


def fold_groups(keys, g_cnt, g_nan, g_mn, g_mx, g_sm, g_first, g_fstep, g_last, g_lstep,
                cnt, nan, mn, mx, sm, first, fstep, last, lstep):
    """As rollupkernels.fold_groups, for ``keys`` that are distinct (the groups of one
    level, folded into a page): each slot takes at most one aggregate, element-wise."""
    ok = (keys >= 0) & (keys < len(cnt)) & (g_cnt != 0)
    i, j = keys[ok], np.flatnonzero(ok)
    if len(np.unique(i)) != len(i):
        raise ValueError("fold_groups in numpy folds distinct slots only")
    empty = cnt[i] == 0
    take = empty | (g_fstep[j] < fstep[i])
    first[i[take]], fstep[i[take]] = g_first[j[take]], g_fstep[j[take]]
    take = empty | (g_lstep[j] >= lstep[i])
    last[i[take]], lstep[i[take]] = g_last[j[take]], g_lstep[j[take]]
    cnt[i] += g_cnt[j]
    nan[i] += g_nan[j]
    with np.errstate(over="ignore", invalid="ignore"):
        sm[i] += g_sm[j]
    take = g_mn[j] < mn[i]
    mn[i[take]] = g_mn[j[take]]
    take = g_mx[j] > mx[i]
    mx[i[take]] = g_mx[j[take]]
