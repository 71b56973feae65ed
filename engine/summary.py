"""Tensor summaries: pure numba kernels and a thin Python entry point.

Importing this module imports numba, so the rest of steplog imports it lazily (inside
functions). Kernels are compiled on first use and cached on disk (``cache=True``);
``nogil=True`` lets them run beside other Python threads. One specialisation of the
kernel is compiled per input dtype (13 of them: a cold cache takes minutes to fill).

What a summary holds (``SUMMARY_FIELDS``, one float64 each; counts are exact integers):

    count nan_count inf_count | min max mean std l2 zero_fraction | q01 q05 q25 q50 q75 q95 q99

plus a histogram: ``edges`` (float64, bins + 1) and ``counts`` (int64, bins).

* ``count`` is the number of elements; ``nan_count`` and ``inf_count`` (+inf and -inf)
  are counted and left out of every other statistic: those are over the *finite*
  values, each converted to float64 (int64/uint64 beyond 2**53 round as
  ``astype(np.float64)`` does; float16 converts exactly).
* ``min``/``max`` are exact. ``mean`` and ``std`` (population) come from chunks of
  CHUNK finite values, two loops over each chunk while it is in L1 (its mean, then the
  squared deviations from it), merged into the running totals with Chan's formula.
  ``l2`` is the square root of the float64 sum of squares (float32 squares cannot
  overflow it). When the largest magnitude is beyond 1e150 or below 1e-150, squares
  would over- or underflow: mean, std and l2 are then recomputed in one more pass over
  the values scaled by a power of two. ``zero_fraction`` = zeros (+0.0 and -0.0) /
  finite values.
* No finite value (empty tensor, all NaN/inf): min, max, mean, std, l2 and the
  quantiles are NaN, zero_fraction is 0 (as defined: 0 without finite values), the
  histogram counts are all zero. A 0-d tensor is one element.
* Chunk boundaries depend only on the sequence of finite values in reading order, not
  on how the layout splits it into rows, so ``summarize_many`` (which reads each tensor
  in the same order from a concatenated copy) equals ``summarize`` bit for bit.

Histogram. ``edges`` from the caller (1-d, strictly increasing, finite), or ``bins``
bins spread over [min, max] of the finite values as ``np.histogram(finite, bins)``
spreads them: ``np.linspace(min, max, bins + 1)`` in float64 (the same float
operations), [min - 0.5, max + 0.5] when min == max, [0, 1] without finite values. The
counts equal ``np.histogram(finite.astype(np.float64), bins=edges)[0]`` bit for bit:
v is in bin i when edges[i] <= v < edges[i + 1], the last bin also holds edges[-1],
values outside [edges[0], edges[-1]] are not counted. A bin index comes from the
uniform formula and is then corrected against the edges array itself (caller edges
far from uniform: a binary search), so values on an edge land as in numpy. Two ways
avoid that work for most values: segments of TABLE_MIN elements or more read the
output bin off the fine histogram's bin (see ``_build_cmap``), smaller ones skip the
correction where the uniform guess is provably right (``_uniform_eps``).

Quantiles (q = 1, 5, 25, 50, 75, 95, 99 %) follow ``np.quantile(finite, q,
method="linear")``, with the order statistics read from a fine histogram built in the
same pass as the output histogram: an order statistic is placed inside its fine bin by
linear interpolation on its rank there (clamped to [min, max]; rank 0 and rank n - 1
are min and max exactly). Both order statistics that the linear method mixes are off
by at most one fine bin width w, so

    |quantile - np.quantile(finite, q)| <= w <= max((max - min) / Q, 1.2e-305),  Q = 2048

plus float64 rounding (the second term only matters for subnormal-scale ranges). With
derived edges the fine histogram is Q bins over the exact [min, max]. With caller
edges (one pass: min and max are not known up front) it is adaptive: QA = 2 Q + 4 bins
whose width w is a power of two, anchored on the first finite value and widened
(doubling w merges bins exactly) whenever a chunk reaches outside; w is the smallest
power of two (>= 2**-1022) whose QA bins cover [min, max], so w <= 2 (max - min) /
(QA - 2) < (max - min) / Q. Limitation: float64 data whose range max - min overflows
float64 (> 1.8e308) gets exact counts, min, max, mean, std and histogram, but its
quantiles are only clamped to [min, max], and its derived edges are computed on halved
values (where np.linspace gives NaN).

Passes. With caller ``edges`` everything is computed in ONE pass over the data. With
derived edges, pass 1 finds min, max and the NaN/inf counts (on the raw bits, see
below), pass 2 computes the rest (skipping the NaN/inf tests when pass 1 found none;
skipped altogether when all finite values are equal).

Layout. The input is read in place, with no copy of the tensor: negative strides are
flipped, axes sorted by decreasing stride and merged where adjacent, so contiguous,
transposed and reversed tensors become one run of elements, and strided slices at
most two levels (n1, s1) x (n2, s2) walked by the kernel; only layouts with three or
more unmergeable levels get an array of their row offsets (an index, not a copy of
the data). The copies: arrays whose strides are not multiples of the item size
(``np.ascontiguousarray``), non-native byte order (``astype``), and ``summarize_many``,
which concatenates the tensors of each dtype into one buffer with an offsets array to
make one kernel call per dtype that loops over the segments. float16 is viewed as
uint16 and converted through an exact 65536-entry table (float16 -> float32 is exact).
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

import numba as nb
import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError

SUMMARY_FIELDS = ("count", "nan_count", "inf_count", "min", "max", "mean", "std", "l2", "zero_fraction",
                  "q01", "q05", "q25", "q50", "q75", "q95", "q99")
QUANTILES = np.array([0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99])
Q = 2048             # fine bins over [min, max] (derived edges)
QA = 2 * Q + 4       # adaptive fine bins (caller edges)
CHUNK = 1024         # finite values per chunk (with the fine histogram, fits in L1)

NSTATS = 16
S_COUNT, S_NAN, S_INF, S_MIN, S_MAX, S_MEAN, S_STD, S_L2, S_ZERO, S_Q = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9

# running totals of one segment (a float64 array, so that helpers can update it)
A_N, A_MEAN, A_M2, A_SQ, A_ZERO, A_MIN, A_MAX, A_ANCHOR, A_W, A_INV, A_BASE = range(11)
NACC = 11

MODE_UNIFORM = 0     # fast uniform formula, then corrected against the edges
MODE_SEARCH = 1      # binary search in the edges

_MIN_W = 2.0 ** -1022
_MAX_W = 2.0 ** 1023


# -- element access -----------------------------------------------------------------------

@nb.njit(cache=True, nogil=True, inline="always")   # inlined before LLVM sees the loops: they vectorise
def _load(flat, lut, k):
    """Element k of ``flat`` as float64 (``lut`` maps float16 bits to float32, else None)."""
    if lut is None:
        return np.float64(flat[k])
    return np.float64(lut[flat[k]])


@nb.njit(cache=True, nogil=True)
def _decode(flat, lut, tmp, b):
    """The float64 value of the element whose bits are ``b`` (tmp: 1 element of bits.dtype)."""
    tmp[0] = b
    return _load(tmp.view(flat.dtype), lut, 0)


# -- pass 1: finite/NaN counts, min and max, on the raw bits ---------------------------------
#
# Floats are read as signed integers of their width (``bits``): a value is finite when
# (bits & maxpos) < expmask and NaN when it is greater; key = bits ^ (maxpos if bits < 0)
# orders finite floats as the floats order (the transform is its own inverse). Integer
# compares, selects, min and max in the bits' own width (numba widens integer arithmetic
# to int64 unless cast back): the loop vectorises, and NaN needs no special case. The
# NaN/inf counts take a second loop, run only over rows that hold a non-finite value.

@nb.njit(cache=True, nogil=True)
def _scan_floats(bits, p, n, step, fmt, kmin, kmax):
    """(any non-finite?, min key, max key) of the finite values among bits[p + t*step]."""
    maxpos = fmt[1]
    expmask = fmt[2]
    largest = fmt[3]
    smallest = fmt[4]
    zero = fmt[5]
    top = zero                                  # the largest |bits|: >= expmask if any non-finite
    if step != 1:
        for t in range(n):
            b = bits[p + t * step]
            a = bits.dtype.type(b & maxpos)
            key = bits.dtype.type(b ^ (maxpos if b < zero else zero))
            ok = a < expmask
            top = max(top, a)
            kmin = min(kmin, key if ok else largest)
            kmax = max(kmax, key if ok else smallest)
        return top >= expmask, kmin, kmax
    src = bits[p:p + n]
    for t in range(n):                          # (the same, at unit stride: vectorised)
        b = src[t]
        a = bits.dtype.type(b & maxpos)
        key = bits.dtype.type(b ^ (maxpos if b < zero else zero))
        ok = a < expmask
        top = max(top, a)
        kmin = min(kmin, key if ok else largest)
        kmax = max(kmax, key if ok else smallest)
    return top >= expmask, kmin, kmax


@nb.njit(cache=True, nogil=True)
def _count_nonfinite(bits, p, n, step, fmt):
    """(finite, NaN) counts among bits[p + t*step] (only run when there is a non-finite value)."""
    fin = 0
    nan = 0
    for t in range(n):
        a = bits.dtype.type(bits[p + t * step] & fmt[1])
        if a < fmt[2]:
            fin += 1
        elif a > fmt[2]:
            nan += 1
    return fin, nan


@nb.njit(cache=True, nogil=True)
def _scan_ints(bits, p, n, step, vmin, vmax):
    if step == 1:
        src = bits[p:p + n]
        for t in range(n):
            b = src[t]
            vmin = min(vmin, b)
            vmax = max(vmax, b)
    else:
        for t in range(n):
            b = bits[p + t * step]
            vmin = min(vmin, b)
            vmax = max(vmax, b)
    return vmin, vmax


@nb.njit(cache=True, nogil=True)
def _scan(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2):
    """Pass 1: (finite count, NaN count, min, max) of the finite values.

    fmt (of bits.dtype) = (is_float, maxpos, expmask, largest, smallest value of the type, 0)."""
    fin = 0
    nan = 0
    if fmt[0]:
        kmin = fmt[3]
        kmax = fmt[4]
        for r in range(r0, r1):
            for i1 in range(n1):
                bad, kmin, kmax = _scan_floats(bits, row_starts[r] + i1 * s1, n2, s2, fmt, kmin, kmax)
                if bad:
                    f, nn = _count_nonfinite(bits, row_starts[r] + i1 * s1, n2, s2, fmt)
                    fin += f
                    nan += nn
                else:
                    fin += n2
        if fin == 0:
            return fin, nan, np.nan, np.nan
        mn = _decode(flat, lut, tmp, kmin ^ (fmt[1] if kmin < fmt[5] else fmt[5]))
        mx = _decode(flat, lut, tmp, kmax ^ (fmt[1] if kmax < fmt[5] else fmt[5]))
        return fin, nan, mn, mx
    vmin = fmt[3]
    vmax = fmt[4]
    for r in range(r0, r1):
        for i1 in range(n1):
            vmin, vmax = _scan_ints(bits, row_starts[r] + i1 * s1, n2, s2, vmin, vmax)
            fin += n2
    if fin == 0:
        return fin, nan, np.nan, np.nan
    return fin, nan, _decode(flat, lut, tmp, vmin), _decode(flat, lut, tmp, vmax)


# -- pass 2 (or the one pass): chunks of finite float64 values ------------------------------

@nb.njit(cache=True, nogil=True)
def _fill(flat, lut, q, m, step, buf, k, all_finite):
    """Append the finite values among flat[q + t*step], t < m, to buf[k:]; -> (k, NaNs seen)."""
    if all_finite:
        dst = buf[k:k + m]
        if step == 1:                           # (on slices: LLVM then vectorises the loop)
            src = flat[q:q + m]
            for t in range(m):
                dst[t] = _load(src, lut, t)
        else:
            for t in range(m):
                dst[t] = _load(flat, lut, q + t * step)
        return k + m, 0
    nan = 0
    for t in range(m):
        v = _load(flat, lut, q + t * step)
        buf[k] = v
        if v - v == 0.0:
            k += 1
        elif v != v:
            nan += 1
    return k, nan


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _chunk_moments(buf, k, acc):
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
def _moments_scaled(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, e, buf, acc):
    """acc = count, mean, M2, sum of squares of the finite values times 2**e: the moments
    of values whose squares would over- or underflow."""
    acc[:] = 0.0
    k = 0
    for r in range(r0, r1):
        for i1 in range(n1):
            p = row_starts[r] + i1 * s1
            for i2 in range(n2):
                v = _load(flat, lut, p + i2 * s2)
                if v - v == 0.0:
                    buf[k] = math.ldexp(v, e)
                    k += 1
                    if k == buf.shape[0]:
                        _chunk_moments(buf, k, acc)
                        k = 0
    if k:
        _chunk_moments(buf, k, acc)


@nb.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})   # (buf is finite: it vectorises)
def _chunk_minmax(buf, k):
    mn = buf[0]
    mx = buf[0]
    for t in range(k):
        v = buf[t]
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx


@nb.njit(cache=True, nogil=True)
def _fine_pos(v, anchor, inv, base, top):
    """(v - anchor) * inv - base clamped to [0, top]: its integer part is v's fine bin."""
    return min(max(0.0, (v - anchor) * inv - base), top)


