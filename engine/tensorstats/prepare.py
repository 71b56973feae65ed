"""A tensor's memory as the kernels read it, with no copy of the data (no numba here).

Layout. Negative strides are flipped, axes sorted by decreasing stride and merged where
adjacent, so contiguous, transposed and reversed tensors become one run of elements,
and strided slices at most two levels (n1, s1) x (n2, s2) walked by the kernel; only
layouts with three or more unmergeable levels get an array of their row offsets (an
index, not a copy of the data). The copies: arrays whose strides are not multiples of
the item size (``np.ascontiguousarray``) and ``summarize_many``'s concatenation.

Bits. The kernels read floats as signed integers of their width (``scan``); ``fmt``
says how: (is_float, maxpos, expmask, largest, smallest value of the integer type, 0).
float16 is viewed as uint16 and converted through an exact 65536-entry table (float16
-> float32 is exact).
"""

from __future__ import annotations

import numpy as np

_HALF_LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
_HALF_LUT.flags.writeable = False
_FLOAT_FMT = {2: (np.int16, 0x7C00), 4: (np.int32, 0x7F800000), 8: (np.int64, 0x7FF0000000000000)}
_FMT: dict[np.dtype, np.ndarray] = {}


def views(flat: np.ndarray):
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


def ordered(a: np.ndarray):
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


def layout(a: np.ndarray):
    """-> (flat 1-d view over a's memory, row_starts, (n1, s1, n2, s2)): no copy, except
    for strides that are not multiples of the item size."""
    if a.flags.c_contiguous or a.flags.f_contiguous or a.size == 0:
        flat = a.reshape(-1, order="A") if a.size else np.empty(0, a.dtype)
        return flat, np.zeros(1, np.int64), (1, 0, flat.shape[0], 1)
    b, merged = ordered(a)
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


def in_kernel_order(t: np.ndarray) -> np.ndarray:
    """t's elements as a 1-d array in the order ``summarize`` reads them (a view if it can)."""
    if t.flags.c_contiguous:
        return t.reshape(-1)
    if t.flags.f_contiguous:
        return t.reshape(-1, order="F")
    b, merged = ordered(t)
    return b.reshape(-1)


def readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a
