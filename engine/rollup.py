"""Rollups: aggregates over fixed step ranges of a series, kept at ingest at several levels.

Level k of a series splits the step axis into groups of ``1 << shift(k)`` steps, with
``shift(k) = base_shift + LEVEL_BITS * k``; group ``g`` holds steps
``[g << shift, (g + 1) << shift)``. ``base_shift`` is fixed when a series is created so
that a level-0 group holds about ``1 << BASE_POINTS_BITS`` points (it grows with the
spacing of the steps). Every group keeps count, NaN count, min, max and sum of the
non-NaN values, and the value and step of the first point (smallest step, earliest
written on ties) and of the last point (largest step, latest written on ties).
Aggregates merge exactly, so flushes, processes and out-of-order steps all fold into
the same groups.

Groups are stored in pages of ``PAGE_GROUPS`` consecutive groups, one LMDB value a
page (``index.Index`` table ``rollups``), as 9 little-endian arrays one after another:
count i64, nan_count i64, min f64, max f64, sum f64, first f64, first_step i64, last f64,
last_step i64. An empty group has count 0, min +inf, max -inf. Layout in docs/FORMAT.md.

The kernels that fold points and groups are numba's, in engine/rollupkernels.py;
engine/smallrollup.py is their numpy twin (the same results), which folds while
engine.twins says that pays, so that a short script imports no numba.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import zstandard

from . import twins
from .errors import CorruptionError

LEVELS = 5
LEVEL_BITS = 4            # each level's groups are 16 times wider than the level below
PAGE_GROUPS = 32          # 9 * 32 * 8 = 2304 bytes raw; compressed, a page fits inline in an LMDB leaf
BASE_POINTS_BITS = 9      # about 512 points in a level-0 group
MAX_BASE_SHIFT = 62 - LEVEL_BITS * (LEVELS - 1)
FIELDS = 9
PAGE_BYTES = FIELDS * PAGE_GROUPS * 8
PAGE_ZSTD_LEVEL = 1
POINT_WORDS = 3            # the numpy twins' extra cost of a point (or group), in engine.twins words
CALL_WORDS = 10_000        # ... and of a call (a dozen numpy calls)
_local = threading.local()
_FIELD_TYPES = (np.int64, np.int64, np.float64, np.float64, np.float64, np.float64, np.int64, np.float64, np.int64)


class Groups(NamedTuple):
    """Aggregates of groups, one entry per group, ascending group id."""

    gid: np.ndarray
    count: np.ndarray
    nan_count: np.ndarray
    min: np.ndarray
    max: np.ndarray
    sum: np.ndarray
    first: np.ndarray
    first_step: np.ndarray
    last: np.ndarray
    last_step: np.ndarray


def base_shift(steps) -> int:
    """Level-0 shift for a new series, from the spacing of its first steps (an array or
    a list)."""
    if len(steps) < 2:   # no spacing to go by (and no numpy call for each of many new series)
        return BASE_POINTS_BITS
    distinct = np.unique(np.asarray(steps, np.int64))
    stride = int(np.median(np.diff(distinct))) if len(distinct) > 1 else 1
    stride_bits = max(0, (max(stride, 1) - 1).bit_length())
    return min(BASE_POINTS_BITS + stride_bits, MAX_BASE_SHIFT)


def level_shift(base: int, level: int) -> int:
    return base + LEVEL_BITS * level


def empty_groups(n: int) -> tuple[np.ndarray, ...]:
    """The 9 aggregate arrays of ``n`` empty groups (as rollupkernels._empty makes them)."""
    return (np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, np.inf), np.full(n, -np.inf),
            np.zeros(n, np.float64), np.full(n, np.nan), np.zeros(n, np.int64), np.full(n, np.nan),
            np.zeros(n, np.int64))


def _kernels(items: int):
    """engine.rollupkernels, or its numpy twin engine.smallrollup (the same results)
    while engine.twins says numpy pays: ``items`` points or groups to fold."""
    if twins.use_numpy(CALL_WORDS + POINT_WORDS * items):
        from . import smallrollup

        return smallrollup
    from . import rollupkernels

    return rollupkernels


def group_points(steps: np.ndarray, values: np.ndarray, shift: int) -> Groups:
    """Aggregate points (in write order) into the groups of one level."""
    return Groups(*_kernels(len(steps))._group_points(steps, values, np.int64(shift)))


def coarsen(groups: Groups, bits: int = LEVEL_BITS) -> Groups:
    """The groups of the next level up, from the groups of this one."""
    return Groups(*_kernels(len(groups.gid))._coarsen(*groups, np.int64(bits)))


def all_levels(steps: np.ndarray, values: np.ndarray, shift: int) -> list[Groups]:
    """The groups of every level of points (in write order), level 0 first."""
    levels = [group_points(steps, values, shift)]
    for _ in range(1, LEVELS):
        levels.append(coarsen(levels[-1], LEVEL_BITS))
    return levels


def page_arrays(page: bytes | None) -> tuple[np.ndarray, ...]:
    """A page's 9 arrays, writable (a copy); an empty page when ``page`` is None."""
    if page is None:
        return empty_groups(PAGE_GROUPS)
    page = _decompress(page)
    if len(page) != PAGE_BYTES:
        raise CorruptionError("index", 0, f"rollup page has {len(page)} bytes, expected {PAGE_BYTES}")
    raw = np.frombuffer(page, np.uint8).copy()
    size = PAGE_GROUPS * 8
    return tuple(raw[i * size:(i + 1) * size].view(t) for i, t in enumerate(_FIELD_TYPES))


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (making one per page costs more than the page)."""
    found = getattr(_local, "zstd", None)
    if found is None:
        found = _local.zstd = zstandard.ZstdDecompressor()
    return found


def _decompress(page: bytes) -> bytes:
    try:
        return _decompressor().decompress(page, max_output_size=PAGE_BYTES)
    except zstandard.ZstdError as exc:
        raise CorruptionError("index", 0, f"rollup page does not decompress: {exc}") from None


def page_bytes(arrays: tuple[np.ndarray, ...]) -> bytes:
    raw = b"".join(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays)
    return zstandard.compress(raw, PAGE_ZSTD_LEVEL)


def merge_into_pages(groups: Groups, read_page, write_page) -> None:
    """Fold ``groups`` (later writes) into their pages: read_page(page_no) -> bytes | None,
    write_page(page_no, bytes)."""
    fold_groups = _kernels(len(groups.gid)).fold_groups   # distinct group ids: the twin folds them
    pages = groups.gid // PAGE_GROUPS
    bounds = np.flatnonzero(np.diff(pages)) + 1
    for lo, hi in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(pages)]))):
        page_no = int(pages[lo])
        arrays = page_arrays(read_page(page_no))
        slots = groups.gid[lo:hi] - page_no * PAGE_GROUPS
        fold_groups(slots, *(field[lo:hi] for field in groups[1:]), *arrays)
        write_page(page_no, page_bytes(arrays))


def read_groups(pages: list[tuple[int, bytes]]) -> Groups:
    """Non-empty groups of the given (page_no, page bytes), ascending: all pages are
    decompressed into one buffer and split into fields with array views, not page by page."""
    if not pages:
        return Groups(np.empty(0, np.int64), *empty_groups(0))
    raw = b"".join(_decompress(page) for _, page in pages)
    if len(raw) != len(pages) * PAGE_BYTES:
        raise CorruptionError("index", 0, "a rollup page has the wrong size")
    table = np.frombuffer(raw, np.uint8).reshape(len(pages), FIELDS, PAGE_GROUPS * 8)
    ints, floats = table.view("<i8"), table.view("<f8")
    gid = (np.array([no for no, _ in pages], np.int64)[:, None] * PAGE_GROUPS + np.arange(PAGE_GROUPS)).ravel()
    keep = ints[:, 0, :].ravel() > 0
    fields = [(ints if t == np.int64 else floats)[:, i, :].ravel()[keep] for i, t in enumerate(_FIELD_TYPES)]
    return Groups(gid[keep], *fields)
