"""One tensor (a segment of the kernel's input) from start to end, and the kernel that
summarises many segments in one call.

Passes. With caller ``fixed`` edges everything is computed in ONE pass over the data.
With derived edges, pass 1 (scan.py) finds min, max and the NaN/inf counts on the raw
bits, pass 2 computes the rest (skipping the NaN/inf tests when pass 1 found none;
skipped altogether when all finite values are equal).

A segment is the elements flat[row_starts[r] + i1*s1 + i2*s2], r0 <= r < r1, i1 < n1,
i2 < n2; the buffers (work, cmap, buf, idx, cidx, acc) are reused for every segment of
one kernel call. Arguments are passed flat, never in tuples, and the helpers of
``segment`` are inlined into it (numba IR): tuples of arrays and kernels of their own
each add compile time to the first summary of every dtype (seconds, over all of them).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .access import fill
from .binning import coarse, uniform_eps
from .fields import (A_ANCHOR, A_BASE, A_INV, A_M2, A_MAX, A_MEAN, A_MIN, A_N, A_SQ, A_W, A_ZERO, CHUNK,
                     MODE_SEARCH, MODE_UNIFORM, NACC, NSTATS, Q, QA, S_COUNT, S_INF, S_L2, S_MAX, S_MEAN, S_MIN,
                     S_NAN, S_Q, S_STD, S_ZERO, TABLE_MIN)
from .histogram import adapt_window, chunk_bins, linspace
from .moments import chunk_minmax, chunk_moments, moments_scaled
from .quantiles import quantiles
from .scan import scan, scan_floats
from .table import FLAG, build_cmap, flag, flush


@nb.njit(cache=True, nogil=True)
def summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, fixed_mode, bins,
                       stats, edges, counts):
    """Summarise segment s into stats[s], edges[s] and counts[s]: the elements
    flat[row + i1*s1 + i2*s2] for row in row_starts[seg_rows[s]:seg_rows[s+1]] and
    (n1, s1, n2, s2) = dims[s]. ``bits`` is flat's memory as integers and ``fmt`` says how
    to read them (see prepare.py); ``lut`` converts float16 bits. ``fixed``: the caller's
    edges, or None to derive them from [min, max] (None compiles only that path, and
    edges only the one-pass path: a derived-edges summary never compiles the adaptive
    window, nor a caller-edges one the min/max scan)."""
    work = np.empty(3 * QA, np.int64)          # fine histogram, merge space, snapshot
    cmap = np.empty(QA, np.int32)
    buf = np.empty(CHUNK)
    idx = np.empty(CHUNK, np.int32)
    cidx = np.empty(CHUNK, np.int32)
    acc = np.empty(NACC)
    tmp = np.empty(1, bits.dtype)
    for s in range(dims.shape[0]):
        segment(flat, bits, lut, fmt, tmp, row_starts, seg_rows[s], seg_rows[s + 1], dims[s, 0], dims[s, 1],
                dims[s, 2], dims[s, 3], fixed, fixed_mode, bins, stats[s], edges[s], counts[s],
                work, cmap, buf, idx, cidx, acc)


@nb.njit(cache=True, nogil=True)
def segment(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2, fixed, fixed_mode, bins,
            stats, edges, counts, work, cmap, buf, idx, cidx, acc):
    """Summarise one segment into stats, edges and counts."""
    size = (r1 - r0) * n1 * n2
    adaptive = fixed is not None
    fin, nan, mn, mx = 0, 0, 0.0, 0.0
    mode = fixed_mode
    nf = QA
    acc[:] = 0.0
    acc[A_MIN] = np.inf
    acc[A_MAX] = -np.inf
    if fixed is not None:                       # (tests on ``fixed`` itself: numba drops the other path)
        for i in range(fixed.shape[0]):         # (a loop: a slice copy compiles numba's shape error text)
            edges[i] = fixed[i]
    else:
        nf = Q
        mode = MODE_UNIFORM
        fin, nan, mn, mx = scan(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2)
        derive_edges(fin, mn, mx, edges, acc)
    erange = edges[bins] - edges[0]
    escale = 0.0
    if erange > 0.0 and np.isfinite(erange):
        escale = bins / erange
    else:
        mode = MODE_SEARCH
    counts[:] = 0
    if not adaptive and fin > 0 and mn == mx:   # one distinct finite value: no second pass
        one_value(mn, fin, nan, size, edges, bins, mode, escale, stats, counts)
        return
    work[:nf] = 0
    table = size >= TABLE_MIN and (adaptive or fin > 0)
    eps = 1.0
    if mode == MODE_UNIFORM and not table:
        eps = uniform_eps(edges, bins, escale)
    if table and not adaptive:
        work[2 * QA:2 * QA + nf] = 0
        build_cmap(cmap, nf, acc[A_ANCHOR], acc[A_INV], 0.0, acc[A_W], acc[A_MIN], acc[A_MAX],
                   edges, bins, mode, escale)
        flag(work, cmap, nf, np.int64(FLAG))
    nan2 = 0
    if size > 0 and (adaptive or fin > 0):
        nan2 = chunks(flat, bits, lut, fmt, row_starts, r0, r1, n1, s1, n2, s2, fixed, fin == size, nf, table,
                      edges, bins, mode, escale, eps, counts, work, cmap, buf, idx, cidx, acc)
    finish(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, size, nan2 if adaptive else nan, nf, stats, buf,
           work, acc)


@nb.njit(cache=True, nogil=True, inline="always")
def derive_edges(fin, mn, mx, edges, acc):
    """edges as np.histogram spreads them over [mn, mx], and the fine window over it."""
    if fin == 0:
        linspace(0.0, 1.0, edges)
    elif mn == mx:
        linspace(mn - 0.5, mx + 0.5, edges)
    else:
        linspace(mn, mx, edges)
    if fin > 0:
        acc[A_MIN] = mn
        acc[A_MAX] = mx
        acc[A_ANCHOR] = mn
        rng = mx - mn
        if not np.isfinite(rng):
            rng = mx / Q - mn / Q
            acc[A_W] = rng
            acc[A_INV] = 1.0 / rng
        elif rng > 0.0:
            acc[A_W] = rng / Q
            acc[A_INV] = Q / rng


@nb.njit(cache=True, nogil=True, inline="always")
def one_value(mn, fin, nan, size, edges, bins, mode, escale, stats, counts):
    """The summary of a segment whose finite values all equal mn."""
    i = coarse(mn, edges, bins, mode, escale)
    if i >= 0:
        counts[i] = fin
    stats[S_COUNT] = size
    stats[S_NAN] = nan
    stats[S_INF] = size - fin - nan
    stats[S_MIN] = mn
    stats[S_MAX] = mn
    stats[S_MEAN] = mn
    stats[S_STD] = 0.0
    stats[S_L2] = abs(mn) * np.sqrt(fin)
    stats[S_ZERO] = 1.0 if mn == 0.0 else 0.0
    stats[S_Q:] = mn


@nb.njit(cache=True, nogil=True, inline="always")
def chunks(flat, bits, lut, fmt, row_starts, r0, r1, n1, s1, n2, s2, fixed, all_finite, nf, table,
           edges, bins, mode, escale, eps, counts, work, cmap, buf, idx, cidx, acc):
    """Pass 2 (or the one pass): the segment's finite values, chunk by chunk, into the
    moments and both histograms; returns the NaNs seen (counted here in the one pass)."""
    nan = 0
    r = r0
    i1 = 0
    i2 = 0
    while r < r1:
        k = np.int64(0)                         # (not a literal 0: fill compiles once)
        while r < r1 and k < CHUNK:             # fill the chunk buffer (exactly: results do not
                                                # depend on how the elements split into rows)...
            m = min(n2 - i2, CHUNK - k)
            q = row_starts[r] + i1 * s1 + i2 * s2
            fast = all_finite
            if fixed is not None:               # one pass: test these floats' bits first (vectorised)
                fast = not fmt[0] or not scan_floats(bits, q, m, s2, fmt, fmt[3], fmt[4])[0]
            k, seen = fill(flat, lut, q, m, s2, buf, k, fast)
            nan += seen
            i2 += m
            if i2 == n2:
                i2 = 0
                i1 += 1
                if i1 == n1:
                    i1 = 0
                    r += 1
        if k:
            chunk_moments(buf, k, acc)
            if fixed is not None:
                if acc[A_W] == 0.0:
                    acc[A_ANCHOR] = buf[0]
                mn, mx = chunk_minmax(buf, k)
                acc[A_MIN] = min(acc[A_MIN], mn)
                acc[A_MAX] = max(acc[A_MAX], mx)
                adapt_window(acc, work, cmap, table, edges, bins, mode, escale, counts)
            chunk_bins(buf, k, edges, bins, mode, escale, eps, counts, work, nf, acc[A_ANCHOR], acc[A_INV],
                       acc[A_BASE], cmap, table, idx, cidx)
    if table and (fixed is None or acc[A_W] != 0.0):   # (no window without a finite value)
        flag(work, cmap, nf, np.int64(-FLAG))
        flush(work, cmap, nf, counts)
    return nan


@nb.njit(cache=True, nogil=True, inline="always")
def finish(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, size, nan, nf, stats, buf, work, acc):
    """stats from the running totals and the fine histogram of a segment."""
    n = int(acc[A_N])
    stats[S_COUNT] = size
    stats[S_NAN] = nan
    stats[S_INF] = size - n - nan
    if n == 0:
        for j in range(S_MIN, NSTATS):
            stats[j] = np.nan
        stats[S_ZERO] = 0.0
        return
    mn = acc[A_MIN]
    mx = acc[A_MAX]
    stats[S_MIN] = mn
    stats[S_MAX] = mx
    stats[S_ZERO] = acc[A_ZERO] / n
    quantiles(work, nf, n, acc[A_ANCHOR], acc[A_W], acc[A_BASE], mn, mx, stats[S_Q:])
    big = max(abs(mn), abs(mx))
    if big > 1e150 or 0.0 < big < 1e-150:      # squares over- or underflow: again, scaled
        e = math.frexp(big)[1]
        moments_scaled(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, -e, buf, acc)
        stats[S_MEAN] = math.ldexp(acc[A_MEAN], e)
        stats[S_STD] = math.ldexp(np.sqrt(acc[A_M2] / n), e)
        stats[S_L2] = math.ldexp(np.sqrt(acc[A_SQ]), e)
    else:
        stats[S_MEAN] = acc[A_MEAN]
        stats[S_STD] = np.sqrt(acc[A_M2] / n)
        stats[S_L2] = np.sqrt(acc[A_SQ])
