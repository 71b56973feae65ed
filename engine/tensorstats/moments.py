"""Moments of finite float64 chunks: count, mean and M2 (Chan et al.), sum of squares,
zeros; and the rescaled pass for values whose squares over- or underflow.

``mean`` and ``std`` (population) come from chunks of CHUNK finite values, two loops
over each chunk while it is in L1 (its mean, then the squared deviations from it),
merged into the running totals. ``l2`` is the square root of the float64 sum of
squares. When the largest magnitude is beyond 1e150 or below 1e-150, mean, std and l2
are recomputed in one more pass over the values scaled by a power of two.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .access import load
from .fields import A_M2, A_MEAN, A_N, A_SQ, A_ZERO


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def chunk_moments(buf, k, acc):
    """Fold buf[:k] (finite float64) into the running count, mean, M2, sum of squares, zeros."""
    s = 0.0
    zeros = 0
    for t in range(k):
        v = buf[t]
        s += v
        zeros += np.int64(v == 0.0)
    mean = s / k
    m2 = 0.0
    sq = 0.0
    for t in range(k):
        v = buf[t]
        d = v - mean
        m2 += d * d
        sq += v * v
    # Chan et al.: merge (k, mean, m2) into the running (n, mean, M2)
    n_a = acc[A_N]
    n = n_a + k
    delta = mean - acc[A_MEAN]
    acc[A_MEAN] += delta * (k / n)
    acc[A_M2] += m2 + delta * delta * (n_a * (k / n))
    acc[A_N] = n
    acc[A_SQ] += sq
    acc[A_ZERO] += zeros


@nb.njit(cache=True, nogil=True)
def moments_scaled(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, e, buf, acc):
    """acc = count, mean, M2, sum of squares of the finite values times 2**e: the moments
    of values whose squares would over- or underflow."""
    acc[:] = 0.0
    k = np.int64(0)                             # (not a literal 0: chunk_moments compiles once)
    for r in range(r0, r1):
        for i1 in range(n1):
            p = row_starts[r] + i1 * s1
            for i2 in range(n2):
                v = load(flat, lut, p + i2 * s2)
                if v - v == 0.0:
                    buf[k] = math.ldexp(v, e)
                    k += 1
                    if k == buf.shape[0]:
                        chunk_moments(buf, k, acc)
                        k = 0
    if k:
        chunk_moments(buf, k, acc)


@nb.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})   # (buf is finite: it vectorises)
def chunk_minmax(buf, k):
    mn = buf[0]
    mx = buf[0]
    for t in range(k):
        v = buf[t]
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx
