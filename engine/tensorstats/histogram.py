"""Histogram binning: numpy's output bin of a value, derived edges, and the fine
histogram that quantiles are read from.

Edges come from the caller (1-d, strictly increasing, finite), or ``bins`` bins spread
over [min, max] of the finite values as ``np.histogram(finite, bins)`` spreads them:
``np.linspace(min, max, bins + 1)`` in float64 (the same float operations), [min - 0.5,
max + 0.5] when min == max, [0, 1] without finite values. Counts equal
``np.histogram(finite.astype(np.float64), bins=edges)[0]`` bit for bit: v is in bin i
when edges[i] <= v < edges[i + 1], the last bin also holds edges[-1], values outside
[edges[0], edges[-1]] are not counted. A bin index comes from the uniform formula and is
then corrected against the edges array itself (caller edges far from uniform: a binary
search), so values on an edge land as in numpy. Large tensors read the output bin off
the fine bin (table.py); small ones skip the correction where the uniform guess is
provably right (``uniform_eps``).

The fine histogram: with derived edges, Q bins over the exact [min, max]. With caller
edges (one pass: min and max are not known up front) it is adaptive: QA = 2 Q + 4 bins
whose width w is a power of two, anchored on the first finite value and widened
(doubling w merges bins exactly) whenever a chunk reaches outside (``adapt_window``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .fields import A_ANCHOR, A_BASE, A_INV, A_MAX, A_MIN, A_W, MODE_UNIFORM, QA
from .binning import coarse
from .table import FLAG, build_cmap, flag, flush

_MIN_W = 2.0 ** -1022
_MAX_W = 2.0 ** 1023


@nb.njit(cache=True, nogil=True)
def _span(lo, hi, anchor, inv):
    return np.floor((hi - anchor) * inv) - np.floor((lo - anchor) * inv)


@nb.njit(cache=True, nogil=True)
def adapt_window(acc, work, cmap, table, edges, bins, mode, escale, counts):
    """Make the adaptive fine histogram (work[:QA]) cover [acc[A_MIN], acc[A_MAX]].

    Bin b holds the values with floor((v - anchor) / w) == base + b. w is the smallest
    power of two (>= the current one) whose QA bins cover [min, max]; doubling w by 2**k
    maps old bin index i to floor(i / 2**k) exactly, so counts are merged, not guessed.
    """
    lo = acc[A_MIN]
    hi = acc[A_MAX]
    anchor = acc[A_ANCHOR]
    w = acc[A_W]
    inv = acc[A_INV]
    base = acc[A_BASE]
    first = w == 0.0
    if first:                                   # start below the answer, double up to it
        d = hi * 0.5 - lo * 0.5
        w = _MIN_W
        if d > 0.0:
            e = math.frexp(d / QA)[1]           # d / QA < 2**e: 2**(e-1) < (hi - lo) / QA
            w = max(_MIN_W, math.ldexp(1.0, e - 1))
        inv = 1.0 / w
    elif np.floor((lo - anchor) * inv) >= base and np.floor((hi - anchor) * inv) < base + QA:
        return
    nq = np.int64(QA)                           # (typed, not literal: the callees compile once)
    unflag = np.int64(-FLAG)
    k = 0
    while _span(lo, hi, anchor, inv) >= QA and w < _MAX_W:
        w *= 2.0
        inv *= 0.5
        k += 1
    new_base = np.floor((lo - anchor) * inv)
    fine = work[0:QA]
    if not first:
        if table:
            flag(work, cmap, nq, unflag)
            flush(work, cmap, nq, counts)
        tmp = work[QA:2 * QA]
        tmp[:] = 0
        shift = 2.0 ** -min(k, 60)
        for b in range(QA):
            c = fine[b]
            if c:
                j = int(np.floor((base + b) * shift) - new_base)
                tmp[min(max(j, 0), QA - 1)] += c
        for b in range(QA):                     # (a loop: a slice copy compiles numba's shape error text)
            fine[b] = tmp[b]
    acc[A_W] = w
    acc[A_INV] = inv
    acc[A_BASE] = new_base
    if table:
        for b in range(QA):
            work[2 * QA + b] = fine[b]
        build_cmap(cmap, nq, anchor, inv, new_base, w, -np.inf, np.inf, edges, bins, mode, escale)
        flag(work, cmap, nq, -unflag)


@nb.njit(cache=True, nogil=True)
def chunk_bins(buf, k, edges, bins, mode, escale, eps, counts, work, nf, anchor, inv, base, cmap, table, idx, cidx):
    """Add buf[:k] to the fine histogram work[:nf] and to the output one (``counts``).
    (The index computations are written out, not called, so that their loops vectorise;
    _fine_pos is the fine one.) buf is used up."""
    top = nf - 1.0
    fine = work[0:nf]
    if table:
        for t in range(k):
            idx[t] = np.int32(min(max(0.0, (buf[t] - anchor) * inv - base), top))
        na = 0
        for t in range(k):                      # count; straddling values go to the front of buf
            j = idx[t]
            c = fine[j] + 1
            fine[j] = c
            buf[na] = buf[t]
            na += np.int64(c < 0)
        for t in range(na):
            i = coarse(buf[t], edges, bins, mode, escale)
            if i >= 0:
                counts[i] += 1
        return
    if mode == MODE_UNIFORM:                    # small segments: see binning.uniform_eps
        lo_edge = edges[0]
        hi_edge = edges[bins]
        last = bins - 1
        lastf = float(last)
        for t in range(k):
            v = buf[t]
            idx[t] = np.int32(min(max(0.0, (v - anchor) * inv - base), top))
            g = min(max(0.0, (v - lo_edge) * escale), lastf)
            f = np.floor(g)
            d = g - f
            i = np.int32(f)
            cidx[t] = i if d > eps and d < 1.0 - eps else -1 - i
        for t in range(k):
            fine[idx[t]] += 1
            i = cidx[t]
            if i < 0:                           # near an edge (or outside): check the edges
                v = buf[t]
                if v < lo_edge or v > hi_edge:
                    continue
                i = -1 - i
                while i > 0 and v < edges[i]:
                    i -= 1
                while i < last and v >= edges[i + 1]:
                    i += 1
            counts[i] += 1
        return
    for t in range(k):
        v = buf[t]
        fine[int(min(max(0.0, (v - anchor) * inv - base), top))] += 1
        i = coarse(v, edges, bins, mode, escale)
        if i >= 0:
            counts[i] += 1


@nb.njit(cache=True, nogil=True)
def linspace(lo, hi, edges):
    """edges[:] = np.linspace(lo, hi, len(edges)): the same float64 operations as numpy."""
    div = edges.shape[0] - 1
    delta = hi - lo
    step = delta / div
    if not np.isfinite(delta):                  # the range overflows float64 (numpy: NaN)
        half = (hi * 0.5 - lo * 0.5) / div      # so work on halves
        for i in range(div):
            edges[i] = (lo * 0.5 + i * half) * 2.0
    elif step == 0.0:
        for i in range(div):
            edges[i] = (i / div) * delta + lo
    else:
        for i in range(div):
            edges[i] = i * step + lo
    edges[div] = hi
