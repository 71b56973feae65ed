"""The block codec in numpy: the twin of engine.kernels for small blocks.

A script that logs a few points and exits would spend most of its life importing numba
(0.3 s and more) and loading cached kernels (milliseconds each) to encode one small
block. These functions take the same arguments, return the same values and write the
same bytes as the kernels of the same names (tests/test_smallcodec.py compares them bit
for bit), with whole-array numpy operations: a few microseconds of overhead a column,
which the kernels beat only on long columns. engine.block chooses between the two.

Also the home of the column layout constants, so that framing a block needs no numba.
Integer arithmetic wraps as the kernels' does: numpy never checks integer overflow in
array operations, so every sum and difference here is done on arrays, never on scalars
(numpy's scalars warn on overflow).
"""

from __future__ import annotations

import numpy as np

MODE_DOD = 1  # integers: delta of deltas, zigzag
MODE_XOR = 2  # float64 bits: XOR with previous value
MODE_DELTA = 3  # integers: delta, zigzag (histogram counts)
COLUMN_HEADER = 18   # mode u8 | plane_mask u8 | base i64 | delta0 i64
_I64 = np.dtype("<i8")


def _zigzag(v: np.ndarray) -> np.ndarray:
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def _put_head(out: np.ndarray, pos: int, mode: int, base, delta0) -> None:
    """The column header but for the plane mask (_write_planes writes it)."""
    out[pos] = mode
    out[pos + 2:pos + COLUMN_HEADER] = np.array([base, delta0], _I64).view(np.uint8)


def _write_planes(words: np.ndarray, out: np.ndarray, pos: int) -> int:
    """Write the non-zero byte planes of the column starting at ``pos``; returns its end."""
    n = len(words)
    end = pos + COLUMN_HEADER
    mask = 0
    if n:
        planes = words.astype("<u8", copy=False).view(np.uint8).reshape(n, 8)
        used = np.flatnonzero(planes.any(axis=0))
        for p in used.tolist():
            mask |= 1 << p
        out[end:end + len(used) * n] = planes[:, used].T.ravel()
        end += len(used) * n
    out[pos + 1] = mask
    return end


