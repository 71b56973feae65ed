"""The output bins of a large tensor, read off the fine histogram.

The output histogram of a large tensor is read off the fine one: values are binned once
(fine bin j), and cmap[j] says which output bin *every* float64 of fine bin j falls in
(-2: none, all outside the edges), or -1 when they straddle an output edge; only
values of the straddling fine bins (a few percent) are binned into the output
histogram one by one, the rest are added bin by bin (``_flush``). The fine index is a
monotone function of v, so fine bin j holds exactly the floats from the first float
with index >= j to the float before the first with index >= j + 1 (both found by
stepping with nextafter from an estimate, evaluating the very same expression), and the
output bin is monotone too: the two ends decide. Built once per segment (derived edges)
or per window change (caller edges), for segments of at least TABLE_MIN elements.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .binning import coarse, fine_pos
from .fields import QA

FLAG = -(1 << 62)
_STEPS = 64


@nb.njit(cache=True, nogil=True)
def _first_float(j, anchor, inv, base, w, top):
    """The smallest float64 x in fine bin >= j (1 <= j <= top), or NaN if not found."""
    x = anchor + (base + j) * w
    if not np.isfinite(x):
        return np.nan
    found = False
    for _ in range(_STEPS):
        if fine_pos(x, anchor, inv, base, top) >= j:
            found = True
            break
        x = np.nextafter(x, np.inf)
    if not found:
        return np.nan
    for _ in range(_STEPS):
        y = np.nextafter(x, -np.inf)
        if not fine_pos(y, anchor, inv, base, top) >= j:
            return x
        x = y
    return np.nan


@nb.njit(cache=True, nogil=True)
def build_cmap(cmap, nf, anchor, inv, base, w, lo_bound, hi_bound, edges, bins, mode, escale):
    """cmap[j] for the fine bins 0..nf-1; values below fine bin 1 are >= lo_bound, values
    in the top bin are <= hi_bound."""
    lo = lo_bound
    top = nf - 1.0
    for j in range(nf):
        if j + 1 < nf:
            nxt = _first_float(j + 1, anchor, inv, base, w, top)
            hi = np.nextafter(nxt, -np.inf)
        else:
            nxt = np.nan
            hi = hi_bound
        c = -1
        if lo <= hi:                            # False for NaN ends (unknown: ambiguous)
            a = coarse(lo, edges, bins, mode, escale)
            b = coarse(hi, edges, bins, mode, escale)
            if a == b:
                c = max(a, -2)
        cmap[j] = c
        lo = nxt


@nb.njit(cache=True, nogil=True)
def flag(work, cmap, nf, add):
    """Mark (add = FLAG) or unmark (-FLAG) the straddling fine bins: their counts go
    below zero by FLAG, so the counting loop learns "straddling" from the count it just
    incremented. (An int64 argument, not a bool: a literal True and False would compile apart.)"""
    fine = work[0:nf]
    for j in range(nf):
        if cmap[j] == -1:
            fine[j] += add


@nb.njit(cache=True, nogil=True)
def flush(work, cmap, nf, counts):
    """Add the fine counts gathered since the last flush to the output bins cmap says."""
    fine = work[0:nf]
    snap = work[2 * QA:2 * QA + nf]
    for j in range(nf):
        c = cmap[j]
        if c >= 0:
            counts[c] += fine[j] - snap[j]
        snap[j] = fine[j]