@nb.njit(cache=True, nogil=True)
def _coarse(v, edges, bins, mode, escale):
    """numpy's output bin of v: 0..bins-1, or -2 below edges[0], -3 above edges[bins]."""
    if v < edges[0]:
        return -2
    if v > edges[bins]:
        return -3
    last = bins - 1
    if mode == MODE_UNIFORM:
        i = int(min(max(0.0, (v - edges[0]) * escale), float(last)))
        while i > 0 and v < edges[i]:
            i -= 1
        while i < last and v >= edges[i + 1]:
            i += 1
        return i
    i = 0
    j = last
    while i < j:                                # the largest i <= last with edges[i] <= v
        mid = (i + j + 1) >> 1
        if edges[mid] <= v:
            i = mid
        else:
            j = mid - 1
    return i


_ULP = 2.0 ** -52


@nb.njit(cache=True, nogil=True)
def _uniform_eps(edges, bins, escale):
    """A margin (in bins) outside which the uniform guess floor((v - edges[0]) * escale)
    is v's bin without looking at the edges: how far the edges are from uniform, plus
    the rounding of the guess and of this estimate, times 4. Small segments bin with it:
    only values within eps of a uniform edge (or outside) are checked against the edges.
    """
    lo = edges[0]
    hi = edges[bins]
    w = (hi - lo) / bins
    dev = 0.0
    for i in range(bins + 1):
        dev = max(dev, abs(edges[i] - (lo + i * w)))
    big = max(abs(lo), abs(hi))
    return min(1.0, 4.0 * ((dev + 8.0 * _ULP * big) * escale + 16.0 * _ULP * bins))


