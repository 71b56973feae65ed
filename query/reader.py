"""Reads of one series from one consistent snapshot: points, buckets, LTTB.

A ``SeriesReader`` holds an index read transaction and the points of the same store
object that were not yet flushed, taken together, so a read sees every block either
whole or not at all and sees its own store's recent points exactly once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..engine.block import KIND_SUMMARY
from ..engine.index import EMPTY_SERIES, IndexReader, SeriesEntry
from ..engine.segment import SegmentReader
from . import downsample
from .read import Points, RelativePoints, concat, decoder, decode_blocks, micros, select_range, sort_by_step
from .tensors import SummaryRows, buckets_table, rows_from_blocks, rows_table

X_AXES = ("step", "time", "relative")


class SeriesReader:
    def __init__(self, txn: IndexReader, segments: SegmentReader, path_of, entry: SeriesEntry | None,
                 unflushed: list[tuple]):
        self._txn = txn
        self._segments = segments
        self._path_of = path_of
        self.entry = entry
        self.info = txn.series_info(entry.series_id) if entry is not None else EMPTY_SERIES
        self._raw_unflushed = [chunk for chunk in unflushed if len(chunk[0])]
        self._unflushed = [Points(*chunk) for chunk in self._raw_unflushed if isinstance(chunk[2], np.ndarray)]

    @property
    def exists(self) -> bool:
        """Whether the series holds anything: stored, or logged here and not yet flushed."""
        return self.entry is not None or bool(self._raw_unflushed)

    # -- raw points --------------------------------------------------------------------

    def stored_points(self, start: int | None, stop: int | None) -> Points:
        if self.entry is None:
            return Points.empty()
        refs = self._txn.blocks_overlapping(self.entry.series_id, start, stop)
        return decode_blocks(self._segments, self._path_of, refs, start, stop)

    def recent_points(self, start: int | None, stop: int | None) -> list[Points]:
        return [select_range(p, start, stop) for p in self._unflushed]

    def points(self, start: int | None, stop: int | None) -> Points:
        """Points with start <= step < stop, by step, ties in write order."""
        return sort_by_step(concat([self.stored_points(start, stop), *self.recent_points(start, stop)]))

    def step_bounds(self) -> tuple[int, int] | None:
        """(smallest step, largest step + 1) over stored and recent points."""
        lows = [int(p.steps.min()) for p in self._unflushed]
        highs = [int(p.steps.max()) for p in self._unflushed]
        if self.info.count:
            lows.append(self.info.step_min)
            highs.append(self.info.step_max)
        return (min(lows), max(highs) + 1) if lows else None

    # -- tensor summaries --------------------------------------------------------------

    def summary_rows(self, start: int | None, stop: int | None) -> SummaryRows:
        """Summary rows with start <= step < stop, by step, ties in write order."""
        from ..engine.summary import SUMMARY_FIELDS
        from ..engine.points import summary_runs

        parts = []
        if self.entry is not None:
            refs = sorted(self._txn.blocks_overlapping(self.entry.series_id, start, stop), key=lambda r: r.seq)
            for ref in refs:
                data = self._segments.read(ref.segment_id, ref.offset, ref.header.length)
                parts.append(decoder().decode(data, self._path_of(ref.segment_id), ref.offset,
                                              ref.header_bytes, KIND_SUMMARY))
        for chunk in self._raw_unflushed:
            parts.extend(summary_runs(*chunk, max_rows=len(chunk[0]) or 1))
        keep = [_summary_range(p, start, stop) for p in parts]
        return rows_from_blocks(keep, len(SUMMARY_FIELDS))

    def summaries(self, start: int | None, stop: int | None, n: int | None) -> pa.Table:
        rows = self.summary_rows(start, stop)
        if n is None:
            return rows_table(rows)
        if not len(rows.steps):
            return buckets_table(rows, 0, 1, 1)
        lo = int(rows.steps[0]) if start is None else start
        hi = int(rows.steps[-1]) + 1 if stop is None else stop
        return buckets_table(rows, lo, hi, n)

    # -- downsampled -------------------------------------------------------------------

    def buckets(self, start: int | None, stop: int | None, n: int, x: str = "step",
                run_start_ns: int = 0) -> pa.Table:
        bounds = self.step_bounds()
        if bounds is None:
            return downsample.empty_table(x)
        lo = bounds[0] if start is None else start
        hi = bounds[1] if stop is None else stop
        if lo >= hi:
            return downsample.empty_table(x)
        if x != "step":
            return self._time_buckets(self.points(lo, hi), n, x, run_start_ns)
        plan = downsample.plan(lo, hi, n, self.entry.rollup_shift if self.entry is not None else None)
        out = downsample.Buckets(plan.count)
        if plan.level is None:
            self._add_points(out, self.points(lo, hi), plan)
        else:
            self._add_rollups(out, lo, hi, plan)
            for part in self.recent_points(lo, hi):   # later writes than any stored point
                self._add_points(out, part, plan)
        return out.table(*downsample.edges(plan, lo, hi))

    def _add_points(self, out: downsample.Buckets, points: Points, plan: downsample.Plan) -> None:
        out.add_points(downsample.bucket_keys(points.steps, plan), points.steps, points.values)

    def _add_rollups(self, out: downsample.Buckets, lo: int, hi: int, plan: downsample.Plan) -> None:
        from ..engine.rollup import level_shift

        base = self.entry.rollup_shift
        lo, hi = self._widen_to_groups(lo, hi)
        groups, raw = [], []
        downsample.decompose(lo, hi, plan.level, base, groups, raw)
        for level, first, end in groups:
            found = self._groups(level, first, end)
            starts = found.gid << level_shift(base, level)
            out.add_groups(downsample.bucket_keys(starts, plan), found)
        for piece_lo, piece_hi in raw:
            self._add_points(out, self.stored_points(piece_lo, piece_hi), plan)

    def _groups(self, level: int, first: int, end: int):
        """The stored groups of ``level`` with first <= gid < end."""
        from ..engine.rollup import PAGE_GROUPS, read_groups

        found = read_groups(self._txn.rollup_pages(self.entry.series_id, level, first // PAGE_GROUPS,
                                                   (end - 1) // PAGE_GROUPS + 1))
        keep = (found.gid >= first) & (found.gid < end)
        return type(found)(*(field[keep] for field in found))

    def rollup_groups(self, level: int, pages: np.ndarray):
        """The stored groups of ``level`` in the rollup pages ``pages`` (ascending, distinct
        page numbers), ascending: one index scan for each run of consecutive pages."""
        from ..engine.rollup import read_groups

        found = []
        if len(pages):
            breaks = np.flatnonzero(np.diff(pages) != 1) + 1
            for run in np.split(pages, breaks):
                found += self._txn.rollup_pages(self.entry.series_id, level, int(run[0]), int(run[-1]) + 1)
        return read_groups(found)

    def blocks_in(self, lo: int, hi: int) -> list:
        """The stored blocks that hold a step in [lo, hi) (hi may be 2**63)."""
        return self._txn.blocks_overlapping(self.entry.series_id, lo, hi) if self.entry is not None else []

    def decode(self, refs: list, start: int | None, stop: int | None) -> Points:
        """The points of blocks ``refs`` with start <= step < stop, in write order."""
        return decode_blocks(self._segments, self._path_of, refs, start, stop)

    def _widen_to_groups(self, lo: int, hi: int) -> tuple[int, int]:
        """Move lo down (hi up) to the edge of its level-0 group when none of that group's
        stored points lies outside [lo, hi): the whole group then counts, exactly, and
        no block needs decoding there (reads of a whole series never decode)."""
        shift = self.entry.rollup_shift
        if lo & ((1 << shift) - 1):
            g = lo >> shift
            edge = self._groups(0, g, g + 1)
            if not len(edge.gid) or edge.first_step[0] >= lo:
                lo = g << shift
        if hi & ((1 << shift) - 1):
            g = (hi - 1) >> shift
            edge = self._groups(0, g, g + 1)
            if not len(edge.gid) or edge.last_step[0] < hi:
                hi = (g + 1) << shift
        return lo, hi

    @staticmethod
    def _time_buckets(points: Points, n: int, x: str, run_start_ns: int) -> pa.Table:
        """Buckets even in wall-clock (or run-relative) time; they decode the range."""
        if not len(points):
            return downsample.empty_table(x)
        # on the microsecond axis the tables show: each bound is a whole microsecond
        axis = micros(points.times) - (micros(np.int64(run_start_ns)) if x == "relative" else 0)
        lo, hi = int(axis.min()), int(axis.max()) + 1
        plan = downsample.plan(lo, hi, n, None)
        out = downsample.Buckets(plan.count)
        out.add_points(downsample.bucket_keys(axis, plan), points.steps, points.values)
        return downsample.typed_axis(out.table(*downsample.edges(plan, lo, hi), x), x)

    def lttb(self, start: int | None, stop: int | None, n: int, x: str = "step", run_start_ns: int = 0) -> Points:
        """At most n raw points chosen by LTTB over the x axis, in its order (by time, ties
        by step, for "time" and "relative"), NaN and inf shown (kernels.lttb); x="relative"
        gives RelativePoints, whose table has the time since ``run_start_ns``."""
        points = self.points(start, stop)
        if x != "step":
            order = np.argsort(points.times, kind="stable")
            points = Points(points.steps[order], points.times[order], points.values[order])
        keep = downsample.lttb_indices(points.steps if x == "step" else points.times, points.values, n)
        if x == "relative":   # the origin moves the axis, not the triangles: chosen on times
            return RelativePoints(points.steps[keep], points.times[keep], points.values[keep], run_start_ns)
        return Points(points.steps[keep], points.times[keep], points.values[keep])


def _summary_range(rows, start: int | None, stop: int | None):
    """The rows of a decoded Summaries with start <= step < stop."""
    keep = np.ones(len(rows.steps), bool)
    if start is not None:
        keep &= rows.steps >= start
    if stop is not None:
        keep &= rows.steps < stop
    if keep.all():
        return rows
    return rows._replace(steps=rows.steps[keep], times=rows.times[keep], stats=rows.stats[keep],
                         counts=rows.counts[keep])
