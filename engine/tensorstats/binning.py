"""A value's bins: its fine bin, numpy's output bin, and the margin within which the
uniform formula alone gives the output bin (see histogram.py for the rules)."""

from __future__ import annotations

import numba as nb

from .fields import MODE_UNIFORM


@nb.njit(cache=True, nogil=True)
def fine_pos(v, anchor, inv, base, top):
    """(v - anchor) * inv - base clamped to [0, top]: its integer part is v's fine bin."""
    return min(max(0.0, (v - anchor) * inv - base), top)


@nb.njit(cache=True, nogil=True)
def coarse(v, edges, bins, mode, escale):
    """numpy's output bin of v: 0..bins-1, or -2 below edges[0], -3 above edges[bins]."""
    if v < edges[0]:
        return -2
    if v > edges[bins]:
        return -3
    last = bins - 1
    if mode == MODE_UNIFORM:
        i = int(min(max(0.0, (v - edges[0]) * escale), float(last)))
        while i > 0 and v < edges[i]:
            i -= 1
        while i < last and v >= edges[i + 1]:
            i += 1
        return i
    i = 0
    j = last
    while i < j:                                # the largest i <= last with edges[i] <= v
        mid = (i + j + 1) >> 1
        if edges[mid] <= v:
            i = mid
        else:
            j = mid - 1
    return i


_ULP = 2.0 ** -52


@nb.njit(cache=True, nogil=True)
def uniform_eps(edges, bins, escale):
    """A margin (in bins) outside which the uniform guess floor((v - edges[0]) * escale)
    is v's bin without looking at the edges: how far the edges are from uniform, plus
    the rounding of the guess and of this estimate, times 4. Small segments bin with it:
    only values within eps of a uniform edge (or outside) are checked against the edges.
    """
    lo = edges[0]
    hi = edges[bins]
    w = (hi - lo) / bins
    dev = 0.0
    for i in range(bins + 1):
        dev = max(dev, abs(edges[i] - (lo + i * w)))
    big = max(abs(lo), abs(hi))
    return min(1.0, 4.0 * ((dev + 8.0 * _ULP * big) * escale + 16.0 * _ULP * bins))