# The output histogram of a large tensor is read off the fine one: values are binned once
# (fine bin j), and cmap[j] says which output bin *every* float64 of fine bin j falls in
# (-2: none, all outside the edges), or -1 when they straddle an output edge; only
# values of the straddling fine bins (a few percent) are binned into the output
# histogram one by one, the rest are added bin by bin (``_flush``). The fine index is a
# monotone function of v, so fine bin j holds exactly the floats from the first float
# with index >= j to the float before the first with index >= j + 1 (both found by
# stepping with nextafter from an estimate, evaluating the very same expression), and the
# output bin is monotone too: the two ends decide. Built once per segment (derived edges)
# or per window change (caller edges), for segments of at least TABLE_MIN elements.
TABLE_MIN = 1 << 16
BLOCK = 32
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
        if _fine_pos(x, anchor, inv, base, top) >= j:
            found = True
            break
        x = np.nextafter(x, np.inf)
    if not found:
        return np.nan
    for _ in range(_STEPS):
        y = np.nextafter(x, -np.inf)
        if not _fine_pos(y, anchor, inv, base, top) >= j:
            return x
        x = y
    return np.nan


@nb.njit(cache=True, nogil=True)
def _build_cmap(cmap, nf, anchor, inv, base, w, lo_bound, hi_bound, edges, bins, mode, escale):
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
            a = _coarse(lo, edges, bins, mode, escale)
            b = _coarse(hi, edges, bins, mode, escale)
            if a == b:
                c = max(a, -2)
        cmap[j] = c
        lo = nxt


