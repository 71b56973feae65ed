"""Logged points and tensor summaries as columns: what buffers hold, turned into arrays.

Shared by the writer (which encodes them) and the read side (which shows unflushed
points), so that neither imports the other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .block import Summaries


def columns(steps, times, values) -> tuple[np.ndarray, np.ndarray, "np.ndarray | list"]:
    """Steps and times as numpy arrays, values as a float64 array (scalar series) or the
    list of summary rows as it is (buffers hold lists; log_batch chunks are arrays)."""
    if isinstance(values, np.ndarray):
        return steps, times, values
    n = len(values)
    steps, times = np.fromiter(steps, np.int64, n), np.fromiter(times, np.int64, n)
    if n and isinstance(values[0], SummaryRow):
        return steps, times, list(values)
    return steps, times, np.array(values, np.float64)


class SummaryRow(NamedTuple):
    """One logged tensor summary: statistics, histogram counts, and the caller's edges
    (None when they were spread over the tensor's [min, max])."""

    stats: np.ndarray
    counts: np.ndarray
    edges: np.ndarray | None


def summary_runs(steps: np.ndarray, times: np.ndarray, rows: list, max_rows: int):
    """Split summary rows into blocks of rows that share bins and edges (or derive them)."""
    start = 0
    for i in range(1, len(rows) + 1):
        if i < len(rows) and i - start < max_rows and _same_histogram(rows[i], rows[start]):
            continue
        chunk = rows[start:i]
        yield Summaries(steps[start:i], times[start:i], np.stack([r.stats for r in chunk]),
                        np.stack([r.counts for r in chunk]), chunk[0].edges)
        start = i


def _same_histogram(a: SummaryRow, b: SummaryRow) -> bool:
    if len(a.counts) != len(b.counts) or (a.edges is None) != (b.edges is None):
        return False
    return a.edges is None or a.edges is b.edges or np.array_equal(a.edges, b.edges)
