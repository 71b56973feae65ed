"""M4 downsampling: for each of B buckets over the step range, the real points holding
its first, minimum, maximum and last value (Jugel et al., "M4: A Visualization-Oriented
Time Series Data Aggregation", VLDB 2014), read in a time that does not grow with the
length of the series.

Buckets: [lo, hi) is the range of the points (stored and not yet flushed) cut to
[start, stop); with span = hi - lo and B = min(buckets, span), bucket j covers
[lo + j * span // B, lo + (j + 1) * span // B). Each bucket that holds points gives its
first point (lowest step, earliest written on ties), its minimum and its maximum (NaN
ignored, inf counted, ties to the lowest step and then the earliest written: the rules
of the rollups), its last point (highest step, latest written) and its first NaN, so
that NaN shows. Where those are five different points the first gives way (the last
stays: the latest value of a live run), so a read returns at most 4 * B points, sorted
by step, ties in write order, each once.

Rollups keep each group's min and max but not where they lie. Each bucket is covered
by whole rollup groups, as coarse as fit (downsample.decompose), and by pieces of the
level-0 groups that its edges cut. The whole group holding the bucket's min (lowest
min, lowest steps on ties) is followed down, level by level, to the level-0 group
holding it, and so are those of its max, its first NaN and its first and last points.
Only the blocks over those level-0 groups and over the cut ones are decoded, about
3 * B blocks at any length. Where buckets are narrower than two level-0 groups, or the
series keeps no rollups (fewer than index.ROLLUP_MIN_POINTS points), the range is
decoded whole; so are the points this store logged and has not flushed (they are few).

Each chosen point is the least of an order over all the points of its bucket, so any
subset of the points that holds them gives the same choice: the decoded blocks are
scanned whole, in write order, by one pass (``_fold``, a numba kernel, or its numpy
twin for small work while engine.twins says so), with no sort.
"""

from __future__ import annotations

import numpy as np

from ..engine import twins
from ..engine.errors import CorruptionError
from ..engine.rollup import LEVEL_BITS, LEVELS, PAGE_GROUPS, level_shift
from . import downsample
from .read import Points
from .reader import SeriesReader

INT64_MAX = (1 << 63) - 1
FIRST, MIN, MAX, LAST, NAN = range(5)   # the rows of a role table: the points a bucket may give
ROLES = 5
CALL_WORDS = 10_000   # the numpy twin's extra cost of a call, in engine.twins words (a dozen numpy calls)
POINT_WORDS = 20      # ... and of a point (a stable sort and a few passes)


def m4_points(reader: SeriesReader, start: int | None, stop: int | None, buckets: int) -> Points:
    """The M4 points of ``buckets`` buckets over start <= step < stop (module docstring)."""
    bounds = reader.step_bounds()
    if bounds is None:
        return Points.empty()
    lo = bounds[0] if start is None else max(start, bounds[0])
    hi = bounds[1] if stop is None else min(stop, bounds[1])
    if lo >= hi:
        return Points.empty()
    edges = bucket_edges(lo, hi, buckets)
    top = None if hi > INT64_MAX else hi   # a step range may end at 2**63, past int64
    base = reader.entry.rollup_shift if reader.entry is not None else None
    if base is not None and hi - lo >= (len(edges) - 1) << (base + 1):
        regions = _regions(reader, edges)
        stored = reader.stored_points_near(regions, lo, top)
    else:
        regions, stored = [(lo, hi)], reader.stored_points(lo, top)
    recent = reader.recent_points(lo, top)
    return pick(lo, edges, [stored, *recent], [regions] + [[(lo, hi)]] * len(recent))