@nb.njit(cache=True, nogil=True)
def _flag(work, cmap, nf, on):
    """Mark (on) or unmark the straddling fine bins: their counts go below zero by FLAG,
    so the counting loop learns "straddling" from the count it just incremented."""
    fine = work[0:nf]
    add = FLAG if on else -FLAG
    for j in range(nf):
        if cmap[j] == -1:
            fine[j] += add


@nb.njit(cache=True, nogil=True)
def _flush(work, cmap, nf, counts):
    """Add the fine counts gathered since the last flush to the output bins cmap says."""
    fine = work[0:nf]
    snap = work[2 * QA:2 * QA + nf]
    for j in range(nf):
        c = cmap[j]
        if c >= 0:
            counts[c] += fine[j] - snap[j]
        snap[j] = fine[j]


@nb.njit(cache=True, nogil=True)
def _span(lo, hi, anchor, inv):
    return np.floor((hi - anchor) * inv) - np.floor((lo - anchor) * inv)


@nb.njit(cache=True, nogil=True)
def _adapt_window(acc, work, cmap, table, edges, bins, mode, escale, counts):
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
    k = 0
    while _span(lo, hi, anchor, inv) >= QA and w < _MAX_W:
        w *= 2.0
        inv *= 0.5
        k += 1
    new_base = np.floor((lo - anchor) * inv)
    fine = work[0:QA]
    if not first:
        if table:
            _flag(work, cmap, QA, False)
            _flush(work, cmap, QA, counts)
        tmp = work[QA:2 * QA]
        tmp[:] = 0
        shift = 2.0 ** -min(k, 60)
        for b in range(QA):
            c = fine[b]
            if c:
                j = int(np.floor((base + b) * shift) - new_base)
                tmp[min(max(j, 0), QA - 1)] += c
        fine[:] = tmp
    acc[A_W] = w
    acc[A_INV] = inv
    acc[A_BASE] = new_base
    if table:
        work[2 * QA:3 * QA] = fine
        _build_cmap(cmap, QA, anchor, inv, new_base, w, -np.inf, np.inf, edges, bins, mode, escale)
        _flag(work, cmap, QA, True)


