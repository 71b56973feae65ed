"""The search language's own share of ``Store.runs(where=...)``: ``select`` over 100,000
synthetic runs whose columns are already resolved (the catalog's part is not timed
here). Target: a few ms for a param clause AND a latest-metric clause, so that
runs(where=...) over 100,000 runs stays within 100 ms in all.

    .venv/bin/python -m pytest benchmarks/test_run_search.py --benchmark-only

Under --benchmark-disable (CI) the run set is 1,000 rows and each case runs once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from steplog.query.runs import param_columns
from steplog.query.search import Ref, parse_filter, parse_order_by, select

FULL_RUNS, TINY_RUNS = 100_000, 1_000


def synthetic_runs(n: int) -> dict[Ref, list[pa.Array]]:
    """A sweep: lr (floats), batch (ints with one "auto" in 100: a typed and a text
    column), opt (text), status, and a val_loss metric with 1 % NaN and 5 % missing."""
    rng = np.random.default_rng(7)
    lr = 10.0 ** rng.uniform(-5, 0, n)
    batch = [32 * int(b) if b else "auto" for b in rng.integers(0, 100, n)]
    opt = rng.choice(["adam", "sgd", "adamw", "lion"], n)
    status = rng.choice(["finished", "failed", "running", "crashed"], n)
    loss = rng.uniform(0, 1, n)
    loss[rng.random(n) < 0.01] = np.nan
    missing = rng.random(n) < 0.05
    return {
        Ref("param", "lr"): [pa.array(lr)],
        Ref("param", "batch"): [array for _, array in param_columns("params.batch", batch)],
        Ref("param", "opt"): [pa.array(opt)],
        Ref("attribute", "status"): [pa.array(status)],
        Ref("metric", "val_loss", "last"): [pa.array(loss, mask=missing)],
        Ref("metric", "val_loss", "min"): [pa.array(loss * 0.9, mask=missing)],
    }


@pytest.fixture(scope="module")
def columns(request):
    disabled = request.config.getoption("benchmark_disable", False)
    return synthetic_runs(TINY_RUNS if disabled else FULL_RUNS)


CASES = {
    "param_and_latest_metric": ("params.lr < 0.01 and metrics.val_loss < 0.2", None, None),
    "mixed_kind_param": ("params.batch >= 1024 or params.batch = 'auto'", None, None),
    "in_like_and_status": ("params.opt in ('adam', 'adamw') and params.opt like 'ad%' "
                           "and attributes.status = 'FINISHED'", None, None),
    "filter_order_limit": ("params.lr < 0.1", ["metrics.val_loss.min ASC", "params.batch DESC"], 100),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_select(benchmark, columns, case):
    where, order_by, limit = CASES[case]
    n = len(next(iter(columns.values()))[0])

    def run():   # parsing is part of every call, as in Store.runs
        return select(parse_filter(where), parse_order_by(order_by), limit, columns.__getitem__, n)

    rows = benchmark(run)
    benchmark.extra_info["runs"] = n
    benchmark.extra_info["kept"] = len(rows)
    if case == "param_and_latest_metric":   # an independent count with numpy
        lr = columns[Ref("param", "lr")][0].to_numpy()
        loss = columns[Ref("metric", "val_loss", "last")][0].to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            expected = np.flatnonzero((lr < 0.01) & (loss < 0.2))   # a masked value reads as NaN
        assert rows.tolist() == expected.tolist()
