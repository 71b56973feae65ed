"""Point reads: pick the blocks that overlap a step range, decode them, merge, slice.

Blocks are decoded straight into preallocated output columns; large reads decode on
two threads (zstd and the numba kernels release the GIL). Points come back sorted by
step, ties in write order (block sequence, then position in the block).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from ..engine.block import BlockDecoder
from ..engine.index import BlockRef
from ..engine.segment import SegmentReader
from ..engine.threads import leave_signals_to_main_thread

PARALLEL_MIN_BLOCKS = 16
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

# Every table steplog returns gives times in microseconds, the unit Python's datetime,
# pandas-free to_pylist(), Parquet readers and Spark all take; the exact nanoseconds a
# point was logged with come beside them as "time_ns" (int64).
TIME_TYPE = pa.timestamp("us", tz="UTC")
RELATIVE_TYPE = pa.duration("us")
POINTS_SCHEMA = pa.schema([("step", pa.int64()), ("time", TIME_TYPE), ("value", pa.float64()),
                           ("time_ns", pa.int64())])
RELATIVE_SCHEMA = pa.schema([("step", pa.int64()), ("time", TIME_TYPE), ("relative", RELATIVE_TYPE),
                             ("value", pa.float64()), ("time_ns", pa.int64())])


def micros(ns: np.ndarray) -> np.ndarray:
    """Nanoseconds since the epoch -> whole microseconds, rounded down (before 1970 too)."""
    return np.floor_divide(ns, 1000)


def time_column(ns: np.ndarray) -> pa.Array:
    """The "time" column of nanosecond times."""
    us = micros(np.ascontiguousarray(ns, np.int64))
    return pa.Array.from_buffers(TIME_TYPE, len(us), [None, pa.py_buffer(us)])


def decoder() -> BlockDecoder:
    """This thread's BlockDecoder (a zstd decompressor is not thread-safe)."""
    found = getattr(_local, "decoder", None)
    if found is None:
        found = _local.decoder = BlockDecoder()
    return found


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="steplog-read",
                                       initializer=leave_signals_to_main_thread)
        return _pool


class Points:
    """Three aligned columns."""

    __slots__ = ("steps", "times", "values")

    def __init__(self, steps: np.ndarray, times: np.ndarray, values: np.ndarray):
        self.steps, self.times, self.values = steps, times, values

    def __len__(self) -> int:
        return len(self.steps)

    @classmethod
    def empty(cls) -> "Points":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_arrays([pa.array(self.steps), time_column(self.times), pa.array(self.values),
                                     pa.array(self.times)], schema=POINTS_SCHEMA)


class RelativePoints(Points):
    """Points and their time since ``origin_ns`` (the run's start): ``to_arrow`` adds a
    "relative" duration column after time, the axis an x="relative" view plots: time
    minus the run's start_time, both in the microseconds the tables show."""

    __slots__ = ("origin_ns",)

    def __init__(self, steps: np.ndarray, times: np.ndarray, values: np.ndarray, origin_ns: int):
        super().__init__(steps, times, values)
        self.origin_ns = origin_ns

    def to_arrow(self) -> pa.Table:
        table = super().to_arrow()
        relative = micros(self.times) - micros(np.int64(self.origin_ns))
        column = pa.Array.from_buffers(RELATIVE_TYPE, len(relative), [None, pa.py_buffer(relative)])
        return table.add_column(2, RELATIVE_SCHEMA.field("relative"), column)


def empty_points_table(x: str = "step") -> pa.Table:
    """The schema of a point read with no rows: with x="relative", LTTB's "relative" column too."""
    return (RELATIVE_SCHEMA if x == "relative" else POINTS_SCHEMA).empty_table()


def decode_blocks(segments: SegmentReader, path_of, refs: list[BlockRef], start: int | None,
                  stop: int | None) -> Points:
    """Decode ``refs`` (in any order) into one Points, keeping steps in [start, stop)."""
    refs = sorted(refs, key=lambda r: r.seq)
    total = sum(r.header.count for r in refs)
    out = Points(np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.float64))
    positions = np.cumsum([0] + [r.header.count for r in refs])

    def decode(first: int, end: int) -> None:
        for i in range(first, end):
            ref = refs[i]
            lo, hi = positions[i], positions[i + 1]
            data = segments.read(ref.segment_id, ref.offset, ref.header.length)
            decoder().decode_into(data, path_of(ref.segment_id), ref.offset,
                                  out.steps[lo:hi], out.times[lo:hi], out.values[lo:hi], ref.header_bytes)

    if len(refs) >= PARALLEL_MIN_BLOCKS:   # one contiguous run of blocks a thread: few hand-offs
        half = len(refs) // 2
        for future in [_executor().submit(decode, 0, half), _executor().submit(decode, half, len(refs))]:
            future.result()
    else:
        decode(0, len(refs))
    h_min = min((r.header.step_min for r in refs), default=0)
    h_max = max((r.header.step_max for r in refs), default=0)
    if (start is not None and h_min < start) or (stop is not None and h_max >= stop):
        out = select_range(out, start, stop)
    return out


def select_range(points: Points, start: int | None, stop: int | None) -> Points:
    keep = np.ones(len(points), bool)
    if start is not None:
        keep &= points.steps >= start
    if stop is not None:
        keep &= points.steps < stop
    return Points(points.steps[keep], points.times[keep], points.values[keep])


def concat(parts: list[Points]) -> Points:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Points.empty()
    if len(parts) == 1:
        return parts[0]
    return Points(np.concatenate([p.steps for p in parts]), np.concatenate([p.times for p in parts]),
                  np.concatenate([p.values for p in parts]))


def sort_by_step(points: Points) -> Points:
    """Stable sort by step: ties keep write order."""
    from ..engine.smallcodec import is_sorted

    if len(points) < 2 or is_sorted(points.steps):
        return points
    order = np.argsort(points.steps, kind="stable")
    return Points(points.steps[order], points.times[order], points.values[order])