@nb.njit(cache=True, nogil=True)
def _chunk_bins(buf, k, edges, bins, mode, escale, eps, counts, work, nf, anchor, inv, base, cmap, table, idx, cidx):
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
            i = _coarse(buf[t], edges, bins, mode, escale)
            if i >= 0:
                counts[i] += 1
        return
    if mode == MODE_UNIFORM:                    # small segments: see _uniform_eps
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
        i = _coarse(v, edges, bins, mode, escale)
        if i >= 0:
            counts[i] += 1


@nb.njit(cache=True, nogil=True)
def _process(buf, k, acc, work, nf, adaptive, edges, bins, mode, escale, eps, counts, cmap, table, idx, cidx):
    if k == 0:
        return
    _chunk_moments(buf, k, acc)
    if adaptive:
        if acc[A_W] == 0.0:
            acc[A_ANCHOR] = buf[0]
        mn, mx = _chunk_minmax(buf, k)
        acc[A_MIN] = min(acc[A_MIN], mn)
        acc[A_MAX] = max(acc[A_MAX], mx)
        _adapt_window(acc, work, cmap, table, edges, bins, mode, escale, counts)
    _chunk_bins(buf, k, edges, bins, mode, escale, eps, counts, work, nf, acc[A_ANCHOR], acc[A_INV], acc[A_BASE],
                cmap, table, idx, cidx)


# -- quantiles ------------------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def _quantiles(work, nf, n, anchor, w, base, mn, mx, out):
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


# -- one tensor (segment) -------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def _linspace(lo, hi, edges):
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


@nb.njit(cache=True, nogil=True)
def _segment(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2, fixed, fixed_mode, bins,
             stats, edges, counts, work, cmap, buf, idx, cidx, acc):
    """Summarise the elements flat[row_starts[r] + i1*s1 + i2*s2], r0 <= r < r1."""
    size = (r1 - r0) * n1 * n2
    acc[:] = 0.0
    acc[A_MIN] = np.inf
    acc[A_MAX] = -np.inf
    adaptive = fixed.shape[0] > 0
    fin = 0
    nan = 0
    all_finite = False
    mode = fixed_mode
    if adaptive:
        nf = QA
        edges[:] = fixed
    else:
        nf = Q
        mode = MODE_UNIFORM
        fin, nan, mn, mx = _scan(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2)
        if fin == 0:
            _linspace(0.0, 1.0, edges)
        elif mn == mx:
            _linspace(mn - 0.5, mx + 0.5, edges)
        else:
            _linspace(mn, mx, edges)
        all_finite = fin == size
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
    erange = edges[bins] - edges[0]
    escale = 0.0
    if erange > 0.0 and np.isfinite(erange):
        escale = bins / erange
    else:
        mode = MODE_SEARCH
    counts[:] = 0
    if not adaptive and fin > 0 and mn == mx:   # one distinct finite value: no second pass
        i = _coarse(mn, edges, bins, mode, escale)
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
        return
    work[:nf] = 0
    table = size >= TABLE_MIN and (adaptive or fin > 0)
    eps = 1.0
    if mode == MODE_UNIFORM and not table:
        eps = _uniform_eps(edges, bins, escale)
    if table and not adaptive:
        work[2 * QA:2 * QA + nf] = 0
        _build_cmap(cmap, nf, acc[A_ANCHOR], acc[A_INV], 0.0, acc[A_W], acc[A_MIN], acc[A_MAX],
                    edges, bins, mode, escale)
        _flag(work, cmap, nf, True)

    nan2 = 0
    if size > 0 and (adaptive or fin > 0):
        r = r0
        i1 = 0
        i2 = 0
        while r < r1:
            k = 0
            while r < r1 and k < CHUNK:         # fill the chunk buffer (exactly: results do not
                                                # depend on how the elements split into rows)...
                m = min(n2 - i2, CHUNK - k)
                q = row_starts[r] + i1 * s1 + i2 * s2
                fast = all_finite
                if adaptive:                    # one pass: test these floats' bits first (vectorised)
                    fast = not fmt[0] or not _scan_floats(bits, q, m, s2, fmt, fmt[3], fmt[4])[0]
                k, seen = _fill(flat, lut, q, m, s2, buf, k, fast)
                nan2 += seen
                i2 += m
                if i2 == n2:
                    i2 = 0
                    i1 += 1
                    if i1 == n1:
                        i1 = 0
                        r += 1
            _process(buf, k, acc, work, nf, adaptive, edges, bins, mode, escale, eps, counts, cmap, table, idx, cidx)
        if table and (not adaptive or acc[A_W] != 0.0):   # (no window without a finite value)
            _flag(work, cmap, nf, False)
            _flush(work, cmap, nf, counts)
    if adaptive:
        nan = nan2
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
    _quantiles(work, nf, n, acc[A_ANCHOR], acc[A_W], acc[A_BASE], mn, mx, stats[S_Q:])
    big = max(abs(mn), abs(mx))
    if big > 1e150 or 0.0 < big < 1e-150:      # squares over- or underflow: again, scaled
        e = math.frexp(big)[1]
        _moments_scaled(flat, lut, row_starts, r0, r1, n1, s1, n2, s2, -e, buf, acc)
        stats[S_MEAN] = math.ldexp(acc[A_MEAN], e)
        stats[S_STD] = math.ldexp(np.sqrt(acc[A_M2] / n), e)
        stats[S_L2] = math.ldexp(np.sqrt(acc[A_SQ]), e)
    else:
        stats[S_MEAN] = acc[A_MEAN]
        stats[S_STD] = np.sqrt(acc[A_M2] / n)
        stats[S_L2] = np.sqrt(acc[A_SQ])


