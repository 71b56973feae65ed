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

Rollups keep each group's min and max but not where they lie, and no times, so the
chosen points come from decoded blocks, as few as can be:

1. Zones: the group each bucket edge cuts is decoded whole: its level-1 group where one
   block holds that (about 8192 points; the block holds the level-0 group anyway),
   else its level-0 group. The zones give each bucket's points next to its edges.
2. The rest of each bucket is whole rollup groups, as coarse as fit
   (downsample.decompose). Where the zones do not already beat them, the group holding
   the bucket's min (lowest min, lowest steps on ties), its max, its first NaN, and its
   first and last points are followed down the levels, one round a level for all
   buckets, to a level-1 group in one block or a level-0 group, whose blocks are decoded.

That decodes about one block an edge and a few a bucket, at any length. Where buckets
are narrower than two level-0 groups, or the series keeps no rollups (fewer than
index.ROLLUP_MIN_POINTS points), the range is decoded whole; so are the points this
store logged and has not flushed (they are few).

Each chosen point is the least of an order over the points of its bucket, so any set of
points that holds them gives the same choice: the decoded blocks are scanned, in write
order, where their steps lie in the zones and then in the groups above (``fold``: a
numba kernel, or its numpy twin for small work while engine.twins says so), with no
sort. Zones and groups share no step, so the second scan folds into the tables of the
first without a tie between them to settle by write order.