def _read_column(buf: np.ndarray, pos: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(base and delta0 as an int64 pair, the n words, the column's end). A column that
    runs past ``buf`` reads as zeros and ends past it, so that the caller's check of the
    end against the payload length fails (the kernels read past the buffer instead)."""
    words = np.zeros(n, np.uint64)
    head = pos + COLUMN_HEADER
    if head > len(buf):
        return np.zeros(2, np.int64), words, len(buf) + 1
    used = [p for p in range(8) if int(buf[pos + 1]) >> p & 1]
    end = head + len(used) * n
    if end > len(buf):
        return np.zeros(2, np.int64), words, end
    if used and n:
        planes = np.zeros((n, 8), np.uint8)
        planes[:, used] = buf[head:end].reshape(len(used), n).T
        words = planes.view("<u8").reshape(n).astype(np.uint64, copy=False)
    return buf[pos + 2:head].copy().view(_I64).astype(np.int64, copy=False), words, end


def encode_int_dod(x, scratch, out, pos):
    """Encode int64 ``x`` as delta-of-delta at out[pos:]; returns the end position."""
    x = np.asarray(x, np.int64)
    n = len(x)
    deltas = np.diff(x)
    _put_head(out, pos, MODE_DOD, x[0] if n else 0, deltas[0] if n > 1 else 0)
    words = np.zeros(n, np.uint64)
    words[2:] = _zigzag(np.diff(deltas))
    return _write_planes(words, out, pos)


def decode_int_dod(buf, pos, scratch, x):
    """Decode a delta-of-delta column at buf[pos:] into ``x``; returns the end position."""
    n = len(x)
    head, words, end = _read_column(buf, pos, n)
    if n:
        x[0] = head[0]
    if n > 1:
        deltas = np.empty(n - 1, np.int64)
        deltas[0] = head[1]
        deltas[1:] = _unzigzag(words[2:])
        np.cumsum(deltas, out=deltas)
        x[1:] = np.cumsum(deltas) + head[:1]
    return end


def encode_float_xor(v, scratch, out, pos):
    """Encode float64 ``v`` as XOR with the previous value; returns the end position."""
    bits = np.asarray(v, np.float64).view(np.uint64)
    _put_head(out, pos, MODE_XOR, bits[:1].view(np.int64)[0] if len(bits) else 0, 0)
    words = np.zeros(len(bits), np.uint64)
    words[1:] = bits[1:] ^ bits[:-1]
    return _write_planes(words, out, pos)


def decode_float_xor(buf, pos, scratch, v):
    head, words, end = _read_column(buf, pos, len(v))
    v.view(np.uint64)[:] = np.bitwise_xor.accumulate(words) ^ head[:1].view(np.uint64)
    return end


def encode_int_delta(x, scratch, out, pos):
    """Encode int64 ``x`` as zigzag deltas (for counts that drift); returns the end."""
    x = np.asarray(x, np.int64)
    _put_head(out, pos, MODE_DELTA, x[0] if len(x) else 0, 0)
    words = np.zeros(len(x), np.uint64)
    words[1:] = _zigzag(np.diff(x))
    return _write_planes(words, out, pos)


def decode_int_delta(buf, pos, scratch, x):
    head, words, end = _read_column(buf, pos, len(x))
    if len(x):
        x[0] = head[0]
        x[1:] = np.cumsum(_unzigzag(words[1:])) + head[:1]
    return end


def encode_points(steps, times, values, scratch, out):
    """Encode the three point columns one after another; returns the number of bytes."""
    pos = encode_int_dod(steps, scratch, out, 0)
    pos = encode_int_dod(times, scratch, out, pos)
    return encode_float_xor(values, scratch, out, pos)


def decode_points(buf, scratch, steps, times, values):
    pos = decode_int_dod(buf, 0, scratch, steps)
    pos = decode_int_dod(buf, pos, scratch, times)
    return decode_float_xor(buf, pos, scratch, values)


def encode_summaries(steps, times, stats_t, edges, counts_t, scratch, out):
    """As kernels.encode_summaries: steps, times, each statistic, edges, each bin's counts."""
    pos = encode_int_dod(steps, scratch, out, 0)
    pos = encode_int_dod(times, scratch, out, pos)
    for column in stats_t:
        pos = encode_float_xor(column, scratch, out, pos)
    pos = encode_float_xor(edges, scratch, out, pos)
    for column in counts_t:
        pos = encode_int_delta(column, scratch, out, pos)
    return pos


def decode_summaries(buf, scratch, steps, times, stats_t, edges, counts_t):
    pos = decode_int_dod(buf, 0, scratch, steps)
    pos = decode_int_dod(buf, pos, scratch, times)
    for column in stats_t:
        pos = decode_float_xor(buf, pos, scratch, column)
    pos = decode_float_xor(buf, pos, scratch, edges)
    for column in counts_t:
        pos = decode_int_delta(buf, pos, scratch, column)
    return pos


def point_stats(steps, times, values):
    """As kernels.point_stats: (step_min, step_max, time_min, time_max, value_min,
    value_max, value_sum, nan_count, first_value, last_value) of at least one point.

    The kernel's loop decides every tie, and these follow it: first is the value at the
    first smallest step, last at the last largest step; min and max are the first value
    that equals them (0.0 or -0.0, whichever came first); the sum adds the values in
    order from 0.0 (cumsum is sequential, numpy's sum is pairwise and rounds otherwise)."""
    first = values[int(np.argmin(steps))]
    last = values[len(steps) - 1 - int(np.argmax(steps[::-1]))]
    seen = values[~np.isnan(values)]
    nans = len(values) - len(seen)
    if len(seen):
        vmin = seen[int(np.argmax(seen == seen.min()))]
        vmax = seen[int(np.argmax(seen == seen.max()))]
        with np.errstate(over="ignore", invalid="ignore"):   # inf and inf - inf, as the kernel adds them
            total = np.cumsum(np.concatenate(([0.0], seen)))[-1]
    else:
        vmin = vmax = np.nan
        total = 0.0
    return (int(steps.min()), int(steps.max()), int(times.min()), int(times.max()), float(vmin), float(vmax),
            float(total), nans, float(first), float(last))


def is_sorted(steps) -> bool:
    return bool(np.all(steps[1:] >= steps[:-1]))
