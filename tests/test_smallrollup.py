"""The numpy rollups (engine.smallrollup) give the numba kernels' aggregates bit for bit,
and a store written without numba holds the rollups a store written with it does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import steplog
from steplog.engine import rollup, rollupkernels, smallrollup

from _helpers import INT64_MAX, INT64_MIN, SPECIAL_VALUES

STEP_KINDS = ["full_range", "ties", "strided", "shuffled", "extremes"]
VALUE_KINDS = ["normal", "mixed", "zeros_and_nan", "infinities"]


def _steps(rng, kind: str, n: int) -> np.ndarray:
    if kind == "full_range":
        return rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    if kind == "ties":
        return rng.integers(-40, 40, size=n, dtype=np.int64)
    if kind == "strided":
        return np.arange(n, dtype=np.int64) * 37 - 1000
    if kind == "shuffled":
        return rng.permutation(n).astype(np.int64)
    return rng.choice(np.array([INT64_MIN, INT64_MIN + 1, -1, 0, INT64_MAX - 1, INT64_MAX], np.int64), n)


def _values(rng, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=n)
    if kind == "mixed":   # NaN payloads, infinities, -0.0
        values = rng.normal(size=n)
        mask = rng.random(n) < 0.3
        values[mask] = rng.choice(SPECIAL_VALUES, size=int(mask.sum()))
        return values
    if kind == "zeros_and_nan":   # min and max keep the zero seen first; all-NaN groups
        return rng.choice(np.array([0.0, -0.0, np.nan]), size=n)
    return rng.choice(np.array([np.inf, -np.inf, 1e308, 2.0]), size=n)   # sums overflow, inf - inf


def _bits(arrays) -> list[list[int]]:
    return [a.view(np.uint64).tolist() if a.dtype == np.float64 else a.tolist() for a in arrays]


def _cases():
    for n in (1, 2, 7, 300, 2000):
        for kind in STEP_KINDS:
            yield pytest.param(n, kind, id=f"n{n}-{kind}")


@pytest.mark.parametrize("n,step_kind", list(_cases()))
def test_groups_and_levels_are_the_kernels(n, step_kind):
    for j, value_kind in enumerate(VALUE_KINDS):
        rng = np.random.default_rng([n, STEP_KINDS.index(step_kind), j])
        steps, values = _steps(rng, step_kind, n), _values(rng, value_kind, n)
        for shift in (0, 3, 9):
            theirs = rollupkernels._group_points(steps, values, np.int64(shift))
            mine = smallrollup._group_points(steps, values, np.int64(shift))
            assert _bits(mine) == _bits(theirs), (value_kind, shift)
            for bits in (1, 4):
                assert _bits(smallrollup._coarsen(*theirs, np.int64(bits))) == \
                    _bits(rollupkernels._coarsen(*theirs, np.int64(bits))), (value_kind, shift, bits)


def test_sums_are_sequential_in_write_order():
    # 1e16 then ones: added in order every 1 rounds away; a pairwise sum keeps them
    values = np.concatenate(([1e16], np.ones(999)))
    steps = np.zeros(len(values), np.int64)
    assert smallrollup._group_points(steps, values, np.int64(0))[5].tolist() == [1e16]
    # many groups of few points and few groups of many: both of the loops that sum
    rng = np.random.default_rng(3)
    for groups in (2, 500):
        steps = rng.integers(0, groups, size=3000, dtype=np.int64)
        values = rng.normal(size=3000) * 10.0 ** rng.integers(-8, 8, size=3000)
        assert _bits(smallrollup._group_points(steps, values, np.int64(0))) == \
            _bits(rollupkernels._group_points(steps, values, np.int64(0)))


def test_folds_into_pages_are_the_kernels():
    rng = np.random.default_rng(4)
    for trial in range(40):
        pages = [[a.copy() for a in rollupkernels._empty(rollup.PAGE_GROUPS)] for _ in range(2)]
        for _ in range(3):   # earlier writes, then later ones, into the same slots
            steps = rng.integers(0, rollup.PAGE_GROUPS << 2, size=int(rng.integers(1, 200)), dtype=np.int64)
            groups = rollupkernels._group_points(steps, _values(rng, VALUE_KINDS[trial % 4], len(steps)), np.int64(2))
            rollupkernels.fold_groups(groups[0], *groups[1:], *pages[0])
            smallrollup.fold_groups(groups[0], *groups[1:], *pages[1])
            assert _bits(pages[1]) == _bits(pages[0])


def test_fold_groups_refuses_repeated_slots():
    groups = rollupkernels._group_points(np.array([0, 1], np.int64), np.ones(2), np.int64(0))
    page = [a.copy() for a in rollupkernels._empty(4)]
    with pytest.raises(ValueError):
        smallrollup.fold_groups(np.zeros(2, np.int64), *groups[1:], *page)


WRITE = """
import sys
if sys.argv[2] == "numba":
    import numba
import numpy as np, steplog
rng = np.random.default_rng(5)
with steplog.open(sys.argv[1]) as store:
    run = store.start_run(name="r")
    for chunk in range(3):   # below the rollup threshold, then over it, then more
        steps = rng.integers(0, 20_000, size=3000)
        values = rng.normal(size=3000)
        values[rng.random(3000) < 0.05] = np.nan
        run.log_batch("loss", steps=steps, values=values)
        run.flush()
    run.log_batch("loss", steps=np.arange(5000) * 3 + 7, values=np.sin(np.arange(5000)))
print("numba" in sys.modules)
"""


def test_a_store_written_without_numba_keeps_the_same_rollups(tmp_path):
    tables = []
    for how in ("numpy", "numba"):
        path = str(tmp_path / how)
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(WRITE), path, how], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(how == "numba")]
        with steplog.open(path, mode="r") as store:
            run_id = store.runs().column("id")[0].as_py()
            tables.append([store.read(run_id, "loss", buckets=b) for b in (7, 100, 2000)])
    for mine, theirs in zip(*tables):
        assert mine.num_rows > 0 and mine.column_names == theirs.column_names
        for name in mine.column_names:
            a, b = mine.column(name).to_numpy(), theirs.column(name).to_numpy()
            assert a.dtype == b.dtype and a.view(np.uint64 if a.dtype == np.float64 else a.dtype).tolist() == \
                b.view(np.uint64 if b.dtype == np.float64 else b.dtype).tolist(), name