Cost at 80 buckets, the standard curve of benchmarks/test_m4.py: about 110 blocks of
8192 points decoded at 10 M points (one an edge, and where the zones do not hold a
bucket's min or max), 98 of 123 at 1 M; decoding them is about 70 % of the time.
"""

from __future__ import annotations

import numpy as np

from ..engine import twins
from ..engine.errors import CorruptionError
from ..engine.rollup import LEVEL_BITS, LEVELS, PAGE_GROUPS, level_shift
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
    starts, whole = np.array(edges[:-1], np.int64), _spans([(lo, hi)])
    top = None if hi > INT64_MAX else hi   # a step range may end at 2**63, past int64
    recent = reader.recent_points(lo, top)   # written after every stored point
    base = reader.entry.rollup_shift if reader.entry is not None else None
    if base is not None and hi - lo >= (len(edges) - 1) << (base + 1):
        sources, tables, blocks = _from_rollups(reader, edges, starts)
        fold(recent, [whole] * len(recent), starts, into=tables, base=sum(len(p) for p in sources))
        sources += recent
    else:
        sources, blocks = [reader.stored_points(lo, top), *recent], None
        small = twins.use_numpy(CALL_WORDS + POINT_WORDS * sum(len(p) for p in sources))
        tables = fold(sources, [whole] * len(sources), starts, numpy=small)
    return _gather(sources, _within_four(tables[0]), blocks)


def bucket_edges(lo: int, hi: int, buckets: int) -> list[int]:
    """The B + 1 edges of the buckets over [lo, hi), Python ints (hi may be 2**63)."""
    count = min(buckets, hi - lo)
    span = hi - lo
    return [lo + j * span // count for j in range(count + 1)]


# -- choosing the points ---------------------------------------------------------------


def _spans(ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) step ranges (sorted, disjoint) as int64 (firsts, lasts), inclusive (hi may be 2**63)."""
    return np.array([a for a, _ in ranges], np.int64), np.array([b - 1 for _, b in ranges], np.int64)


def fold(parts: list[Points], spans: list[tuple], starts: np.ndarray, numpy: bool = False, into=None,
         base: int = 0, bases: list[int] | None = None) -> tuple:
    """The role tables of the buckets starting at steps ``starts`` (ascending): for each
    role (FIRST, MIN, MAX, LAST, NAN) and bucket, the write-order position of the point
    holding it (-1 for none), its step and its value, three (5, B) arrays. The points of
    parts[k], in write order, are numbered from bases[k] (default: one after another
    from ``base``) and count where their step lies in one of spans[k] (firsts, lasts:
    inclusive, sorted, disjoint, at or after starts[0]). ``into``: tables that earlier
    writes filled, to fold later ones into. numpy=True: the numpy twin, the same tables
    (for new tables of parts numbered from 0 only)."""
    if bases is None:
        bases = (base + np.cumsum([0] + [len(p) for p in parts[:-1]])).tolist()
    if into is None:
        into = (np.full((ROLES, len(starts)), -1, np.int64), np.zeros((ROLES, len(starts)), np.int64),
                np.full((ROLES, len(starts)), np.nan))
    roles, steps, values = into
    if numpy:
        _fold_numpy(parts, spans, starts, roles)
        _role_points(parts, roles, steps, values)
        return into
    kernel = _kernel() if parts else None
    for part, (firsts, lasts), at in zip(parts, spans, bases):
        if len(firsts) and len(part):
            kernel(part.steps, part.values, np.int64(at), firsts, lasts, starts, roles, steps, values)
    return into


def _within_four(roles: np.ndarray) -> np.ndarray:
    """The distinct chosen positions, ascending; a bucket whose first NaN would be its
    fifth point drops its first point."""
    ordered = np.sort(roles, axis=0)
    distinct = (ordered >= 0) & np.vstack([np.ones((1, roles.shape[1]), bool), ordered[1:] != ordered[:-1]])
    five = distinct.sum(axis=0) == ROLES
    roles = roles.copy()
    roles[FIRST, five] = -1
    return np.unique(roles[roles >= 0])


def _locate(parts: list[Points], positions: np.ndarray):
    """(part, index in it) of write-order ``positions`` over parts, grouped by part."""
    ends = np.cumsum([len(p) for p in parts])
    which = np.searchsorted(ends, positions, side="right")
    for k in np.unique(which).tolist():
        at = np.flatnonzero(which == k)
        yield parts[k], at, positions[at] - (ends[k] - len(parts[k]))


def _gather(parts: list[Points], positions: np.ndarray, blocks: tuple | None = None) -> Points:
    """The points at ``positions`` of parts, sorted by step, ties in write order: the
    order of the positions, or where ``blocks`` (first position, seq: the decoded blocks,
    by first position) says, block by block in seq order; positions past the blocks
    come later, in their order."""
    steps, times, values = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]
    for part, _, local in _locate(parts, positions):   # ascending positions
        steps.append(part.steps[local]), times.append(part.times[local]), values.append(part.values[local])
    steps, times, values = np.concatenate(steps), np.concatenate(times), np.concatenate(values)
    if blocks is None or not len(blocks[0]):
        order = np.argsort(steps, kind="stable")
    else:
        firsts, seqs, end = blocks
        at = np.searchsorted(firsts, positions, side="right") - 1
        seq = np.where(positions < end, seqs[np.maximum(at, 0)], np.iinfo(np.int64).max)
        order = np.lexsort((positions, seq, steps))
    return Points(steps[order], times[order], values[order])


def _role_points(parts: list[Points], roles: np.ndarray, steps: np.ndarray, values: np.ndarray) -> None:
    """Fill the step and value tables of a role table from the points it names."""
    rows, cols = np.nonzero(roles >= 0)
    for part, at, local in _locate(parts, roles[rows, cols]):
        steps[rows[at], cols[at]], values[rows[at], cols[at]] = part.steps[local], part.values[local]


