"""What one flush writes: the batch's points grouped by series, cut into blocks, the
small series gathered into pack blocks (engine.block KIND_PACK).

A flush of many series with a point or two each is the common case of a sweep that logs
many names; one block per series (a 112-byte header, a part table, an index entry of
its own) would cost far more than the points. A series with at most PACK_MAX_POINTS
points in the flush is instead a member of a pack. Pure: no I/O, no index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .block import KIND_SCALAR, KIND_SUMMARY
from .points import columns, summary_runs

if TYPE_CHECKING:
    from .aggregates import Aggregates

PACK_MAX_POINTS = 32      # points of one series in a flush that go into a pack instead of a block
PACK_MAX_MEMBERS = 4096   # members of one pack


class SeriesPoints(NamedTuple):
    """The points of one series in a flush, in write order."""

    series: object        # engine.writer.SeriesRef
    steps: "np.ndarray | list"
    times: "np.ndarray | list"
    values: "np.ndarray | list"

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return columns(self.steps, self.times, self.values)


class Member(NamedTuple):
    """One series' points in a pack, as its index entry needs them."""

    series_id: int
    count: int
    step_min: int
    step_max: int
    last_step: int        # step of its last point in write order


class Work(NamedTuple):
    """One block to encode: kind "points" (series_id, steps, times, values), "summaries"
    (series_id, rows) or "pack" (series_ids, counts, steps, times, values); ``last_step``
    is the step of the block's last point in write order (points, summaries);
    ``members`` those of a pack."""

    kind: str
    args: tuple
    last_step: int = 0
    members: tuple = ()


def by_series(batch) -> list[SeriesPoints]:
    """The batch's points per series, series in first-seen order, points in write order.
    Small series keep their Python lists (no numpy per series: there may be 100,000)."""
    found: dict[object, list] = {}
    for item in batch:
        found.setdefault(item.series.key, []).append(item)
    result = []
    for items in found.values():
        series = items[0].series
        if len(items) == 1:
            item = items[0]
            result.append(SeriesPoints(series, item.steps, item.times, item.values))
            continue
        cols = [columns(item.steps, item.times, item.values) for item in items]
        if series.kind == KIND_SUMMARY:
            values = [row for c in cols for row in c[2]]
        else:
            values = np.concatenate([c[2] for c in cols])
        result.append(SeriesPoints(series, np.concatenate([c[0] for c in cols]),
                                   np.concatenate([c[1] for c in cols]), values))
    return result


def aggregates(groups: list[SeriesPoints]) -> dict[int, "Aggregates"]:
    """series_id -> the aggregates (engine.aggregates) of its points in this flush, for
    every scalar series; the seq fields hold positions + 1 until the blocks are numbered."""
    from .aggregates import of_points

    return {group.series.series_id: of_points(group.steps, group.values)
            for group in groups if group.series.kind == KIND_SCALAR}


def plan(groups: list[SeriesPoints], block_points: int, summary_rows: int) -> list[Work]:
    """The blocks of a flush: blocks of the big series first, then the packs."""
    work, small = [], []
    for group in groups:
        series_id = group.series.series_id
        if group.series.kind == KIND_SCALAR and len(group.values) <= PACK_MAX_POINTS:
            small.append(group)
            continue
        steps, times, values = group.arrays()
        if group.series.kind == KIND_SUMMARY:
            for rows in summary_runs(steps, times, values, summary_rows):
                work.append(Work("summaries", (series_id, rows), int(rows.steps[-1])))
            continue
        for lo in range(0, len(steps), block_points):
            hi = lo + block_points
            last = int(steps[min(hi, len(steps)) - 1])
            work.append(Work("points", (series_id, steps[lo:hi], times[lo:hi], values[lo:hi]), last))
    work.extend(_packs(small, block_points))
    return work


def _packs(small: list[SeriesPoints], block_points: int) -> list[Work]:
    packs, start, points = [], 0, 0
    for i, group in enumerate(small):
        n = len(group.values)
        if i > start and (points + n > block_points or i - start >= PACK_MAX_MEMBERS):
            packs.append(_pack(small[start:i]))
            start, points = i, 0
        points += n
    if start < len(small):
        packs.append(_pack(small[start:]))
    return packs


def _pack(groups: list[SeriesPoints]) -> Work:
    steps, times, values, members = [], [], [], []
    for group in groups:
        s = group.steps.tolist() if isinstance(group.steps, np.ndarray) else group.steps
        steps.extend(s)
        times.extend(group.times.tolist() if isinstance(group.times, np.ndarray) else group.times)
        values.extend(group.values.tolist() if isinstance(group.values, np.ndarray) else group.values)
        members.append(Member(group.series.series_id, len(s), min(s), max(s), s[-1]))
    ids = np.array([m.series_id for m in members], np.int64)
    counts = np.array([m.count for m in members], np.int64)
    args = (ids, counts, np.array(steps, np.int64), np.array(times, np.int64), np.array(values, np.float64))
    return Work("pack", args, members=tuple(members))
