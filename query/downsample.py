"""Downsampled reads: min/max buckets from rollups, and LTTB.

Bucket plan (``plan``): for a step range [lo, hi) and at most N buckets, the wanted width
is w = ceil((hi - lo) / N). A rollup plan uses the groups of one level: its bucket width
is a multiple of the group width, just wide enough for N buckets from the group edge at
or below lo, so every inner bucket edge falls on a group edge. Only the two ends of the
range can cut a group; those pieces are taken from finer levels and, below level 0, from
the raw points (``decompose``). Every count, min, max, sum, first and last is therefore
exact. Rounding the width up to whole groups loses buckets: with groups just under w
wide, two groups a bucket give N/2 buckets. So the coarsest level whose groups fit in w
is used only when it gives at least 3N/4 buckets; otherwise the next level down, whose
groups are 16 times narrower, is tried (it reads 16 times more groups, still a few per
bucket), unless the coarse plan has N/2 buckets already and the level down would read
more than FINER_PAGES rollup pages (a 1000-bucket view of 10 M steps: 611 rows from about
40 pages rather than 977 from about 600, ten times the time). Level 0 is taken with at
least N/2 buckets, also when its groups are up to 2w wide. Failing all that, the
range's points are decoded and bucketed with width w from lo.

Whenever [lo, hi) holds at least N steps a plan has between ceil(N/2) and N buckets: a
raw width w = ceil(s/N) over s >= N - 1 steps gives ceil(s/w) >= N/2 of them. A read
returns the buckets holding points, so N points spread over the range (none more than
w apart) come back as that many rows.

Steps are any int64, so a range may reach 2**63 (it holds INT64_MAX), which no int64
bucket end can say: the last bucket then ends at INT64_MAX and holds INT64_MAX too. A
bucket's step_end is exclusive otherwise. Widths and edges are Python ints until they are
known to fit; the keys kernel takes the offset from the origin in uint64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

INT64_MAX = (1 << 63) - 1
UINT64_SPAN = 1 << 64
FINER_PAGES = 64   # rollup pages a finer level may read to give 3N/4 buckets, not N/2


class Plan(NamedTuple):
    level: int | None   # None: bucket raw points
    width: int          # steps per bucket
    origin: int         # bucket b covers [origin + b * width, origin + (b + 1) * width)
    count: int          # number of buckets


def plan(lo: int, hi: int, buckets: int, base_shift: int | None) -> Plan:
    """Python ints throughout: ranges may span all of int64 (hi up to 2**63).

    A plan has between ceil(N / 2) and N buckets whenever [lo, hi) holds at least N
    steps (module docstring). Raw buckets are spread over [lo, min(hi, INT64_MAX)), so
    that none starts at INT64_MAX (it could not end after its start); a point at
    INT64_MAX goes to the last bucket (``bucket_keys``). Rollup buckets start on group
    edges, which are even."""
    if base_shift is not None:
        for level in _levels(lo, hi, buckets, base_shift):
            found = _rollup_plan(lo, hi, buckets, level, base_shift)
            if 4 * found.count >= 3 * buckets or (level == 0 and 2 * found.count >= buckets):
                return found
            if level > 0 and 2 * found.count >= buckets and finer_pages(lo, hi, level, base_shift) > FINER_PAGES:
                return found
    top = min(hi, INT64_MAX)
    width = max(1, -(-(top - lo) // buckets))
    return Plan(None, width, lo, max(1, -(-(top - lo) // width)))


def finer_pages(lo: int, hi: int, level: int, base_shift: int) -> int:
    """Rollup pages that the level below ``level`` holds over [lo, hi)."""
    from ..engine.rollup import PAGE_GROUPS, level_shift

    return ((hi - lo) >> level_shift(base_shift, level - 1)) // PAGE_GROUPS + 1


def _levels(lo: int, hi: int, buckets: int, base_shift: int) -> list[int]:
    """Rollup levels worth trying, coarsest first: every level whose groups fit in the
    wanted width, or level 0 alone when its groups are at most twice that wide."""
    from ..engine.rollup import LEVELS, level_shift

    wanted = -(-(hi - lo) // buckets)
    fitting = [k for k in range(LEVELS) if (1 << level_shift(base_shift, k)) <= wanted]
    if not fitting and (1 << base_shift) <= 2 * wanted:
        return [0]   # at least half the buckets asked for, from rollups instead of every point
    return fitting[::-1]


def _rollup_plan(lo: int, hi: int, buckets: int, level: int, base_shift: int) -> Plan:
    from ..engine.rollup import level_shift

    group = 1 << level_shift(base_shift, level)
    origin = (lo // group) * group          # on the group grid, so every inner edge is too
    width = -(-(hi - origin) // (buckets * group)) * group
    return Plan(level, width, origin, -(-(hi - origin) // width))


def edges(plan: Plan, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every bucket, cut to [lo, hi); an end past int64 saturates."""
    return bounds(plan, lo, hi, np.arange(plan.count, dtype=np.int64))


