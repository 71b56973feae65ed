"""Aggregates of a whole scalar series, kept in the index (table ``aggregates``) and
merged at every flush, so that questions about many runs ("best val loss of each run")
are answered without decoding a point.

One value per series: count, nan_count, sum of the non-NaN values, and four chosen
points, each with its step and the block_seq of the chunk that holds it:

    min    smallest non-NaN value (inf counts); ties: lowest step, then earliest written
    max    largest non-NaN value; ties: lowest step, then earliest written
    first  the point at the lowest step; ties: earliest written
    last   the point at the highest step; ties: latest written (MLflow's "latest")

Write order is (block_seq, position in the block), the order reads break ties in, so
merging the aggregates of two sets of points gives exactly those of their union, in
any order: across flushes, processes and resumed runs. -0.0 and 0.0 compare equal (the
tie rule picks one, and its sign is kept). With every value NaN, min and max are NaN
and their seq is 0 (no point); sum is 0.0. Layout in docs/FORMAT.md, "Aggregates".

Pure: numpy and Python over arrays, no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

AGGREGATES = struct.Struct("<QQd" + "dqQ" * 4)
NAN = float("nan")
SMALL_POINTS = 32   # up to this many points Python over the lists beats numpy's per-call cost


class Aggregates(NamedTuple):
    count: int
    nan_count: int
    sum: float
    min: float
    min_step: int
    min_seq: int     # 0: no non-NaN point
    max: float
    max_step: int
    max_seq: int
    first: float
    first_step: int
    first_seq: int
    last: float
    last_step: int
    last_seq: int

    def pack(self) -> bytes:
        return AGGREGATES.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> "Aggregates":
        return cls._make(AGGREGATES.unpack(raw))

    @property
    def mean(self) -> float:
        n = self.count - self.nan_count
        return self.sum / n if n else NAN


def of_points(steps, values, seq_of=None) -> Aggregates:
    """The aggregates of points in write order (lists or arrays). ``seq_of(position)``
    gives the block_seq of the point at that position (default: the position + 1)."""
    n = len(values)
    if not n:
        raise ValueError("aggregates of no points")
    if n <= SMALL_POINTS:
        picked = _small(steps.tolist() if isinstance(steps, np.ndarray) else steps,
                        values.tolist() if isinstance(values, np.ndarray) else values)
    else:
        picked = _large(np.asarray(steps, np.int64), np.asarray(values, np.float64))
    count, nans, total, mi, xi, fi, li, s, v = picked
    seq = (lambda i: i + 1) if seq_of is None else seq_of
    if mi < 0:
        low = high = (NAN, 0, 0)
    else:
        low, high = (float(v[mi]), int(s[mi]), seq(mi)), (float(v[xi]), int(s[xi]), seq(xi))
    return Aggregates(count, nans, float(total), *low, *high, float(v[fi]), int(s[fi]), seq(fi),
                      float(v[li]), int(s[li]), seq(li))


def _small(steps: list, values: list) -> tuple:
    n = len(values)
    if n == 1:
        v = values[0]
        ok = v == v
        return 1, 0 if ok else 1, v if ok else 0.0, 0 if ok else -1, 0, 0, 0, steps, values
    order = range(n)
    fi = min(order, key=steps.__getitem__)            # min() keeps the first of equals: earliest
    li = max(order, key=lambda i: (steps[i], i))      # latest written of the highest step
    ok = [i for i in order if values[i] == values[i]]
    if not ok:
        return n, n, 0.0, -1, 0, fi, li, steps, values
    mi = min(ok, key=lambda i: (values[i], steps[i]))
    xi = min(ok, key=lambda i: (-values[i], steps[i]))
    return n, n - len(ok), sum(values[i] for i in ok), mi, xi, fi, li, steps, values


def _large(steps: np.ndarray, values: np.ndarray) -> tuple:
    n = len(values)
    fi = int(np.argmin(steps))                        # argmin keeps the first: earliest written
    li = n - 1 - int(np.argmax(steps[::-1]))
    nan = np.isnan(values)
    nans = int(np.count_nonzero(nan))
    if nans == n:
        return n, n, 0.0, -1, 0, fi, li, steps, values
    kept = values if not nans else values[~nan]
    where = None if not nans else np.flatnonzero(~nan)
    picks = []
    for extreme in (kept.min(), kept.max()):
        at = np.flatnonzero(kept == extreme)          # -0.0 == 0.0: the tie rule picks
        if where is not None:
            at = where[at]
        picks.append(int(at[np.argmin(steps[at])]))
    with np.errstate(invalid="ignore", over="ignore"):   # inf + -inf is NaN, 1e308 + 1e308 inf
        total = float(kept.sum())
    return n, nans, total, picks[0], picks[1], fi, li, steps, values


def placed(found: Aggregates, seq_of) -> Aggregates:
    """``found`` (of ``of_points`` without ``seq_of``: positions + 1) with each point's
    position replaced by ``seq_of(position)``, once the blocks are numbered."""
    def seq(i: int) -> int:
        return seq_of(i - 1) if i else 0

    return found._replace(min_seq=seq(found.min_seq), max_seq=seq(found.max_seq),
                          first_seq=seq(found.first_seq), last_seq=seq(found.last_seq))


def merge(a: "Aggregates | None", b: "Aggregates | None") -> "Aggregates | None":
    """The aggregates of the union of two disjoint sets of points."""
    if a is None or not a.count:
        return b
    if b is None or not b.count:
        return a
    if not a.min_seq:
        low, high = b[3:6], b[6:9]
    elif not b.min_seq:
        low, high = a[3:6], a[6:9]
    else:
        low = min(a[3:6], b[3:6])                            # (value, step, seq)
        high = min(a[6:9], b[6:9], key=lambda p: (-p[0], p[1], p[2]))
    first = min(a[9:12], b[9:12], key=lambda p: (p[1], p[2]))
    last = max(a[12:15], b[12:15], key=lambda p: (p[1], p[2]))
    return Aggregates(a.count + b.count, a.nan_count + b.nan_count, a.sum + b.sum, *low, *high, *first, *last)


def merge_all(parts) -> "Aggregates | None":
    found = None
    for part in parts:
        found = merge(found, part)
    return found
