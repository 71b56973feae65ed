"""numba kernels of the read side. Importing this module imports numba: import it lazily."""

from __future__ import annotations

import numba as nb
import numpy as np

from ..engine.jit import announce_all


def lttb(x, y, n):
    """Largest-Triangle-Three-Buckets: at most ``n`` indices into x and y, ascending;
    every point when there are at most n, else the first and the last point (whatever
    their y) and B buckets of the points between, each giving the point of largest
    triangle among its finite values and, when it holds a NaN or an infinity, the first
    of those too: a view shows where a loss went NaN or inf, and the total stays within
    n (B is the largest count for which B plus the buckets holding both kinds fit in
    n - 2; with room for one inner point only, a NaN or inf takes it). With n == 1 it is
    the last point alone: what a view of the latest value shows; with n == 2, the first
    and the last. x must be sorted, x and y contiguous float64.

    Only the walk over the buckets, where each pick depends on the one before, is a
    numba kernel (``lttb_walk``); the rest is numpy, which a first read does not compile."""
    size = x.shape[0]
    if n <= 0 or size == 0:
        return np.empty(0, np.int64)
    if n == 1:
        return np.array([size - 1], np.int64)
    if n >= size:
        return np.arange(size, dtype=np.int64)
    if n == 2:
        return np.array([0, size - 1], np.int64)
    inner = size - 2
    odd = ~np.isfinite(y[1:size - 1])
    bad = np.zeros(inner + 1, np.int64)     # bad[i]: NaN or inf among the first i inner points
    np.cumsum(odd, out=bad[1:])
    count = _lttb_buckets(bad, inner, n - 2)
    if count == 0:   # one slot, and a NaN or inf to show
        return np.array([0, 1 + int(np.argmax(odd)), size - 1], np.int64)
    out = np.empty(n, np.int64)
    out[0] = 0
    k = lttb_walk(x, y, np.int64(count), out)
    out[k] = size - 1
    return out[:k + 1]


def _lttb_buckets(bad, inner, budget):
    """The largest bucket count c <= budget over ``inner`` points for which c plus the
    buckets holding both finite values and a NaN or inf is at most budget; 0 when not
    even one bucket fits.
    Bisection: every count it returns was checked to fit, though where the number of
    buckets holding a NaN or inf does not grow with the count it may miss a larger one."""
    if bad[inner] == 0:
        return budget
    lo, hi = 0, budget    # lo fits (0 always does), hi + 1 does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        b = np.arange(mid + 1, dtype=np.int64) * inner // mid    # bucket b is [b[i], b[i + 1])
        found = bad[b[1:]] - bad[b[:-1]]
        both = (found > 0) & (found < b[1:] - b[:-1])             # a bucket of both kinds gives two points
        if mid + int(np.count_nonzero(both)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@nb.njit(cache=True, nogil=True)
def lttb_walk(x, y, count, out):
    """The ``count`` LTTB buckets of the inner points of x, y, in order, into out[1:];
    -> the index after the last one written. One kernel, no callees: a first LTTB read
    compiles only this. (v - v == 0.0: v is finite.)"""
    size = x.shape[0]
    inner = size - 2
    k = 1
    a = -1                                  # the last chosen finite point: one corner of the triangles
    for i in range(size):
        if y[i] - y[i] == 0.0:
            a = i
            break
    for b in range(count):
        lo = 1 + b * inner // count
        hi = 1 + (b + 1) * inner // count
        nhi = 1 + (b + 2) * inner // count if b + 1 < count else size
        # the third corner: the mean of the next bucket's finite points; else the last
        # finite point from hi on; else point a; else (0, 0)
        sx = 0.0
        sy = 0.0
        m = 0
        for i in range(hi, nhi):
            if y[i] - y[i] == 0.0:
                sx += x[i]
                sy += y[i]
                m += 1
        if m:
            cx = sx / m
            cy = sy / m
        else:
            j = size - 1
            while j >= hi and not y[j] - y[j] == 0.0:
                j -= 1
            if j < hi:
                j = a
            cx = x[j] if j >= 0 else 0.0
            cy = y[j] if j >= 0 else 0.0
        px = x[a] if a >= 0 else cx
        py = y[a] if a >= 0 else cy
        best = -1.0                         # the finite point of largest triangle, the first NaN or inf
        pick = -1
        odd = -1
        for i in range(lo, hi):
            if not y[i] - y[i] == 0.0:
                if odd < 0:
                    odd = i
                continue
            area = abs((px - cx) * (y[i] - py) - (px - x[i]) * (cy - py))
            if area > best:
                best = area
                pick = i
        if odd >= 0 and (pick < 0 or odd < pick):
            out[k] = odd
            k += 1
        if pick >= 0:
            out[k] = pick
            k += 1
            a = pick
        if odd >= 0 and pick >= 0 and odd > pick:
            out[k] = odd
            k += 1
    return k


@nb.njit(cache=True, nogil=True)
def floor_keys(x, origin, width, last):
    """Bucket of every x: floor((x - origin) / width), for int64 x; -1 below origin, and
    last + 1 (a slot the folds skip) past bucket ``last``, except that INT64_MAX goes to
    bucket ``last`` when it lies beyond: a bucket that would end at 2**63 ends at INT64_MAX
    instead and holds it (downsample.plan). origin is an int64, width a uint64 in which
    0 stands for 2**64 (one bucket over the whole axis), last an int64; the difference is
    taken in uint64, so it does not wrap over a range wider than 2**63. Callers pass
    exactly these types (downsample.bucket_keys): which specializations exist must not
    change a result."""
    keys = np.empty(x.shape[0], np.int64)
    o = np.uint64(origin)
    top = np.uint64(last)
    for i in range(x.shape[0]):
        v = x[i]
        if v < origin:
            keys[i] = -1
            continue
        q = np.uint64(0) if width == 0 else (np.uint64(v) - o) // width
        if q <= top:
            keys[i] = np.int64(q)
        elif v == 9223372036854775807:
            keys[i] = last
        else:
            keys[i] = last + 1
    return keys


@nb.njit(cache=True, nogil=True)
def linspace_rows(lo, hi, num):
    """Row r is np.linspace(lo[r], hi[r], num), bit for bit (same operations, same order)."""
    rows = lo.shape[0]
    out = np.empty((rows, num))
    div = num - 1
    for r in range(rows):
        delta = hi[r] - lo[r]
        step = delta / div
        start = lo[r]
        if step == 0:   # numpy's branch for a step that underflows
            for i in range(num):
                out[r, i] = (i / div) * delta + start
        else:
            for i in range(num):
                out[r, i] = i * step + start
        out[r, num - 1] = hi[r]
    return out


# Slow compiles say so on stderr (the kernels Python calls; see engine/jit.py).
announce_all(globals(), ("lttb_walk", "floor_keys", "linspace_rows"), "read-side")