def _fold_numpy(parts: list[Points], spans: list[tuple], starts: np.ndarray, roles: np.ndarray) -> None:
    """``fold`` in numpy: the points that count, stably sorted by step, then each bucket's run."""
    steps = np.concatenate([np.empty(0, np.int64)] + [p.steps for p in parts])
    values = np.concatenate([np.empty(0)] + [p.values for p in parts])
    counts = np.concatenate([np.zeros(0, bool)] + [in_spans(p.steps, *w) for p, w in zip(parts, spans)])
    inside = np.flatnonzero(counts)
    order = inside[np.argsort(steps[inside], kind="stable")]
    if not len(order):
        return
    keys = np.searchsorted(starts, steps[order], side="right") - 1
    held, first = np.unique(keys, return_index=True)
    roles[FIRST, held] = order[first]
    roles[LAST, held] = order[np.r_[first[1:], len(order)] - 1]
    sorted_values = values[order]
    number = ~np.isnan(sorted_values)
    for role, fill, reduce in ((MIN, np.inf, np.minimum), (MAX, -np.inf, np.maximum)):
        filled = np.where(number, sorted_values, fill)
        extreme = reduce.reduceat(filled, first)
        _first_where(roles[role], keys, order, number & (filled == extreme[np.searchsorted(held, keys)]))
    _first_where(roles[NAN], keys, order, ~number)


