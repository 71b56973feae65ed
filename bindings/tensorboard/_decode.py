"""A numba decoder of the protobuf wire format of the events that hold most of a log:
``Event{wall_time, step, summary{value{tag, metadata{plugin_data{plugin_name}},
simple_value | tensor}}}``. It gives every event's wall time and step, and every
summary value's tag (as a hash and a byte range), kind, plugin name (a byte range)
and, for a simple_value or a one-element float/double tensor, its value; an event it
does not fully read (a session log, a histogram, an image, a text, anything it does
not know) is marked ``slow`` and decoded by protobuf in Python (importer.py). Parsing
protobuf in Python costs a few microseconds an event; this reads millions a second.
"""

from __future__ import annotations

from types import SimpleNamespace

import numba
import numpy as np

from steplog.engine.jit import announce

# value kinds
SIMPLE, SCALAR_TENSOR, OTHER_TENSOR, HISTO, OTHER = 1, 2, 3, 4, 5
# Event oneof "what": what the decoder reads itself
WHAT_NONE, WHAT_FILE_VERSION, WHAT_SUMMARY = 0, 3, 5
DT_FLOAT, DT_DOUBLE = 1, 2
FNV_OFFSET, FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True)
def _varint(buf, p, end):
    result = np.uint64(0)
    shift = np.uint64(0)
    while p < end:
        b = buf[p]
        p += 1
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, p
        shift += np.uint64(7)
        if shift >= np.uint64(64):
            return result, -1
    return result, -1


@numba.njit(cache=True, nogil=True)
def _skip(buf, p, end, wire):
    if wire == 0:
        _, p = _varint(buf, p, end)
        return p
    if wire == 1:
        return p + 8 if p + 8 <= end else -1
    if wire == 5:
        return p + 4 if p + 4 <= end else -1
    if wire == 2:
        n, p = _varint(buf, p, end)
        if p < 0 or n > np.uint64(end - p):
            return -1
        return p + np.int64(n)
    return -1


@numba.njit(cache=True, nogil=True)
def _f64(buf, p, tmp):
    for k in range(8):
        tmp[k] = buf[p + k]
    return tmp.view(np.float64)[0]


@numba.njit(cache=True, nogil=True)
def _f32(buf, p, tmp):
    for k in range(4):
        tmp[k] = buf[p + k]
    return np.float64(tmp[:4].view(np.float32)[0])


@numba.njit(cache=True, nogil=True)
def _plugin(buf, p, end):
    """(offset, length) of plugin_data.plugin_name in a SummaryMetadata; (p, 0) if none; (-1, -1) bad."""
    off, length = p, 0
    while p < end:
        key, p = _varint(buf, p, end)
        if p < 0:
            return -1, -1
        field, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
        if field == 1 and wire == 2:
            n, p = _varint(buf, p, end)
            if p < 0 or n > np.uint64(end - p):
                return -1, -1
            q, stop = p, p + np.int64(n)
            while q < stop:
                k2, q = _varint(buf, q, stop)
                if q < 0:
                    return -1, -1
                f2, w2 = np.int64(k2 >> np.uint64(3)), np.int64(k2 & np.uint64(7))
                if f2 == 1 and w2 == 2:
                    m, q = _varint(buf, q, stop)
                    if q < 0 or m > np.uint64(stop - q):
                        return -1, -1
                    off, length = q, np.int64(m)
                    q += length
                else:
                    q = _skip(buf, q, stop, w2)
                    if q < 0:
                        return -1, -1
            p = stop
        else:
            p = _skip(buf, p, end, wire)
            if p < 0:
                return -1, -1
    return off, length


@numba.njit(cache=True, nogil=True)
def _elements(buf, p, end):
    """Elements of a TensorShapeProto (-1: unknown rank or bad)."""
    count = np.int64(1)
    while p < end:
        key, p = _varint(buf, p, end)
        if p < 0:
            return -1
        field, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
        if field == 2 and wire == 2:
            n, p = _varint(buf, p, end)
            if p < 0 or n > np.uint64(end - p):
                return -1
            q, stop = p, p + np.int64(n)
            size = np.int64(0)
            while q < stop:
                k2, q = _varint(buf, q, stop)
                if q < 0:
                    return -1
                if k2 == np.uint64(8):
                    v, q = _varint(buf, q, stop)
                    if q < 0:
                        return -1
                    size = np.int64(v)
                else:
                    q = _skip(buf, q, stop, np.int64(k2 & np.uint64(7)))
                    if q < 0:
                        return -1
            count *= size
            p = stop
        elif field == 3:
            return -1
        else:
            p = _skip(buf, p, end, wire)
            if p < 0:
                return -1
    return count


