"""Quantiles (q = 1, 5, 25, 50, 75, 95, 99 %) from the fine histogram.

They follow ``np.quantile(finite, q, method="linear")``, with the order statistics read
from the fine histogram built in the same pass as the output one: an order statistic
is placed inside its fine bin by linear interpolation on its rank there (clamped to
[min, max]; rank 0 and rank n - 1 are min and max exactly). Both order statistics that
the linear method mixes are off by at most one fine bin width w, so

    |quantile - np.quantile(finite, q)| <= w <= max((max - min) / Q, 1.2e-305),  Q = 2048

plus float64 rounding (the second term only matters for subnormal-scale ranges). With
caller edges w is the smallest power of two (>= 2**-1022) whose QA bins cover [min,
max], so w <= 2 (max - min) / (QA - 2) < (max - min) / Q. Limitation: float64 data whose
range max - min overflows float64 (> 1.8e308) gets quantiles only clamped to [min, max].
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .fields import QA, QUANTILES

BLOCK = 32


@nb.njit(cache=True, nogil=True)
def quantiles(work, nf, n, anchor, w, base, mn, mx, out):
    """out[j] = quantile QUANTILES[j] of the n values binned in work[:nf] (linear method):
    the order statistics of rank floor(h) and floor(h) + 1, h = (n - 1) q, each placed in
    its bin by its rank there, then mixed as numpy mixes them. One forward sweep, first
    over blocks of BLOCK bins (their sums in work[QA:]), then over the bins of a block."""
    fine = work[0:nf]
    nblocks = (nf + BLOCK - 1) // BLOCK
    blocks = work[QA:QA + nblocks]
    for g in range(nblocks):
        total = 0
        for b in range(g * BLOCK, min(nf, (g + 1) * BLOCK)):
            total += fine[b]
        blocks[g] = total
    g = 0
    gbefore = 0                                 # values in the blocks below g
    b = 0
    before = 0                                  # values in the bins below b
    prev = -1
    v_lo = 0.0
    v_hi = 0.0
    for j in range(QUANTILES.shape[0]):
        h = (n - 1) * QUANTILES[j]
        lo = np.floor(h)
        frac = h - lo
        r = int(lo)
        if r != prev:                           # ranks only grow
            for which in range(2):
                rr = min(r + which, n - 1)
                while g < nblocks - 1 and gbefore + blocks[g] <= rr:
                    gbefore += blocks[g]
                    g += 1
                if b < g * BLOCK:
                    b = g * BLOCK
                    before = gbefore
                while b < nf - 1 and before + fine[b] <= rr:
                    before += fine[b]
                    b += 1
                if rr == 0:
                    v = mn
                elif rr == n - 1:
                    v = mx
                else:
                    c = fine[b]
                    pos = (rr - before + 0.5) / c if c > 0 else 0.5
                    v = min(max(anchor + (base + b + pos) * w, mn), mx)
                if which == 0:
                    v_lo = v
                else:
                    v_hi = v
            prev = r
        out[j] = v_lo + (v_hi - v_lo) * frac if frac > 0.0 else v_lo
