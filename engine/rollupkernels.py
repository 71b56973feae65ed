"""numba kernels of the rollups (engine/rollup.py): folding points and groups into
aggregates. Importing this module imports numba: engine.rollup imports it only when
points are folded, so that opening a store, logging and closing need no numba.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .jit import announce_all


@nb.njit(cache=True, nogil=True)
def _empty(n):
    return (np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, np.inf), np.full(n, -np.inf),
            np.zeros(n, np.float64), np.full(n, np.nan), np.zeros(n, np.int64), np.full(n, np.nan),
            np.zeros(n, np.int64))


@nb.njit(cache=True, nogil=True)
def fold_points(steps, values, keys, cnt, nan, mn, mx, sm, first, fstep, last, lstep):
    """Fold point j into slot keys[j] (slots out of range are skipped), in write order.
    One loop body, no helper call: numba does not inline a call that takes 12 arrays."""
    n_slots = cnt.shape[0]
    for j in range(steps.shape[0]):
        i = keys[j]
        if i < 0 or i >= n_slots:
            continue
        step = steps[j]
        v = values[j]
        c = cnt[i]
        if c == 0 or step < fstep[i]:
            first[i] = v
            fstep[i] = step
        if c == 0 or step >= lstep[i]:
            last[i] = v
            lstep[i] = step
        cnt[i] = c + 1
        if np.isnan(v):
            nan[i] += 1
        else:
            sm[i] += v
            if v < mn[i]:
                mn[i] = v
            if v > mx[i]:
                mx[i] = v


@nb.njit(cache=True, nogil=True)
def fold_groups(keys, g_cnt, g_nan, g_mn, g_mx, g_sm, g_first, g_fstep, g_last, g_lstep,
                cnt, nan, mn, mx, sm, first, fstep, last, lstep):
    """Merge aggregate j into slot keys[j]; the aggregates being merged in are the later writes."""
    n_slots = cnt.shape[0]
    for j in range(keys.shape[0]):
        i = keys[j]
        if i < 0 or i >= n_slots or g_cnt[j] == 0:
            continue
        if cnt[i] == 0 or g_fstep[j] < fstep[i]:
            first[i] = g_first[j]
            fstep[i] = g_fstep[j]
        if cnt[i] == 0 or g_lstep[j] >= lstep[i]:
            last[i] = g_last[j]
            lstep[i] = g_lstep[j]
        cnt[i] += g_cnt[j]
        nan[i] += g_nan[j]
        sm[i] += g_sm[j]
        if g_mn[j] < mn[i]:
            mn[i] = g_mn[j]
        if g_mx[j] > mx[i]:
            mx[i] = g_mx[j]


@nb.njit(cache=True, nogil=True)
def _dense_keys(gids):
    """Map group ids to 0..u-1 in ascending order; returns (keys, unique ids)."""
    n = gids.shape[0]
    ascending = True
    for i in range(1, n):
        if gids[i] < gids[i - 1]:
            ascending = False
            break
    if ascending:  # the common case: one linear pass
        keys = np.empty(n, np.int64)
        uniq = np.empty(n, np.int64)
        u = -1
        for i in range(n):
            if u < 0 or gids[i] != uniq[u]:
                u += 1
                uniq[u] = gids[i]
            keys[i] = u
        return keys, uniq[:u + 1]
    order = np.argsort(gids, kind="mergesort")
    keys = np.empty(gids.shape[0], np.int64)
    uniq = np.empty(gids.shape[0], np.int64)
    u = -1
    for pos in range(order.shape[0]):
        g = gids[order[pos]]
        if u < 0 or g != uniq[u]:
            u += 1
            uniq[u] = g
        keys[order[pos]] = u
    return keys, uniq[:u + 1]


@nb.njit(cache=True, nogil=True)
def _group_points(steps, values, shift):
    gids = steps >> shift
    keys, uniq = _dense_keys(gids)
    cnt, nan, mn, mx, sm, first, fstep, last, lstep = _empty(uniq.shape[0])
    fold_points(steps, values, keys, cnt, nan, mn, mx, sm, first, fstep, last, lstep)
    return uniq, cnt, nan, mn, mx, sm, first, fstep, last, lstep


@nb.njit(cache=True, nogil=True)
def _coarsen(gid, cnt, nan, mn, mx, sm, first, fstep, last, lstep, bits):
    parent = gid >> bits
    keys, uniq = _dense_keys(parent)
    out = _empty(uniq.shape[0])
    fold_groups(keys, cnt, nan, mn, mx, sm, first, fstep, last, lstep, *out)
    return (uniq,) + out


# Slow compiles say so on stderr (the kernels Python calls; see jit.py).
announce_all(globals(), ("_empty", "fold_points", "fold_groups", "_group_points", "_coarsen"), "rollup")