@numba.njit(cache=True, nogil=True)
def _tensor(buf, p, end, tmp):
    """(kind, value) of a TensorProto: SCALAR_TENSOR for one float or double, else OTHER_TENSOR."""
    dtype, elements = np.int64(0), np.int64(1)
    found, value = 0, np.nan
    while p < end:
        key, p = _varint(buf, p, end)
        if p < 0:
            return OTHER_TENSOR, np.nan
        field, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
        if field == 1 and wire == 0:
            v, p = _varint(buf, p, end)
            dtype = np.int64(v)
        elif field == 2 and wire == 2:
            n, p = _varint(buf, p, end)
            if p < 0 or n > np.uint64(end - p):
                return OTHER_TENSOR, np.nan
            elements = _elements(buf, p, p + np.int64(n))
            p += np.int64(n)
        elif (field == 5 or field == 6 or field == 4) and wire == 2:
            n, p = _varint(buf, p, end)
            if p < 0 or n > np.uint64(end - p):
                return OTHER_TENSOR, np.nan
            size = np.int64(n)
            width = 4 if field == 5 else 8 if field == 6 else (4 if dtype == DT_FLOAT else 8)
            if size == width:
                value = _f32(buf, p, tmp) if width == 4 else _f64(buf, p, tmp)
                found += 1
            else:
                found += 2
            p += size
        elif field == 5 and wire == 5 and p + 4 <= end:
            value = _f32(buf, p, tmp)
            found += 1
            p += 4
        elif field == 6 and wire == 1 and p + 8 <= end:
            value = _f64(buf, p, tmp)
            found += 1
            p += 8
        else:
            if wire == 2 or field >= 7:
                found += 2   # another value field (ints, strings, ...) or the shape of something else
            p = _skip(buf, p, end, wire)
            if p < 0:
                return OTHER_TENSOR, np.nan
    if found == 1 and elements == 1 and (dtype == DT_FLOAT or dtype == DT_DOUBLE):
        return SCALAR_TENSOR, value
    return OTHER_TENSOR, np.nan


@numba.njit(cache=True, nogil=True)
def _grow(a, n):
    b = np.empty(max(2 * len(a), n), a.dtype)
    b[:len(a)] = a
    return b


