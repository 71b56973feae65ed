"""The numba kernels of events.py: CRC-32C by slicing-by-8 and the framing scan of a
whole event file in one call (imports numba; events.py loads it on first use)."""

from __future__ import annotations

from types import SimpleNamespace

import numba
import numpy as np

from steplog.engine.jit import announce

MASK_DELTA = np.uint32(0xA282EAD8)
HEADER, FOOTER = 12, 4
OK, TRUNCATED, BAD_LENGTH_CRC, BAD_DATA_CRC = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def crc(buf, start, stop, t, value):
    c = np.uint32(value) ^ np.uint32(0xFFFFFFFF)
    i = start
    while i + 8 <= stop:
        lo = c ^ (np.uint32(buf[i]) | (np.uint32(buf[i + 1]) << 8) | (np.uint32(buf[i + 2]) << 16)
                  | (np.uint32(buf[i + 3]) << 24))
        c = (t[7, lo & 0xFF] ^ t[6, (lo >> 8) & 0xFF] ^ t[5, (lo >> 16) & 0xFF] ^ t[4, lo >> 24]
             ^ t[3, buf[i + 4]] ^ t[2, buf[i + 5]] ^ t[1, buf[i + 6]] ^ t[0, buf[i + 7]])
        i += 8
    while i < stop:
        c = t[0, (c ^ np.uint32(buf[i])) & 0xFF] ^ (c >> 8)
        i += 1
    return c ^ np.uint32(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _masked(buf, start, stop, t):
    c = crc(buf, start, stop, t, np.uint32(0))
    return np.uint32(((c >> np.uint32(15)) | (c << np.uint32(17))) + MASK_DELTA)


@numba.njit(cache=True, nogil=True)
def _u32(buf, at):
    return (np.uint32(buf[at]) | (np.uint32(buf[at + 1]) << 8) | (np.uint32(buf[at + 2]) << 16)
            | (np.uint32(buf[at + 3]) << 24))


@numba.njit(cache=True, nogil=True)
def _u64(buf, at):
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[at + k]) << np.uint64(8 * k)
    return v


@numba.njit(cache=True, nogil=True)
def _check(buf, at, n, t):
    """(status, data length) of the record at ``at``."""
    if n - at < HEADER:
        return TRUNCATED, 0
    if _masked(buf, at, at + 8, t) != _u32(buf, at + 8):
        return BAD_LENGTH_CRC, 0
    length = _u64(buf, at)
    if length > np.uint64(n - at - HEADER - FOOTER):
        return TRUNCATED, 0
    size = np.int64(length)
    if _masked(buf, at + HEADER, at + HEADER + size, t) != _u32(buf, at + HEADER + size):
        return BAD_DATA_CRC, size
    return OK, size


@numba.njit(cache=True, nogil=True)
def _resync(buf, at, n, t):
    """The next offset after ``at`` where a whole record passes both checks, or n."""
    p = at + 1
    while p + HEADER + FOOTER <= n:
        status, _ = _check(buf, p, n, t)
        if status == OK:
            return p
        p += 1
    return n


@numba.njit(cache=True, nogil=True)
def scan(buf, t, skip_damaged):
    """(offsets, lengths, damaged offsets, damaged reasons, end, status): the records of
    ``buf``; status OK (ended on a boundary), TRUNCATED at ``end``, or, without
    ``skip_damaged``, BAD_*_CRC at ``end``."""
    n = len(buf)
    cap = n // (HEADER + FOOTER) + 1
    offsets = np.empty(cap, np.int64)
    lengths = np.empty(cap, np.int64)
    bad_at = np.empty(0, np.int64)
    bad_why = np.empty(0, np.int64)
    count = 0
    at = 0
    status = OK
    while at < n:
        status, size = _check(buf, at, n, t)
        if status == OK:
            offsets[count] = at + HEADER
            lengths[count] = size
            count += 1
            at += HEADER + size + FOOTER
            continue
        if status == TRUNCATED or not skip_damaged:
            break
        bad_at = np.append(bad_at, at)
        bad_why = np.append(bad_why, status)
        at = at + HEADER + size + FOOTER if status == BAD_DATA_CRC else _resync(buf, at, n, t)
        status = OK
    return offsets[:count].copy(), lengths[:count].copy(), bad_at, bad_why, at, status


def announce_scan() -> SimpleNamespace:
    return SimpleNamespace(crc=announce(crc, "event-file"), scan=announce(scan, "event-file"))
