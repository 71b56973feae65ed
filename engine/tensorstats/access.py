"""Element access: any supported dtype read as float64, and chunks of finite values.

Every statistic after pass 1 is computed on float64 chunks of CHUNK finite values,
filled here in reading order; chunk boundaries depend only on the sequence of finite
values, not on how the layout splits it into rows (so ``summarize_many`` equals
``summarize`` bit for bit). int64/uint64 beyond 2**53 round as ``astype(np.float64)``
does; float16 converts exactly through the table of ``prepare``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")   # inlined before LLVM sees the loops: they vectorise
def load(flat, lut, k):
    """Element k of ``flat`` as float64 (``lut`` maps float16 bits to float32, else None)."""
    if lut is None:
        return np.float64(flat[k])
    return np.float64(lut[flat[k]])


@nb.njit(cache=True, nogil=True)
def decode(flat, lut, tmp, b):
    """The float64 value of the element whose bits are ``b`` (tmp: 1 element of bits.dtype)."""
    tmp[0] = b
    return load(tmp.view(flat.dtype), lut, 0)


@nb.njit(cache=True, nogil=True)
def fill(flat, lut, q, m, step, buf, k, all_finite):
    """Append the finite values among flat[q + t*step], t < m, to buf[k:]; -> (k, NaNs seen)."""
    if all_finite:
        dst = buf[k:k + m]
        if step == 1:                           # (on slices: LLVM then vectorises the loop)
            src = flat[q:q + m]
            for t in range(m):
                dst[t] = load(src, lut, t)
        else:
            for t in range(m):
                dst[t] = load(flat, lut, q + t * step)
        return k + m, 0
    nan = 0
    for t in range(m):
        v = load(flat, lut, q + t * step)
        buf[k] = v
        if v - v == 0.0:
            k += 1
        elif v != v:
            nan += 1
    return k, nan