@numba.njit(cache=True, nogil=True)
def decode(buf, offsets, lengths):
    n_events = len(offsets)
    wall = np.zeros(n_events, np.float64)
    step = np.zeros(n_events, np.int64)
    slow = np.zeros(n_events, np.bool_)
    cap = n_events + 16
    v_event = np.empty(cap, np.int64)
    v_toff = np.empty(cap, np.int64)
    v_tlen = np.empty(cap, np.int64)
    v_hash = np.empty(cap, np.uint64)
    v_kind = np.empty(cap, np.int8)
    v_value = np.empty(cap, np.float64)
    v_poff = np.empty(cap, np.int64)
    v_plen = np.empty(cap, np.int64)
    tmp = np.empty(8, np.uint8)
    nv = 0
    for i in range(n_events):
        p, end = offsets[i], offsets[i] + lengths[i]
        first_value = nv
        bad = False
        while p < end and not bad:
            key, p = _varint(buf, p, end)
            if p < 0:
                bad = True
                break
            field, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
            if field == 1 and wire == 1 and p + 8 <= end:
                wall[i] = _f64(buf, p, tmp)
                p += 8
            elif field == 2 and wire == 0:
                v, p = _varint(buf, p, end)
                step[i] = np.int64(v)
            elif field == 5 and wire == 2:
                n, p = _varint(buf, p, end)
                if p < 0 or n > np.uint64(end - p):
                    bad = True
                    break
                q, stop = p, p + np.int64(n)
                p = stop
                while q < stop and not bad:   # Summary: repeated Value value = 1
                    k2, q = _varint(buf, q, stop)
                    if q < 0 or k2 != np.uint64(10):
                        bad = True
                        break
                    m, q = _varint(buf, q, stop)
                    if q < 0 or m > np.uint64(stop - q):
                        bad = True
                        break
                    r, vstop = q, q + np.int64(m)
                    q = vstop
                    if nv == len(v_event):
                        v_event, v_toff, v_tlen = _grow(v_event, nv), _grow(v_toff, nv), _grow(v_tlen, nv)
                        v_hash, v_kind, v_value = _grow(v_hash, nv), _grow(v_kind, nv), _grow(v_value, nv)
                        v_poff, v_plen = _grow(v_poff, nv), _grow(v_plen, nv)
                    v_event[nv], v_toff[nv], v_tlen[nv], v_kind[nv], v_value[nv] = i, r, 0, OTHER, np.nan
                    v_poff[nv], v_plen[nv] = r, -1
                    while r < vstop:
                        k3, r = _varint(buf, r, vstop)
                        if r < 0:
                            bad = True
                            break
                        f3, w3 = np.int64(k3 >> np.uint64(3)), np.int64(k3 & np.uint64(7))
                        if w3 == 2:
                            ln, r = _varint(buf, r, vstop)
                            if r < 0 or ln > np.uint64(vstop - r):
                                bad = True
                                break
                            size = np.int64(ln)
                            if f3 == 1:
                                v_toff[nv], v_tlen[nv] = r, size
                            elif f3 == 9:
                                po, pl = _plugin(buf, r, r + size)
                                if pl < 0:
                                    bad = True
                                    break
                                v_poff[nv], v_plen[nv] = po, pl
                            elif f3 == 8:
                                kind, val = _tensor(buf, r, r + size, tmp)
                                v_kind[nv], v_value[nv] = kind, val
                            elif f3 == 5:
                                v_kind[nv] = HISTO
                            elif f3 != 7:
                                v_kind[nv] = OTHER
                            r += size
                        elif f3 == 2 and w3 == 5 and r + 4 <= vstop:
                            v_kind[nv], v_value[nv] = SIMPLE, _f32(buf, r, tmp)
                            r += 4
                        else:
                            r = _skip(buf, r, vstop, w3)
                            if r < 0:
                                bad = True
                                break
                    h = FNV_OFFSET
                    for k in range(v_toff[nv], v_toff[nv] + v_tlen[nv]):
                        h = (h ^ np.uint64(buf[k])) * FNV_PRIME
                    v_hash[nv] = h
                    if v_kind[nv] != SIMPLE and v_kind[nv] != SCALAR_TENSOR:
                        slow[i] = True
                    nv += 1
            elif field == 3 and wire == 2:
                p = _skip(buf, p, end, wire)
            elif field == 10:
                p = _skip(buf, p, end, wire)
            else:
                slow[i] = True   # a session log, a graph, run metadata...
                p = _skip(buf, p, end, wire)
            if p < 0:
                bad = True
        if bad:
            slow[i] = True
            nv = first_value   # protobuf reads it (or says what is wrong)
    return (wall, step, slow, v_event[:nv].copy(), v_toff[:nv].copy(), v_tlen[:nv].copy(), v_hash[:nv].copy(),
            v_kind[:nv].copy(), v_value[:nv].copy(), v_poff[:nv].copy(), v_plen[:nv].copy())


@numba.njit(cache=True, nogil=True)
def same_tags(buf, v_toff, v_tlen, first_toff, first_tlen, inverse):
    """Whether every value's tag bytes equal those of its hash's first value (no collision)."""
    for j in range(len(v_toff)):
        k = inverse[j]
        if v_tlen[j] != first_tlen[k]:
            return False
        a, b = v_toff[j], first_toff[k]
        for x in range(v_tlen[j]):
            if buf[a + x] != buf[b + x]:
                return False
    return True


def kernels() -> SimpleNamespace:
    return SimpleNamespace(decode=announce(decode, "event-file"), same_tags=announce(same_tags, "event-file"))