def bounds(plan: Plan, lo: int, hi: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of buckets ``keys``, cut to [lo, hi); an end past int64 saturates."""
    span = (plan.count + 1) * plan.width
    if span <= INT64_MAX and plan.origin + span <= INT64_MAX:   # the common case: numpy
        starts = plan.origin + keys * plan.width
        return np.maximum(starts, lo), np.minimum(starts + plan.width, min(hi, INT64_MAX))
    starts = [max(lo, plan.origin + b * plan.width) for b in keys.tolist()]
    ends = [min(hi, plan.origin + (b + 1) * plan.width, INT64_MAX) for b in keys.tolist()]
    return np.array(starts, np.int64), np.array(ends, np.int64)


def bucket_keys(x: np.ndarray, plan: Plan) -> np.ndarray:
    """The bucket of every x (int64): -1 before the plan, ``plan.count`` past it."""
    from .kernels import floor_keys

    return floor_keys(np.ascontiguousarray(x, np.int64), np.int64(plan.origin),
                      np.uint64(plan.width % UINT64_SPAN), np.int64(plan.count - 1))


def decompose(lo: int, hi: int, level: int, base_shift: int, groups: list, raw: list) -> None:
    """Cover [lo, hi) by whole groups of ``level`` and below, and raw step ranges:
    appends (level, first gid, end gid) to ``groups`` and (lo, hi) to ``raw``."""
    from ..engine.rollup import level_shift

    if lo >= hi:
        return
    if level < 0:
        raw.append((lo, hi))
        return
    shift = level_shift(base_shift, level)
    first, end = -(-lo >> shift), hi >> shift       # ceil and floor division by the group width
    if first >= end:
        decompose(lo, hi, level - 1, base_shift, groups, raw)
        return
    groups.append((level, first, end))
    decompose(lo, first << shift, level - 1, base_shift, groups, raw)
    decompose(end << shift, hi, level - 1, base_shift, groups, raw)


class Buckets:
    """Aggregates of ``n`` buckets, filled by folding points and groups into them."""

    def __init__(self, n: int):
        from ..engine.rollupkernels import _empty

        self.arrays = _empty(n)

    def add_points(self, keys: np.ndarray, steps: np.ndarray, values: np.ndarray) -> None:
        from ..engine.rollupkernels import fold_points

        fold_points(steps, values, keys, *self.arrays)

    def add_groups(self, keys: np.ndarray, groups) -> None:
        from ..engine.rollupkernels import fold_groups

        fold_groups(keys, *groups[1:], *self.arrays)

    def table(self, starts: np.ndarray, ends: np.ndarray, x: str = "step") -> pa.Table:
        count, nan, mn, mx, total, first, fstep, last, lstep = self.arrays
        keep = count > 0
        valid = (count - nan)[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid > 0, total[keep] / np.maximum(valid, 1), np.nan)
        no_values = valid == 0
        columns = {
            f"{x}_start": starts[keep], f"{x}_end": ends[keep], "count": count[keep], "nan_count": nan[keep],
            "min": np.where(no_values, np.nan, mn[keep]), "max": np.where(no_values, np.nan, mx[keep]),
            "mean": mean, "first": first[keep], "first_step": fstep[keep], "last": last[keep],
            "last_step": lstep[keep],
        }
        return pa.table(columns)


def empty_table(x: str = "step") -> pa.Table:
    return typed_axis(Buckets(0).table(np.empty(0, np.int64), np.empty(0, np.int64), x), x)


def typed_axis(table: pa.Table, x: str) -> pa.Table:
    """Bucket bounds, whole microseconds, as timestamps (x="time") or durations (x="relative")."""
    if x == "step":
        return table
    kind = pa.timestamp("us", tz="UTC") if x == "time" else pa.duration("us")
    for name in (f"{x}_start", f"{x}_end"):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(kind))
    return table


def lttb_indices(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the points Largest-Triangle-Three-Buckets keeps (kernels.lttb): at most
    n, the first and the last among them when n >= 2, the last alone when n == 1, and a
    NaN or inf for each bucket that has one. x: sorted int64 (steps or ns)."""
    from .kernels import lttb

    x = np.ascontiguousarray(x, np.int64)
    # Triangles do not move with the axis: offsets from the first x, exact in uint64 over
    # all of int64, keep float64 precise where steps or epoch nanoseconds are large.
    offsets = (x.view(np.uint64) - (x[:1].view(np.uint64) if len(x) else np.uint64(0))).astype(np.float64)
    return lttb(offsets, np.ascontiguousarray(y, np.float64), np.int64(n))
