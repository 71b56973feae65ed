"""What a summary holds, and the constants the kernels share (no numba here).

A summary is ``SUMMARY_FIELDS`` (one float64 each; counts are exact integers) plus a
histogram: edges (float64, bins + 1) and counts (int64, bins). The kernels write the
statistics at the ``S_*`` positions and keep the running totals of one tensor in a
float64 array at the ``A_*`` positions (an array, so that helpers can update it).
"""

from __future__ import annotations

import numpy as np

SUMMARY_FIELDS = ("count", "nan_count", "inf_count", "min", "max", "mean", "std", "l2", "zero_fraction",
                  "q01", "q05", "q25", "q50", "q75", "q95", "q99")
QUANTILES = np.array([0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99])
Q = 2048             # fine bins over [min, max] (derived edges)
QA = 2 * Q + 4       # adaptive fine bins (caller edges)
CHUNK = 1024         # finite values per chunk (with the fine histogram, fits in L1)
# Histograms hold at most this many bins: a block stores bins in 24 bits, and a block of
# SUMMARY_BLOCK_ROWS rows of 16,384 bins is already 128 MiB of counts.
MAX_BINS = 1 << 14

NSTATS = 16
S_COUNT, S_NAN, S_INF, S_MIN, S_MAX, S_MEAN, S_STD, S_L2, S_ZERO, S_Q = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9

A_N, A_MEAN, A_M2, A_SQ, A_ZERO, A_MIN, A_MAX, A_ANCHOR, A_W, A_INV, A_BASE = range(11)
NACC = 11

MODE_UNIFORM = 0     # fast uniform formula, then corrected against the edges
MODE_SEARCH = 1      # binary search in the edges

TABLE_MIN = 1 << 16  # tensors of this many elements bin through the fine-bin table (table.py)