@nb.njit(cache=True, nogil=True)
def summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, fixed_mode, bins,
                       stats, edges, counts):
    """Summarise segment s into stats[s], edges[s] and counts[s]: the elements
    flat[row + i1*s1 + i2*s2] for row in row_starts[seg_rows[s]:seg_rows[s+1]] and
    (n1, s1, n2, s2) = dims[s]. ``bits`` is flat's memory as integers and ``fmt`` says how
    to read them (see _scan); ``lut`` converts float16 bits. ``fixed``: the caller's edges,
    or empty to derive them from [min, max]."""
    work = np.empty(3 * QA, np.int64)          # fine histogram, merge space, snapshot
    cmap = np.empty(QA, np.int32)
    buf = np.empty(CHUNK)
    idx = np.empty(CHUNK, np.int32)
    cidx = np.empty(CHUNK, np.int32)
    acc = np.empty(NACC)
    tmp = np.empty(1, bits.dtype)
    for s in range(dims.shape[0]):
        _segment(flat, bits, lut, fmt, tmp, row_starts, seg_rows[s], seg_rows[s + 1], dims[s, 0], dims[s, 1],
                 dims[s, 2], dims[s, 3], fixed, fixed_mode, bins, stats[s], edges[s], counts[s],
                 work, cmap, buf, idx, cidx, acc)


# -- Python entry points --------------------------------------------------------------------

class Summary(NamedTuple):
    """One tensor's summary: ``stats`` in SUMMARY_FIELDS order, the histogram's edges and counts."""

    stats: np.ndarray    # float64, len(SUMMARY_FIELDS)
    edges: np.ndarray    # float64, bins + 1
    counts: np.ndarray   # int64, bins

    def as_dict(self) -> dict[str, float]:
        return dict(zip(SUMMARY_FIELDS, self.stats.tolist()))


class ManySummaries(NamedTuple):
    """Summaries of n tensors, one row each."""

    stats: np.ndarray    # float64, n x len(SUMMARY_FIELDS)
    edges: np.ndarray    # float64, n x (bins + 1)
    counts: np.ndarray   # int64, n x bins


_HALF_LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
_HALF_LUT.flags.writeable = False
# Histograms hold at most this many bins: a block stores bins in 24 bits, and a block of
# SUMMARY_BLOCK_ROWS rows of 16,384 bins is already 128 MiB of counts.
MAX_BINS = 1 << 14
_EMPTY = np.empty(0)
_EMPTY.flags.writeable = False
_DTYPE_OK: dict[np.dtype, bool] = {}


def _check_hist(bins, edges) -> tuple[int, np.ndarray, int]:
    """-> (bins, fixed edges (empty when derived), edge mode)."""
    if isinstance(bins, (bool, np.bool_)):
        raise InvalidTypeError("bins", f"must be a positive int, got {bins!r}")
    try:
        nbins = operator.index(bins)
    except TypeError:
        raise InvalidTypeError("bins", f"must be a positive int, got {type(bins).__name__}") from None
    if not 0 < nbins <= MAX_BINS:
        raise InvalidArgumentError("bins", f"must be an int in [1, {MAX_BINS}], got {nbins}")
    if edges is None:
        return nbins, _EMPTY, MODE_UNIFORM
    try:
        e = np.asarray(edges)
    except Exception as exc:   # noqa: BLE001 - anything numpy cannot read is a type error
        raise InvalidTypeError("edges", f"must be a 1-d float array, got {type(edges).__name__}") from exc
    if e.dtype.kind not in "iuf":
        raise InvalidTypeError("edges", f"must be a 1-d float array, got dtype {e.dtype}")
    if e.ndim != 1:
        raise InvalidArgumentError("edges", f"must be 1-d, got shape {e.shape}")
    if e.shape[0] < 2:
        raise InvalidArgumentError("edges", f"needs at least 2 values, got {e.shape[0]}")
    if e.shape[0] > MAX_BINS + 1:
        raise InvalidArgumentError("edges", f"holds at most {MAX_BINS + 1} values ({MAX_BINS} bins), got {e.shape[0]}")
    e = np.array(e, dtype=np.float64)           # a private contiguous copy
    if not np.isfinite(e).all():
        raise InvalidArgumentError("edges", "must be finite")
    if not (e[1:] > e[:-1]).all():
        raise InvalidArgumentError("edges", "must be strictly increasing")
    e.flags.writeable = False
    n = e.shape[0] - 1
    mode = MODE_SEARCH
    width = (e[-1] - e[0]) / n
    if np.isfinite(width):
        uniform = e[0] + np.arange(n + 1) * width
        if (np.abs(e - uniform) <= width).all():
            mode = MODE_UNIFORM
    return n, e, mode


