"""numba kernels of the read side. Importing this module imports numba: import it lazily."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def lttb(x, y, n):
    """Largest-Triangle-Three-Buckets over the points with finite y; returns at most ``n``
    indices into x and y, ascending: every point when there are at most n, else the
    first and the last point (whatever their y) and up to n - 2 finite ones between.
    With n == 1 it is the last point alone: what a view of the latest value shows.
    x must be sorted."""
    size = x.shape[0]
    if n <= 0 or size == 0:
        return np.empty(0, np.int64)
    if n == 1:
        return np.array([size - 1])
    if n >= size:
        return np.arange(size)
    if n == 2:
        return np.array([0, size - 1])
    finite = np.empty(size, np.int64)
    m = 0
    for i in range(1, size - 1):
        if np.isfinite(y[i]):
            finite[m] = i
            m += 1
    out = np.empty(n, np.int64)
    out[0] = 0
    k = 1
    inner = n - 2
    if m <= inner:
        for j in range(m):
            out[k] = finite[j]
            k += 1
    else:
        every = m / inner
        a = 0  # index into x/y of the last chosen point
        for b in range(inner):
            lo = int(b * every)
            hi = int((b + 1) * every)
            # average of the next bucket (or the last point for the final bucket)
            nlo = hi
            nhi = int((b + 2) * every) if b + 1 < inner else m
            if nlo < nhi:
                ax = 0.0
                ay = 0.0
                for j in range(nlo, nhi):
                    ax += x[finite[j]]
                    ay += y[finite[j]]
                ax /= nhi - nlo
                ay /= nhi - nlo
            else:
                ax = x[size - 1]
                ay = y[size - 1] if np.isfinite(y[size - 1]) else y[finite[m - 1]]
            best = -1.0
            pick = finite[lo]
            pa_x = x[a]
            pa_y = y[a] if np.isfinite(y[a]) else 0.0
            for j in range(lo, hi):
                i = finite[j]
                area = abs((pa_x - ax) * (y[i] - pa_y) - (pa_x - x[i]) * (ay - pa_y))
                if area > best:
                    best = area
                    pick = i
            out[k] = pick
            k += 1
            a = pick
    out[k] = size - 1
    return out[:k + 1]


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
