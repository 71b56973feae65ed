"""Pure numba kernels for the block codec: no I/O, no allocation they do not return.

Importing this module imports numba, so the rest of the engine imports it lazily
(inside functions) to keep ``import steplog`` fast. Every kernel is compiled on first
use and cached on disk (``cache=True``); ``nogil=True`` lets the flusher and parallel
readers run them beside other Python threads. Constants passed from one kernel to
another are typed (``np.int64(0)``, ``np.uint8(MODE_DOD)``): numba compiles a callee
once more for every literal argument value it sees, and compile time is what a first
flush waits for. The kernels Python calls announce slow compiles (engine/jit.py).

Column layout (see docs/FORMAT.md, "Column encoding"):

    mode u8 | plane_mask u8 | base i64 | delta0 i64 | planes...

A column of n 64-bit words is first transformed (delta-of-delta for integers, XOR with
the previous value for floats), zigzag-mapped for integers, then split into byte planes:
plane p holds byte p of every word. Planes whose bytes are all zero are left out and
their bit in plane_mask is clear. zstd then compresses the concatenated planes.
engine/smallcodec.py is the numpy twin of these kernels (the same bytes): small blocks
use it, so that a short script never imports numba.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .jit import announce_all
from .smallcodec import COLUMN_HEADER, MODE_DELTA, MODE_DOD, MODE_XOR  # noqa: F401 (the layout's constants)


@nb.njit(cache=True, nogil=True)
def _zigzag(v):
    return np.uint64((v << 1) ^ (v >> 63))


@nb.njit(cache=True, nogil=True)
def _unzigzag(u):
    return np.int64(u >> np.uint64(1)) ^ -np.int64(u & np.uint64(1))


@nb.njit(cache=True, nogil=True)
def _put_i64(out, pos, v):
    u = np.uint64(v)
    for b in range(8):
        out[pos + b] = np.uint8((u >> np.uint64(8 * b)) & np.uint64(0xFF))


@nb.njit(cache=True, nogil=True)
def _get_i64(buf, pos):
    u = np.uint64(0)
    for b in range(8):
        u |= np.uint64(buf[pos + b]) << np.uint64(8 * b)
    return np.int64(u)


@nb.njit(cache=True, nogil=True)
def _put_head(out, pos, mode, base, delta0):
    """The column header: mode, (plane mask, written later), base, delta0."""
    out[pos] = mode
    _put_i64(out, pos + 2, base)
    _put_i64(out, pos + 10, delta0)


@nb.njit(cache=True, nogil=True)
def _write_planes(words, out, pos):
    """Write the non-zero byte planes of the column starting at ``pos``; returns its end."""
    n = words.shape[0]
    acc = np.uint64(0)
    for i in range(n):
        acc |= words[i]
    mask = 0
    w = pos + COLUMN_HEADER
    for p in range(8):
        shift = np.uint64(8 * p)
        if (acc >> shift) & np.uint64(0xFF):
            mask |= 1 << p
            for i in range(n):
                out[w + i] = np.uint8((words[i] >> shift) & np.uint64(0xFF))
            w += n
    out[pos + 1] = np.uint8(mask)
    return w


@nb.njit(cache=True, nogil=True)
def _read_planes(buf, pos, words):
    """Inverse of _write_planes: fills ``words`` and returns the column's end."""
    n = words.shape[0]
    mask = buf[pos + 1]
    r = pos + COLUMN_HEADER
    for i in range(n):
        words[i] = 0
    for p in range(8):
        if mask & (1 << p):
            shift = np.uint64(8 * p)
            for i in range(n):
                words[i] |= np.uint64(buf[r + i]) << shift
            r += n
    return r


@nb.njit(cache=True, nogil=True)
def encode_int_dod(x, scratch, out, pos):
    """Encode int64 ``x`` as delta-of-delta at out[pos:]; returns the end position."""
    n = x.shape[0]
    _put_head(out, pos, np.uint8(MODE_DOD), x[0] if n > 0 else np.int64(0), x[1] - x[0] if n > 1 else np.int64(0))
    words = scratch[:n]
    if n > 0:
        words[0] = 0
    if n > 1:
        words[1] = 0
    for i in range(2, n):
        words[i] = _zigzag((x[i] - x[i - 1]) - (x[i - 1] - x[i - 2]))
    return _write_planes(words, out, pos)


@nb.njit(cache=True, nogil=True)
def decode_int_dod(buf, pos, scratch, x):
    """Decode a delta-of-delta column at buf[pos:] into ``x``; returns the end position."""
    n = x.shape[0]
    base = _get_i64(buf, pos + 2)
    delta = _get_i64(buf, pos + 10)
    words = scratch[:n]
    end = _read_planes(buf, pos, words)
    if n > 0:
        x[0] = base
    if n > 1:
        x[1] = base + delta
    for i in range(2, n):
        delta += _unzigzag(words[i])
        x[i] = x[i - 1] + delta
    return end