def _check_tensor(tensor, name: str) -> np.ndarray:
    if not isinstance(tensor, np.ndarray):
        try:
            tensor = np.asarray(tensor)
        except Exception as exc:   # noqa: BLE001
            raise InvalidTypeError(name, f"must be a numeric array, got {type(tensor).__name__}") from exc
    dt = tensor.dtype
    ok = _DTYPE_OK.get(dt)
    if ok is None:
        ok = dt.kind in "biuf" and dt.itemsize <= 8 and dt.fields is None
        _DTYPE_OK[dt] = ok
    if not ok:
        raise InvalidTypeError(name, f"dtype {dt} is not supported (bool, int, uint, float16/32/64 only)")
    if not dt.isnative:
        tensor = tensor.astype(dt.newbyteorder("="))   # a copy: numba reads native byte order only
    return tensor


_FLOAT_FMT = {2: (np.int16, 0x7C00), 4: (np.int32, 0x7F800000), 8: (np.int64, 0x7FF0000000000000)}
_FMT: dict[np.dtype, np.ndarray] = {}


def _views(flat: np.ndarray):
    """-> (flat as the kernel loads it, its memory as integers, float16 table or None, fmt)."""
    dt = flat.dtype
    fmt = _FMT.get(dt)
    if dt.kind == "f":
        ints, expmask = _FLOAT_FMT[dt.itemsize]
        bits = flat.view(ints)
        if fmt is None:
            info = np.iinfo(ints)
            fmt = _FMT[dt] = np.array([1, info.max, expmask, info.max, info.min, 0], ints)
        if dt == np.float16:
            return flat.view(np.uint16), bits, _HALF_LUT, fmt
        return flat, bits, None, fmt
    bits = flat.view(np.uint8) if dt.kind == "b" else flat
    if fmt is None:
        info = np.iinfo(bits.dtype)
        fmt = _FMT[dt] = np.array([0, 0, 0, info.max, info.min, 0], bits.dtype)
    return flat, bits, None, fmt