def bucket_edges(lo: int, hi: int, buckets: int) -> list[int]:
    """The B + 1 edges of the buckets over [lo, hi), Python ints (hi may be 2**63)."""
    count = min(buckets, hi - lo)
    span = hi - lo
    return [lo + j * span // count for j in range(count + 1)]


# -- choosing the points ---------------------------------------------------------------


def pick(lo: int, edges: list[int], parts: list[Points], regions: list[list[tuple[int, int]]]) -> Points:
    """The M4 points in the buckets ``edges`` of ``parts`` (in write order), of whose
    points those in ``regions[k]`` ([lo, hi) step ranges, sorted, disjoint, within the
    edges) count for part k: they must include every bucket's chosen points."""
    offsets = np.array([e - lo for e in edges[:-1]], np.uint64)   # each below 2**64
    windows = [(np.array([a for a, _ in r], np.int64), np.array([b - 1 for _, b in r], np.int64)) for r in regions]
    small = twins.use_numpy(CALL_WORDS + POINT_WORDS * sum(len(p) for p in parts))
    return _gather(parts, _within_four(fold(parts, windows, lo, offsets, numpy=small)))


def fold(parts: list[Points], windows: list[tuple], lo: int, offsets: np.ndarray, numpy: bool = False) -> np.ndarray:
    """The role table of the buckets starting ``offsets`` (uint64, ascending, the first
    0) after lo: for each role (FIRST, MIN, MAX, LAST, NAN) and bucket, the write-order
    position in ``parts`` of the point holding it, -1 for none. Only the points of part
    k with a step in one of its windows count: ``windows[k]`` = (firsts, lasts), int64,
    inclusive, sorted, disjoint, at or after lo. numpy=True: the numpy twin, the same table."""
    roles = np.full((ROLES, len(offsets)), -1, np.int64)
    if numpy:
        _fold_numpy(parts, windows, lo, offsets, roles)
        return roles
    steps = np.empty((ROLES, len(offsets)), np.int64)
    values = np.empty((ROLES, len(offsets)), np.float64)
    kernel, base = _kernel(), 0
    for part, (firsts, lasts) in zip(parts, windows):
        if len(firsts):
            kernel(part.steps, part.steps.view(np.uint64), part.values, np.int64(base), firsts, lasts,
                   np.uint64(lo % (1 << 64)), offsets, roles, steps, values)
        base += len(part)
    return roles


def _within_four(roles: np.ndarray) -> np.ndarray:
    """The distinct chosen positions, ascending; a bucket whose first NaN would be its
    fifth point drops its first point."""
    ordered = np.sort(roles, axis=0)
    distinct = (ordered >= 0) & np.vstack([np.ones((1, roles.shape[1]), bool), ordered[1:] != ordered[:-1]])
    five = distinct.sum(axis=0) == ROLES
    roles = roles.copy()
    roles[FIRST, five] = -1
    return np.unique(roles[roles >= 0])


def _gather(parts: list[Points], positions: np.ndarray) -> Points:
    """The points at write-order ``positions`` of parts, sorted by step, ties in write order."""
    ends = np.cumsum([len(p) for p in parts])
    which = np.searchsorted(ends, positions, side="right")
    steps, times, values = [], [], []
    for k, part in enumerate(parts):
        local = positions[which == k] - (ends[k] - len(part))
        steps.append(part.steps[local]), times.append(part.times[local]), values.append(part.values[local])
    steps, times, values = np.concatenate(steps), np.concatenate(times), np.concatenate(values)
    order = np.argsort(steps, kind="stable")   # positions ascend: ties stay in write order
    return Points(steps[order], times[order], values[order])


def _fold_numpy(parts: list[Points], windows: list[tuple], lo: int, offsets: np.ndarray, roles: np.ndarray) -> None:
    """``fold`` in numpy: the points that count, stably sorted by step, then each bucket's run."""
    steps = np.concatenate([np.empty(0, np.int64)] + [p.steps for p in parts])
    values = np.concatenate([np.empty(0)] + [p.values for p in parts])
    counts = np.concatenate([np.zeros(0, bool)] + [_in_windows(p.steps, *w) for p, w in zip(parts, windows)])
    inside = np.flatnonzero(counts)
    order = inside[np.argsort(steps[inside], kind="stable")]
    if not len(order):
        return
    keys = np.searchsorted(offsets, steps[order].view(np.uint64) - np.uint64(lo % (1 << 64)), side="right") - 1
    held, starts = np.unique(keys, return_index=True)
    roles[FIRST, held] = order[starts]
    roles[LAST, held] = order[np.r_[starts[1:], len(order)] - 1]
    sorted_values = values[order]
    number = ~np.isnan(sorted_values)
    for role, fill, reduce in ((MIN, np.inf, np.minimum), (MAX, -np.inf, np.maximum)):
        filled = np.where(number, sorted_values, fill)
        extreme = reduce.reduceat(filled, starts)
        _first_where(roles[role], keys, order, number & (filled == extreme[np.searchsorted(held, keys)]))
    _first_where(roles[NAN], keys, order, ~number)


def _in_windows(steps: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    window = np.searchsorted(firsts, steps, side="right") - 1
    return (window >= 0) & (steps <= lasts[np.maximum(window, 0)]) if len(firsts) else np.zeros(len(steps), bool)


def _first_where(row: np.ndarray, keys: np.ndarray, order: np.ndarray, hit: np.ndarray) -> None:
    at = np.flatnonzero(hit)
    held, first = np.unique(keys[at], return_index=True)
    row[held] = order[at[first]]


def _fold_python(steps, usteps, values, base, firsts, lasts, ulo, offsets, roles, role_steps, role_values):
    """Fold the points of one part (in write order, numbered from ``base``) whose step
    lies in a window [firsts[w], lasts[w]] into the role table of the buckets starting
    at ``offsets`` after lo (``fold``), keeping for each role the position, step and
    value of the point that wins it so far. The numba kernel is made of this function."""
    count, windows = offsets.shape[0], firsts.shape[0]
    j, w = 0, 0
    for i in range(steps.shape[0]):
        s = steps[i]
        if s < firsts[w] or s > lasts[w]:
            if w + 1 < windows and s > lasts[w] and s < firsts[w + 1]:
                continue   # between this window and the next: steps mostly ascend
            if s < firsts[0]:
                continue
            a, b = 0, windows - 1   # the last window starting at or before s
            while a < b:
                m = (a + b + 1) // 2
                if firsts[m] <= s:
                    a = m
                else:
                    b = m - 1
            w = a
            if s > lasts[w]:
                continue
        off = usteps[i] - ulo
        if off < offsets[j] or (j + 1 < count and off >= offsets[j + 1]):
            a, b = 0, count - 1   # the last bucket starting at or before off
            while a < b:
                m = (a + b + 1) // 2
                if offsets[m] <= off:
                    a = m
                else:
                    b = m - 1
            j = a
        p = base + i
        v = values[i]
        if roles[0, j] < 0 or s < role_steps[0, j]:
            roles[0, j], role_steps[0, j], role_values[0, j] = p, s, v
        if roles[3, j] < 0 or s >= role_steps[3, j]:
            roles[3, j], role_steps[3, j], role_values[3, j] = p, s, v
        if np.isnan(v):
            if roles[4, j] < 0 or s < role_steps[4, j]:
                roles[4, j], role_steps[4, j], role_values[4, j] = p, s, v
            continue
        if roles[1, j] < 0 or v < role_values[1, j] or (v == role_values[1, j] and s < role_steps[1, j]):
            roles[1, j], role_steps[1, j], role_values[1, j] = p, s, v
        if roles[2, j] < 0 or v > role_values[2, j] or (v == role_values[2, j] and s < role_steps[2, j]):
            roles[2, j], role_steps[2, j], role_values[2, j] = p, s, v


_compiled = []


def _kernel():
    """``_fold_python`` compiled by numba, made on first use: importing this module
    imports no numba, so a short script that reads a small series needs none."""
    if not _compiled:
        import numba as nb

        from ..engine.jit import announce

        _compiled.append(announce(nb.njit(cache=True, nogil=True)(_fold_python), "M4"))
    return _compiled[0]


# -- the level-0 groups to decode ------------------------------------------------------


def _regions(reader: SeriesReader, edges: list[int]) -> list[tuple[int, int]]:
    """Step ranges whose blocks hold every point that M4 may choose in the buckets
    ``edges``: the level-0 groups the edges cut, and those that the descent finds."""
    base = reader.entry.rollup_shift
    wholes, pieces = _cover(edges, base)
    fetched = {level: reader.rollup_groups(level, _pages(ranges)) for level, ranges in wholes.items() if level}
    cut = _cut_groups(pieces, base)
    level0 = fetched[0] = reader.rollup_groups(0, np.union1d(_pages(wholes.get(0, [])), np.unique(cut // PAGE_GROUPS)))
    units = _units(fetched, wholes, base)
    known_first, known_last = _known_ends(pieces, level0, edges)
    found = _descend(reader, *_targets(units, known_first, known_last))
    held = np.isin(cut, level0.gid)
    lo, hi = edges[0], edges[-1]
    ranges = [(max(lo, g << base), min(hi, (g + 1) << base)) for g in cut[held].tolist()]
    ranges += [(g << base, (g + 1) << base) for g in found.tolist()]
    return _merge(ranges)


def _cover(edges: list[int], base: int):
    """Each bucket as whole groups ({level: [(first gid, end gid, bucket)]}, the coarsest
    that fit, as downsample.decompose covers a range) and raw pieces ([(lo, hi, bucket)])
    of the level-0 groups its edges cut."""
    shifts = [level_shift(base, level) for level in range(LEVELS)]
    wholes, pieces = {}, []
    for j in range(len(edges) - 1):
        a, b = edges[j], edges[j + 1]
        inner = None   # the whole groups of the level above, in gids of this level
        for level in range(LEVELS - 1, -1, -1):
            first, end = -(-a >> shifts[level]), b >> shifts[level]
            if first >= end:   # none at this level, so none above either
                continue
            spans = ((first, end),) if inner is None else ((first, inner[0]), (inner[1], end))
            spans = [(f, e, j) for f, e in spans if f < e]
            if spans:
                wholes.setdefault(level, []).extend(spans)
            inner = (first << LEVEL_BITS, end << LEVEL_BITS)
        first, end = -(-a >> shifts[0]), b >> shifts[0]
        cuts = ((a, b),) if first >= end else ((a, first << shifts[0]), (end << shifts[0], b))
        pieces += [(x, y, j) for x, y in cuts if x < y]
    return wholes, pieces


def _pages(ranges: list[tuple[int, int, int]]) -> np.ndarray:
    """The rollup pages that hold the groups of ``ranges``, ascending."""
    pages = set()
    for first, end, _ in ranges:
        pages.update(range(first // PAGE_GROUPS, (end - 1) // PAGE_GROUPS + 1))
    return np.array(sorted(pages), np.int64)


def _cut_groups(pieces: list[tuple[int, int, int]], base: int) -> np.ndarray:
    """The level-0 groups that the raw pieces lie in, ascending."""
    gids = set()
    for a, b, _ in pieces:
        gids.update(range(a >> base, ((b - 1) >> base) + 1))
    return np.array(sorted(gids), np.int64)


def _units(fetched: dict, wholes: dict, base: int) -> dict:
    """The stored whole groups of every bucket, all levels together, ascending by their
    first step: arrays level, gid, bucket, start and the aggregates they need."""
    columns = {name: [] for name in ("level", "gid", "bucket", "start", "count", "nan", "min", "max")}
    for level, ranges in wholes.items():
        found, spans = fetched[level], np.array(sorted(ranges), np.int64)
        at = np.searchsorted(spans[:, 0], found.gid, side="right") - 1
        inside = (at >= 0) & (found.gid < spans[np.maximum(at, 0), 1])
        gid = found.gid[inside]
        columns["level"].append(np.full(len(gid), level, np.int64))
        columns["gid"].append(gid)
        columns["bucket"].append(spans[at[inside], 2])
        columns["start"].append(gid << level_shift(base, level))
        for name, field in (("count", found.count), ("nan", found.nan_count), ("min", found.min),
                            ("max", found.max)):
            columns[name].append(field[inside])
    units = {name: np.concatenate(parts) if parts else np.empty(0, np.float64 if name in ("min", "max") else np.int64)
             for name, parts in columns.items()}
    order = np.argsort(units["start"], kind="stable")
    return {name: column[order] for name, column in units.items()}


def _known_ends(pieces, level0, edges: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Buckets whose piece at the start (end) surely holds a point, as the first or last
    step of the group it cuts lies in it: their first (last) point is decoded with
    that group, and no whole group needs following down for it."""
    count = len(edges) - 1
    known_first, known_last = np.zeros(count, bool), np.zeros(count, bool)
    steps = np.sort(np.concatenate([level0.first_step, level0.last_step]))
    if not pieces or not len(steps):
        return known_first, known_last
    firsts = np.array([a for a, _, _ in pieces], np.int64)
    lasts = np.array([b - 1 for _, b, _ in pieces], np.int64)   # b may be 2**63, b - 1 is not
    bucket = np.array([j for _, _, j in pieces], np.int64)
    at = np.minimum(np.searchsorted(steps, firsts), len(steps) - 1)
    holds = (np.searchsorted(steps, firsts) < len(steps)) & (steps[at] <= lasts)
    starts = firsts == np.array(edges[:-1], np.int64)[bucket]
    ends = lasts == np.array([e - 1 for e in edges[1:]], np.int64)[bucket]
    known_first[bucket[holds & starts]] = True
    known_last[bucket[holds & ends]] = True
    return known_first, known_last


def _targets(units: dict, known_first: np.ndarray, known_last: np.ndarray):
    """(role, level, gid) of the whole groups to follow down: in each bucket, the first
    and the last group (unless a piece surely holds that point), the one with the
    lowest min and the one with the highest max (lowest steps on ties: the point
    chosen is the first in step order), and the first holding a NaN."""
    bucket, n = units["bucket"], len(units["bucket"])
    if not n:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    held, firsts = np.unique(bucket, return_index=True)
    lasts = np.r_[firsts[1:], n] - 1
    chosen = [(FIRST, firsts[~known_first[held]]), (LAST, lasts[~known_last[held]])]
    valid = np.flatnonzero(units["count"] > units["nan"])
    for role, key in ((MIN, units["min"]), (MAX, -units["max"])):
        order = valid[np.lexsort((units["start"][valid], key[valid], bucket[valid]))]
        chosen.append((role, order[np.unique(bucket[order], return_index=True)[1]]))
    nans = np.flatnonzero(units["nan"] > 0)
    chosen.append((NAN, nans[np.unique(bucket[nans], return_index=True)[1]]))
    at = np.concatenate([i for _, i in chosen])
    role = np.concatenate([np.full(len(i), r, np.int64) for r, i in chosen])
    return role, units["level"][at], units["gid"][at]


def _descend(reader: SeriesReader, role: np.ndarray, level: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """The level-0 groups that the targets lead to, one level a round for all of them:
    each round reads the pages of the children of that level's targets, once."""
    level, gid = level.copy(), gid.copy()
    for up in range(LEVELS - 1, 0, -1):
        at = np.flatnonzero(level == up)
        if not len(at):
            continue
        first = (gid[at] << LEVEL_BITS) // PAGE_GROUPS
        last = (((gid[at] + 1) << LEVEL_BITS) - 1) // PAGE_GROUPS
        children = reader.rollup_groups(up - 1, np.union1d(first, last))
        gid[at] = _children(children, role[at], gid[at])
        level[at] = up - 1
    return np.unique(gid)


def _children(children, role: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """For each parent group, the child that holds its point of ``role``: the first or
    last child, the lowest min or highest max (lowest gid on ties), the first with a NaN."""
    out = np.empty(len(parents), np.int64)
    owner_gid = children.gid >> LEVEL_BITS
    for r in range(ROLES):
        sel = np.flatnonzero(role == r)   # distinct parents: one group serves a role in one bucket
        if not len(sel):
            continue
        order = np.argsort(parents[sel])
        mine = parents[sel][order]
        owner = np.minimum(np.searchsorted(mine, owner_gid), len(mine) - 1)
        kids = np.flatnonzero(mine[owner] == owner_gid)   # ascending gid
        if r in (MIN, MAX):
            kids = kids[children.count[kids] > children.nan_count[kids]]
            key = children.min[kids] if r == MIN else -children.max[kids]
            kids = kids[np.lexsort((children.gid[kids], key, owner[kids]))]
        elif r == NAN:
            kids = kids[children.nan_count[kids] > 0]
        elif r == LAST:
            kids = kids[::-1]
        found, first = np.unique(owner[kids], return_index=True)
        if len(found) != len(mine):
            raise CorruptionError("index", 0, "a rollup group's children do not hold its aggregates")
        out[sel[order]] = children.gid[kids[first]]
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping or touching [lo, hi) ranges joined."""
    merged = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