def in_spans(steps: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """Whether each step lies in one of the spans [firsts[i], lasts[i]] (sorted, disjoint)."""
    if not len(firsts):
        return np.zeros(len(steps), bool)
    at = np.searchsorted(firsts, steps, side="right") - 1
    return (at >= 0) & (steps <= lasts[np.maximum(at, 0)])


def _first_where(row: np.ndarray, keys: np.ndarray, order: np.ndarray, hit: np.ndarray) -> None:
    at = np.flatnonzero(hit)
    held, first = np.unique(keys[at], return_index=True)
    row[held] = order[at[first]]


def _fold_python(steps, values, base, firsts, lasts, starts, roles, role_steps, role_values):
    """Fold the points of one part (in write order, numbered from ``base``) whose step
    lies in a span [firsts[w], lasts[w]] into the role table of the buckets starting at
    ``starts`` (``fold``). A run of points in one span and one bucket (steps mostly
    ascend) is folded with the bucket's winners held in locals. The numba kernel is
    made of this function (``_kernel``)."""
    n, count, spans = steps.shape[0], starts.shape[0], firsts.shape[0]
    i = 0
    while i < n:
        s = steps[i]
        a, b = 0, spans   # w: the last span starting at or before s
        while a < b:
            m = (a + b) // 2
            if firsts[m] <= s:
                a = m + 1
            else:
                b = m
        w = a - 1
        if w < 0 or s > lasts[w]:   # in the gap before span w + 1: skip the run of points there
            i += 1
            while i < n and (w < 0 or steps[i] > lasts[w]) and (w + 1 == spans or steps[i] < firsts[w + 1]):
                i += 1
            continue
        a, b = 0, count   # j: the last bucket starting at or before s (starts[0] <= firsts[0])
        while a < b:
            m = (a + b) // 2
            if starts[m] <= s:
                a = m + 1
            else:
                b = m
        j = a - 1
        bottom, top = max(firsts[w], starts[j]), lasts[w]
        if j + 1 < count and starts[j + 1] - 1 < top:
            top = starts[j + 1] - 1
        f_p, f_s, f_v = roles[0, j], role_steps[0, j], role_values[0, j]
        mn_p, mn_s, mn_v = roles[1, j], role_steps[1, j], role_values[1, j]
        mx_p, mx_s, mx_v = roles[2, j], role_steps[2, j], role_values[2, j]
        l_p, l_s, l_v = roles[3, j], role_steps[3, j], role_values[3, j]
        nan_p, nan_s, nan_v = roles[4, j], role_steps[4, j], role_values[4, j]
        while i < n:
            s = steps[i]
            if s < bottom or s > top:
                break
            v = values[i]
            p = base + i
            if f_p < 0 or s < f_s:
                f_p, f_s, f_v = p, s, v
            if l_p < 0 or s >= l_s:
                l_p, l_s, l_v = p, s, v
            if np.isnan(v):
                if nan_p < 0 or s < nan_s:
                    nan_p, nan_s, nan_v = p, s, v
            else:
                if mn_p < 0 or v < mn_v or (v == mn_v and s < mn_s):
                    mn_p, mn_s, mn_v = p, s, v
                if mx_p < 0 or v > mx_v or (v == mx_v and s < mx_s):
                    mx_p, mx_s, mx_v = p, s, v
            i += 1
        roles[0, j], role_steps[0, j], role_values[0, j] = f_p, f_s, f_v
        roles[1, j], role_steps[1, j], role_values[1, j] = mn_p, mn_s, mn_v
        roles[2, j], role_steps[2, j], role_values[2, j] = mx_p, mx_s, mx_v
        roles[3, j], role_steps[3, j], role_values[3, j] = l_p, l_s, l_v
        roles[4, j], role_steps[4, j], role_values[4, j] = nan_p, nan_s, nan_v


_compiled = []


def _kernel():
    """``_fold_python`` compiled by numba, made on first use: importing this module
    imports no numba, so a short script that reads a small series needs none."""
    if not _compiled:
        import numba as nb

        from ..engine.jit import announce

        _compiled.append(announce(nb.njit(cache=True, nogil=True)(_fold_python), "M4"))
    return _compiled[0]


# -- the blocks to decode -------------------------------------------------------------


def _from_rollups(reader: SeriesReader, edges: list[int], starts: np.ndarray) -> tuple[list[Points], tuple, tuple]:
    """The decoded stored points (the zones' blocks, then the others), the role tables
    (``fold``) of their points that count (in the zones, then in the groups that the
    rollups lead to), and where their blocks lie in them (``_gather``)."""
    base = reader.entry.rollup_shift
    blocks = _Blocks(reader, base)
    zones, zone_refs = _zones(blocks, edges, base)
    near_points, near_blocks = _decode(reader, zone_refs, 0)
    tables = fold([near_points], [_spans(zones)], starts)
    wholes, raw = _cover(edges, zones, base)
    fetched = {level: reader.rollup_groups(level, _pages(ranges)) for level, ranges in wholes.items()}
    alone, groups = _descend(reader, blocks, *_targets(_units(fetched, wholes, base), tables))
    level0 = [(g << base, (g + 1) << base) for g in groups.tolist()]
    refs = {ref.seq: ref for a, b in alone + level0 for ref in blocks.within(a, b)}
    refs.update((ref.seq, ref) for a, b in raw for ref in reader.blocks_in(a, b))
    decoded = {ref.seq for ref in zone_refs}
    far_points, far_blocks = _decode(reader, [r for seq, r in refs.items() if seq not in decoded], len(near_points))
    # the groups share no step with the zones: their points fold into the zones' tables
    # in write order across both batches, and no tie between the two needs write order
    parts, bases = _runs([near_points, far_points], near_blocks + far_blocks)
    fold(parts, [_spans(_merge(alone + level0 + raw))] * len(parts), starts, into=tables, bases=bases)
    numbered = sorted((first, seq) for seq, first, _ in near_blocks + far_blocks)
    blocks = (np.array([f for f, _ in numbered], np.int64), np.array([q for _, q in numbered], np.int64),
              len(near_points) + len(far_points))
    return [near_points, far_points], tables, blocks


class _Blocks:
    """The blocks over each level-1 group, looked up once: those over a range inside
    one level-1 group are taken from its list by their step bounds."""

    def __init__(self, reader: SeriesReader, base: int):
        self.reader, self.shift, self.found = reader, level_shift(base, 1), {}

    def of_group(self, g: int) -> list:
        if g not in self.found:
            self.found[g] = self.reader.blocks_in(g << self.shift, (g + 1) << self.shift)
        return self.found[g]

    def within(self, a: int, b: int) -> list:
        """The blocks holding a step in [a, b), a range inside one level-1 group."""
        return [r for r in self.of_group(a >> self.shift) if r.header.step_min < b and r.header.step_max >= a]


def _decode(reader: SeriesReader, refs: list, base: int) -> tuple[Points, list[tuple]]:
    """The points of blocks ``refs``, decoded together in write order, and (seq, first,
    end) of each block's points in them, numbered from ``base``."""
    refs = sorted(refs, key=lambda r: r.seq)
    points = reader.decode(refs, None, None)   # not cut to a range: each block's points stay in place
    bounds = (base + np.cumsum([0] + [r.header.count for r in refs])).tolist()
    return points, [(ref.seq, a, b) for ref, a, b in zip(refs, bounds[:-1], bounds[1:])]


def _runs(batches: list[Points], blocks: list[tuple]) -> tuple[list[Points], list[int]]:
    """The blocks (seq, first, end: numbered over the batches one after another) in
    write order, as views of runs of blocks that follow each other in one batch, and
    the number of the first point of each."""
    offsets = np.cumsum([0] + [len(p) for p in batches]).tolist()
    parts, bases, blocks, i = [], [], sorted(blocks), 0
    while i < len(blocks):
        _, first, end = blocks[i]
        i += 1
        while i < len(blocks) and blocks[i][1] == end and end not in offsets:   # not into the next batch
            end = blocks[i][2]
            i += 1
        k = int(np.searchsorted(offsets, first, side="right")) - 1
        points, a, b = batches[k], first - offsets[k], end - offsets[k]
        parts.append(Points(points.steps[a:b], points.times[a:b], points.values[a:b]))
        bases.append(first)
    return parts, bases


def _zones(blocks: _Blocks, edges: list[int], base: int) -> tuple[list[tuple[int, int]], list]:
    """The groups that the bucket edges cut, decoded whole, and their blocks: the
    level-1 group where one block holds it (that block holds the level-0 group too),
    else the level-0 group. The zones are merged and cut to the edges."""
    lo, hi = edges[0], edges[-1]
    zones, refs = [], {}
    for edge in edges:
        if not edge & ((1 << level_shift(base, 0)) - 1):
            continue   # on a level-0 group edge: it cuts no group
        level = 1 if len(blocks.of_group(edge >> level_shift(base, 1))) <= 1 else 0
        g, shift = edge >> level_shift(base, level), level_shift(base, level)
        zones.append((max(lo, g << shift), min(hi, (g + 1) << shift)))
        refs.update((ref.seq, ref) for ref in blocks.within(*zones[-1]))
    return _merge(zones), list(refs.values())


def _cover(edges: list[int], zones: list[tuple[int, int]], base: int):
    """Each bucket less the zones as whole groups ({level: [(first gid, end gid,
    bucket)]}, the coarsest that fit, as downsample.decompose covers a range), and the
    raw pieces left ([(lo, hi)]; none, as the zones hold every cut group)."""
    shifts = [level_shift(base, level) for level in range(LEVELS)]
    wholes, raw, z = {}, [], 0
    for j in range(len(edges) - 1):
        a, b = edges[j], edges[j + 1]
        while z < len(zones) and zones[z][1] <= a:
            z += 1
        k = z
        while a < b:
            if k < len(zones) and zones[k][0] <= a:
                a, k = zones[k][1], k + 1
                continue
            end = min(b, zones[k][0]) if k < len(zones) else b
            _whole_groups(a, end, j, shifts, wholes, raw)
            a = end
    return wholes, raw


def _whole_groups(a: int, b: int, bucket: int, shifts: list[int], wholes: dict, raw: list) -> None:
    """Cover [a, b) by whole groups, coarsest first, and raw pieces of level-0 groups."""
    inner = None   # the whole groups of the level above, in gids of this level
    for level in range(LEVELS - 1, -1, -1):
        first, end = -(-a >> shifts[level]), b >> shifts[level]
        if first >= end:   # none at this level, so none above either
            continue
        spans = ((first, end),) if inner is None else ((first, inner[0]), (inner[1], end))
        spans = [(f, e, bucket) for f, e in spans if f < e]
        if spans:
            wholes.setdefault(level, []).extend(spans)
        inner = (first << LEVEL_BITS, end << LEVEL_BITS)
    first, end = -(-a >> shifts[0]), b >> shifts[0]
    raw += [(x, y) for x, y in (((a, b),) if first >= end else ((a, first << shifts[0]), (end << shifts[0], b)))
            if x < y]


def _pages(ranges: list[tuple[int, int, int]]) -> np.ndarray:
    """The rollup pages that hold the groups of ``ranges``, ascending."""
    pages = set()
    for first, end, _ in ranges:
        pages.update(range(first // PAGE_GROUPS, (end - 1) // PAGE_GROUPS + 1))
    return np.array(sorted(pages), np.int64)


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


def _targets(units: dict, near: tuple):
    """(role, level, gid) of the whole groups to follow down: in each bucket, the first
    and the last group, the one with the lowest min and the one with the highest max
    (lowest steps on ties: the point chosen is the first in step order), and the first
    holding a NaN; each unless the zones' points ``near`` (fold's tables) beat it. A
    zone and a group never share a step, so a tie in value goes by their steps."""
    bucket, start, n = units["bucket"], units["start"], len(units["bucket"])
    if not n:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    roles, steps, values = near
    firsts = np.unique(bucket, return_index=True)[1]
    lasts = np.r_[firsts[1:], n] - 1
    chosen = []

    def keep(role, at, beaten):
        b = bucket[at]
        chosen.append((role, at[~((roles[role, b] >= 0) & beaten(steps[role, b], values[role, b], at))]))

    keep(FIRST, firsts, lambda s, v, at: s < start[at])
    keep(LAST, lasts, lambda s, v, at: s > start[at])
    valid = np.flatnonzero(units["count"] > units["nan"])
    for role, key, better in ((MIN, units["min"], np.less), (MAX, -units["max"], np.greater)):
        order = valid[np.lexsort((start[valid], key[valid], bucket[valid]))]
        best = order[np.unique(bucket[order], return_index=True)[1]]
        extreme = units["min" if role == MIN else "max"]
        keep(role, best, lambda s, v, at: better(v, extreme[at]) | ((v == extreme[at]) & (s < start[at])))
    nans = np.flatnonzero(units["nan"] > 0)
    keep(NAN, nans[np.unique(bucket[nans], return_index=True)[1]], lambda s, v, at: s < start[at])
    at = np.concatenate([i for _, i in chosen])
    role = np.concatenate([np.full(len(i), r, np.int64) for r, i in chosen])
    return role, units["level"][at], units["gid"][at]


def _descend(reader: SeriesReader, blocks: _Blocks, role: np.ndarray, level: np.ndarray, gid: np.ndarray):
    """Follow the targets down, one level a round for all of them (each round reads the
    pages of the children of that level's targets, once), stopping at a level-1 group
    that one block holds. Returns (the step ranges of those level-1 groups, the level-0
    gids reached)."""
    shift = level_shift(reader.entry.rollup_shift, 1)
    level, gid, alone = level.copy(), gid.copy(), []
    for up in range(LEVELS - 1, 0, -1):
        at = np.flatnonzero(level == up)
        if up == 1:
            for g in np.unique(gid[at]).tolist():
                if len(blocks.of_group(g)) <= 1:
                    alone.append((g << shift, (g + 1) << shift))
                    level[at[gid[at] == g]] = -1
            at = np.flatnonzero(level == up)
        if not len(at):
            continue
        first = (gid[at] << LEVEL_BITS) // PAGE_GROUPS
        last = (((gid[at] + 1) << LEVEL_BITS) - 1) // PAGE_GROUPS
        children = reader.rollup_groups(up - 1, np.union1d(first, last))
        gid[at] = _children(children, role[at], gid[at])
        level[at] = up - 1
    return alone, np.unique(gid[level == 0])


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