@nb.njit(cache=True, nogil=True)
def encode_float_xor(v, scratch, out, pos):
    """Encode float64 ``v`` as XOR with the previous value; returns the end position."""
    n = v.shape[0]
    bits = v.view(np.uint64)
    _put_head(out, pos, np.uint8(MODE_XOR), np.int64(bits[0]) if n > 0 else np.int64(0), np.int64(0))
    words = scratch[:n]
    if n > 0:
        words[0] = 0
    for i in range(1, n):
        words[i] = bits[i] ^ bits[i - 1]
    return _write_planes(words, out, pos)


@nb.njit(cache=True, nogil=True)
def decode_float_xor(buf, pos, scratch, v):
    n = v.shape[0]
    base = np.uint64(_get_i64(buf, pos + 2))
    words = scratch[:n]
    end = _read_planes(buf, pos, words)
    bits = v.view(np.uint64)
    prev = base
    for i in range(n):
        prev ^= words[i]
        bits[i] = prev
    return end


@nb.njit(cache=True, nogil=True)
def encode_points(steps, times, values, scratch, out):
    """Encode the three point columns one after another; returns the number of bytes."""
    pos = encode_int_dod(steps, scratch, out, np.int64(0))
    pos = encode_int_dod(times, scratch, out, pos)
    return encode_float_xor(values, scratch, out, pos)


@nb.njit(cache=True, nogil=True)
def decode_points(buf, scratch, steps, times, values):
    pos = decode_int_dod(buf, np.int64(0), scratch, steps)
    pos = decode_int_dod(buf, pos, scratch, times)
    return decode_float_xor(buf, pos, scratch, values)


@nb.njit(cache=True, nogil=True)
def point_stats(steps, times, values):
    """Block statistics in one pass.

    Returns (step_min, step_max, time_min, time_max, value_min, value_max, value_sum,
    nan_count, first_value, last_value). min, max and sum skip NaN (all-NaN gives NaN);
    first is the value at the smallest step (earliest written on ties), last the value
    at the largest step (latest written on ties).
    """
    n = steps.shape[0]
    smin = steps[0]
    smax = steps[0]
    tmin = times[0]
    tmax = times[0]
    first = values[0]
    last = values[0]
    vmin = np.inf
    vmax = -np.inf
    total = 0.0
    nans = 0
    for i in range(n):
        s = steps[i]
        if s < smin:
            smin = s
            first = values[i]
        if s >= smax:
            smax = s
            last = values[i]
        t = times[i]
        if t < tmin:
            tmin = t
        if t > tmax:
            tmax = t
        v = values[i]
        if np.isnan(v):
            nans += 1
        else:
            total += v
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
    if nans == n:
        vmin = np.nan
        vmax = np.nan
    return smin, smax, tmin, tmax, vmin, vmax, total, nans, first, last


@nb.njit(cache=True, nogil=True)
def is_sorted(steps):
    for i in range(1, steps.shape[0]):
        if steps[i] < steps[i - 1]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def encode_int_delta(x, scratch, out, pos):
    """Encode int64 ``x`` as zigzag deltas (for counts that drift); returns the end."""
    n = x.shape[0]
    _put_head(out, pos, np.uint8(MODE_DELTA), x[0] if n > 0 else np.int64(0), np.int64(0))
    words = scratch[:n]
    if n > 0:
        words[0] = 0
    for i in range(1, n):
        words[i] = _zigzag(x[i] - x[i - 1])
    return _write_planes(words, out, pos)


@nb.njit(cache=True, nogil=True)
def decode_int_delta(buf, pos, scratch, x):
    n = x.shape[0]
    base = _get_i64(buf, pos + 2)
    words = scratch[:n]
    end = _read_planes(buf, pos, words)
    if n > 0:
        x[0] = base
    for i in range(1, n):
        x[i] = x[i - 1] + _unzigzag(words[i])
    return end


@nb.njit(cache=True, nogil=True)
def encode_summaries(steps, times, stats_t, edges, counts_t, scratch, out):
    """Encode a tensor-summary block: steps and times (delta-of-delta), each statistic
    column (XOR; ``stats_t`` is statistics x rows), the shared edges if any (XOR; empty
    when edges are derived from min and max), then each histogram bin's counts over the
    rows (delta; ``counts_t`` is bins x rows). Returns the number of bytes."""
    pos = encode_int_dod(steps, scratch, out, np.int64(0))
    pos = encode_int_dod(times, scratch, out, pos)
    for k in range(stats_t.shape[0]):
        pos = encode_float_xor(stats_t[k], scratch, out, pos)
    pos = encode_float_xor(edges, scratch, out, pos)
    for b in range(counts_t.shape[0]):
        pos = encode_int_delta(counts_t[b], scratch, out, pos)
    return pos


@nb.njit(cache=True, nogil=True)
def decode_summaries(buf, scratch, steps, times, stats_t, edges, counts_t):
    pos = decode_int_dod(buf, np.int64(0), scratch, steps)
    pos = decode_int_dod(buf, pos, scratch, times)
    for k in range(stats_t.shape[0]):
        pos = decode_float_xor(buf, pos, scratch, stats_t[k])
    pos = decode_float_xor(buf, pos, scratch, edges)
    for b in range(counts_t.shape[0]):
        pos = decode_int_delta(buf, pos, scratch, counts_t[b])
    return pos


announce_all(globals(), ("encode_points", "decode_points", "point_stats", "is_sorted", "encode_summaries",
                         "decode_summaries"), "block codec")