def _ordered(a: np.ndarray):
    """-> (b, axes): b = a with negative strides flipped and its axes sorted by decreasing
    stride (a view: C order over b is the kernel's reading order, memory order for
    ordinary layouts), and b's axes merged where they can be, as (length, stride in items);
    (a, None) when a stride is not a multiple of the item size."""
    item = a.itemsize
    if any(s % item for s in a.strides):
        return a, None
    b = a[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)]
    order = sorted(range(b.ndim), key=lambda d: -b.strides[d])
    b = b.transpose(order)
    merged: list[tuple[int, int]] = []
    for n, s in zip(b.shape, b.strides):
        if n == 1:
            continue
        if merged and merged[-1][1] == n * (s // item):
            merged[-1] = (merged[-1][0] * n, s // item)
        else:
            merged.append((n, s // item))
    return b, merged


def _layout(a: np.ndarray):
    """-> (flat 1-d view over a's memory, row_starts, (n1, s1, n2, s2)): no copy, except
    for strides that are not multiples of the item size."""
    if a.flags.c_contiguous or a.flags.f_contiguous or a.size == 0:
        flat = a.reshape(-1, order="A") if a.size else np.empty(0, a.dtype)
        return flat, np.zeros(1, np.int64), (1, 0, flat.shape[0], 1)
    b, merged = _ordered(a)
    if merged is None:
        flat = np.ascontiguousarray(a).reshape(-1)      # exotic layout: the one copy made
        return flat, np.zeros(1, np.int64), (1, 0, flat.shape[0], 1)
    span = 1 + sum((n - 1) * s for n, s in merged)
    flat = np.lib.stride_tricks.as_strided(b, shape=(span,), strides=(a.itemsize,), writeable=False)
    if len(merged) == 1:
        return flat, np.zeros(1, np.int64), (1, 0, merged[0][0], merged[0][1])
    (n1, s1), (n2, s2) = merged[-2], merged[-1]
    rows = np.zeros(1, np.int64)
    for n, s in merged[:-2]:
        rows = (rows[:, None] + np.arange(n, dtype=np.int64) * s).reshape(-1)
    return flat, rows, (n1, s1, n2, s2)


def _in_kernel_order(t: np.ndarray) -> np.ndarray:
    """t's elements as a 1-d array in the order ``summarize`` reads them (a view if it can)."""
    if t.flags.c_contiguous:
        return t.reshape(-1)
    if t.flags.f_contiguous:
        return t.reshape(-1, order="F")
    b, merged = _ordered(t)
    return b.reshape(-1)


def _readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def summarize(tensor: np.ndarray, bins: int = 64, edges: np.ndarray | None = None) -> Summary:
    """Summary of ``tensor`` (any shape, strides and numeric or bool dtype): the
    SUMMARY_FIELDS statistics, and a histogram over ``edges`` (1-d, strictly increasing,
    finite; ``bins`` is then ignored) or over ``bins`` bins spread over [min, max]."""
    nbins, fixed, mode = _check_hist(bins, edges)
    a = _check_tensor(tensor, "tensor")
    flat, rows, dims = _layout(a)
    flat, bits, lut, fmt = _views(_readonly(flat))
    stats = np.empty((1, NSTATS))
    out_edges = np.empty((1, nbins + 1))
    counts = np.empty((1, nbins), np.int64)
    summarize_segments(flat, bits, lut, fmt, np.array([0, rows.shape[0]], np.int64), rows,
                       np.array([dims], np.int64), fixed, mode, nbins, stats, out_edges, counts)
    return Summary(stats[0], out_edges[0], counts[0])


def summarize_many(tensors, bins: int = 64, edges: np.ndarray | None = None) -> ManySummaries:
    """Summaries of many tensors, one row each, equal to ``summarize`` of each in turn.

    The tensors of each dtype are concatenated into one buffer (a copy, made to avoid a
    Python and kernel call per tensor) and summarised by one kernel call that loops over
    them (``summarize_segments``)."""
    nbins, fixed, mode = _check_hist(bins, edges)
    if isinstance(tensors, np.ndarray):
        raise InvalidTypeError("tensors", "must be a sequence of arrays, got one array")
    try:
        tensors = list(tensors)
    except TypeError:
        raise InvalidTypeError("tensors", f"must be a sequence of arrays, got {type(tensors).__name__}") from None
    n = len(tensors)
    stats = np.empty((n, NSTATS))
    out_edges = np.empty((n, nbins + 1))
    counts = np.empty((n, nbins), np.int64)
    if n == 0:
        return ManySummaries(stats, out_edges, counts)
    first = _check_tensor(tensors[0], "tensors[0]")
    dt = first.dtype
    if first is tensors[0] and all(type(t) is np.ndarray and t.dtype == dt and t.flags.c_contiguous
                                   for t in tensors):
        groups = {dt: (None, tensors)}           # the common case: one dtype, C-contiguous arrays
    else:
        groups = {}
        for i, t in enumerate(tensors):
            t = _check_tensor(t, f"tensors[{i}]")
            group = groups.get(t.dtype)
            if group is None:
                group = groups[t.dtype] = ([], [])
            group[0].append(i)
            group[1].append(_in_kernel_order(t))
    for index, group in groups.values():
        m = len(group)
        sizes = np.fromiter((t.size for t in group), np.int64, m)
        flat = np.concatenate(group, axis=None) if m > 1 else group[0].reshape(-1)
        flat, bits, lut, fmt = _views(_readonly(flat))
        dims = np.empty((m, 4), np.int64)
        dims[:, 0] = 1
        dims[:, 1] = 0
        dims[:, 2] = sizes
        dims[:, 3] = 1
        row_starts = np.zeros(m, np.int64)
        np.cumsum(sizes[:-1], out=row_starts[1:])
        seg_rows = np.arange(m + 1, dtype=np.int64)
        if index is None:
            summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, mode, nbins,
                               stats, out_edges, counts)
        else:
            g_stats = np.empty((m, NSTATS))
            g_edges = np.empty((m, nbins + 1))
            g_counts = np.empty((m, nbins), np.int64)
            summarize_segments(flat, bits, lut, fmt, seg_rows, row_starts, dims, fixed, mode, nbins,
                               g_stats, g_edges, g_counts)
            stats[index] = g_stats
            out_edges[index] = g_edges
            counts[index] = g_counts
    return ManySummaries(stats, out_edges, counts)
