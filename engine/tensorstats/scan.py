"""Pass 1 of a summary with derived edges: finite and NaN counts, min and max.

Floats are read as signed integers of their width (``bits``): a value is finite when
(bits & maxpos) < expmask and NaN when it is greater; key = bits ^ (maxpos if bits < 0)
orders finite floats as the floats order (the transform is its own inverse). Integer
compares, selects, min and max in the bits' own width (numba widens integer arithmetic
to int64 unless cast back): the loop vectorises, and NaN needs no special case. The
NaN/inf counts take a second loop, run only over rows that hold a non-finite value.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .access import decode


@nb.njit(cache=True, nogil=True)
def scan_floats(bits, p, n, step, fmt, kmin, kmax):
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
def scan(flat, bits, lut, fmt, tmp, row_starts, r0, r1, n1, s1, n2, s2):
    """Pass 1: (finite count, NaN count, min, max) of the finite values.

    fmt (of bits.dtype) = (is_float, maxpos, expmask, largest, smallest value of the type, 0)."""
    fin = 0
    nan = 0
    if fmt[0]:
        kmin = fmt[3]
        kmax = fmt[4]
        for r in range(r0, r1):
            for i1 in range(n1):
                bad, kmin, kmax = scan_floats(bits, row_starts[r] + i1 * s1, n2, s2, fmt, kmin, kmax)
                if bad:
                    f, nn = _count_nonfinite(bits, row_starts[r] + i1 * s1, n2, s2, fmt)
                    fin += f
                    nan += nn
                else:
                    fin += n2
        if fin == 0:
            return fin, nan, np.nan, np.nan
        # (cast back to the bits' width, as the integer path passes it: decode compiles once)
        mn = decode(flat, lut, tmp, bits.dtype.type(kmin ^ (fmt[1] if kmin < fmt[5] else fmt[5])))
        mx = decode(flat, lut, tmp, bits.dtype.type(kmax ^ (fmt[1] if kmax < fmt[5] else fmt[5])))
        return fin, nan, mn, mx
    vmin = fmt[3]
    vmax = fmt[4]
    for r in range(r0, r1):
        for i1 in range(n1):
            vmin, vmax = _scan_ints(bits, row_starts[r] + i1 * s1, n2, s2, vmin, vmax)
            fin += n2
    if fin == 0:
        return fin, nan, np.nan, np.nan
    return fin, nan, decode(flat, lut, tmp, vmin), decode(flat, lut, tmp, vmax)
