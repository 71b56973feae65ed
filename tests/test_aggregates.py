"""Kept aggregates of whole series (format version 4, engine/aggregates.py) against
numpy over the raw points read back: NaN, inf, -0.0, out-of-order and repeated steps,
many flushes, two real processes writing one run, resumed runs, repair."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steplog
from steplog import _args
from steplog.engine.aggregates import Aggregates, merge, of_points
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair

from _helpers import bits, fbits

SPECIAL = [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1.5, -2.25, 1e300, -1e-300]


def kept(store, run_id: str, name: str, context: str = "") -> Aggregates | None:
    """The aggregates the index keeps for a series (flushed points only)."""
    with store._index.read() as txn:
        entry = txn.get_series(bytes.fromhex(run_id), name, context)
        return None if entry is None else txn.aggregates(entry.series_id)


def expected(steps: np.ndarray, values: np.ndarray) -> dict:
    """From points as a read returns them (by step, ties in write order), with numpy."""
    ok = ~np.isnan(values)
    with np.errstate(invalid="ignore", over="ignore"):   # inf + -inf, 1e308 + 1e308
        total = float(np.sum(values[ok]))
    out = {"count": len(values), "nan_count": int((~ok).sum()), "sum": total,
           "first": values[0], "first_step": steps[0], "last": values[-1], "last_step": steps[-1]}
    for name, pick in (("min", np.min), ("max", np.max)):
        if ok.any():
            at = np.flatnonzero(ok & (values == pick(values[ok])))[0]   # lowest step, then earliest written
            out[name], out[name + "_step"] = values[at], steps[at]
        else:
            out[name], out[name + "_step"] = float("nan"), None
    return out


def check(store, run_id: str, name: str, context: dict | None = None) -> None:
    table = store.read(run_id, name, context=context)
    steps, values = table.column("step").to_numpy(), table.column("value").to_numpy()
    want = expected(steps, values)
    got = kept(store, run_id, name, _args.context_arg(context))
    assert got.count == want["count"] and got.nan_count == want["nan_count"]
    np.testing.assert_allclose(got.sum, want["sum"], rtol=1e-12)
    for field in ("first", "last", "min", "max"):
        assert fbits(getattr(got, field)) == fbits(want[field]) or (
            np.isnan(want[field]) and np.isnan(getattr(got, field))), field
        if want.get(field + "_step") is not None:
            assert getattr(got, field + "_step") == want[field + "_step"], field
    if want["min_step"] is None:
        assert got.min_seq == 0 and got.max_seq == 0


def test_special_values_out_of_order_steps_over_many_flushes(open_store):
    store = open_store()
    rng = np.random.default_rng(1)
    with store.start_run() as run:
        for _ in range(12):
            for _ in range(rng.integers(1, 8)):
                run.log("x", SPECIAL[rng.integers(len(SPECIAL))], step=int(rng.integers(0, 6)))
            run.flush()
        check(store, run.id, "x")


def test_signed_zeros_tie_on_step_then_write_order(open_store):
    store = open_store()
    with store.start_run() as run:
        for step, value in ((4, 0.0), (2, -0.0), (2, 0.0)):
            run.log("z", value, step=step)
            run.flush()
        got = kept(store, run.id, "z")
        assert (got.min_step, fbits(got.min)) == (2, fbits(-0.0))   # lowest step, earliest written
        assert (got.max_step, fbits(got.max)) == (2, fbits(-0.0))
        assert (got.last_step, fbits(got.last)) == (4, fbits(0.0))
        check(store, run.id, "z")


def test_every_value_nan(open_store):
    store = open_store()
    with store.start_run() as run:
        run.log_batch("n", np.arange(100), np.full(100, np.nan))
        run.log("n", float("nan"), step=-5)
        run.flush()
        got = kept(store, run.id, "n")
        assert (got.count, got.nan_count, got.sum, got.min_seq, got.first_step, got.last_step) == (101, 101, 0.0, 0, -5, 99)
        assert np.isnan(got.min) and np.isnan(got.max)


def test_batches_past_a_block_and_a_context(open_store):
    """log_batch of many blocks (the numpy path), repeated steps across blocks."""
    store = open_store()
    rng = np.random.default_rng(2)
    with store.start_run() as run:
        for _ in range(3):
            steps = rng.integers(0, 300, 500)
            values = rng.choice(np.array(SPECIAL + list(rng.normal(size=20))), 500)
            run.log_batch("b", steps, values, context={"subset": "val"})
            run.flush()
        check(store, run.id, "b", {"subset": "val"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(-3, 3), st.sampled_from(SPECIAL), st.booleans()), min_size=1, max_size=60),
       st.integers(0, 2))
def test_random_logs(tmp_path_factory, log, batch_every):
    path = tmp_path_factory.mktemp("agg") / "s"
    with steplog.open(path, block_points=8, flush_interval=None) as store:
        with store.start_run() as run:
            for i, (step, value, flush) in enumerate(log):
                if batch_every and i % (batch_every + 2) == 0:
                    run.log_batch("r", [step] * 40, [value] * 40)   # a chunk past the pack size
                run.log("r", value, step=step)
                if flush:
                    run.flush()
            run.flush()
            check(store, run.id, "r")


def test_merge_in_any_order_is_the_union():
    rng = np.random.default_rng(3)
    steps = rng.integers(0, 5, 200)
    values = rng.choice(np.array(SPECIAL), 200)
    whole = of_points(steps, values)
    cuts = sorted(rng.choice(np.arange(1, 200), 5, replace=False))
    parts = [of_points(steps[lo:hi], values[lo:hi], lambda i, lo=lo: lo + i + 1)
             for lo, hi in zip([0] + cuts, cuts + [200])]
    merged = None
    for j in rng.permutation(len(parts)):
        merged = merge(merged, parts[j])
    assert bits([merged.min, merged.max, merged.first, merged.last]).tolist() == \
        bits([whole.min, whole.max, whole.first, whole.last]).tolist()
    assert merged._replace(sum=0.0, min=0, max=0, first=0, last=0) == \
        whole._replace(sum=0.0, min=0, max=0, first=0, last=0)


def _log_rank(path: str, run_id: str, rank: int, barrier) -> None:
    with steplog.open(path, block_points=16, flush_interval=None) as store:
        run = store.run(run_id)
        barrier.wait()
        for i in range(200):
            run.log("shared", float(rank * 1000 + i) if i % 17 else float("nan"), step=i % 50)
            if i % 40 == 39:
                run.flush()
        run.end()


def test_two_processes_write_one_series(store_path):
    with steplog.open(store_path) as store:
        run = store.start_run()
        run.log("shared", -1.0, step=25)
        run.end()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_log_rank, args=(str(store_path), run.id, rank, barrier)) for rank in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with steplog.open(store_path, mode="r") as store:
        assert kept(store, run.id, "shared").count == 401
        check(store, run.id, "shared")


def test_resumed_run_and_repair_keep_them(store_path):
    with steplog.open(store_path, block_points=16, flush_interval=None) as store:
        with store.start_run() as run:
            run.log_batch("loss", np.arange(100), np.linspace(1, 0, 100))
        run_id = run.id
    with steplog.open(store_path, block_points=16, flush_interval=None) as store:
        with store.run(run_id) as run:
            run.log_batch("loss", np.arange(50, 150), np.linspace(0.5, -0.5, 100))
            run.log("loss", float("nan"), step=7)
        check(store, run_id, "loss")
        before = kept(store, run_id, "loss")
    report = repair(StoreLayout(os.fspath(store_path)))
    assert report.damage == [] and report.orphans == 0
    with steplog.open(store_path, mode="r") as store:
        after = kept(store, run_id, "loss")
        check(store, run_id, "loss")
    assert after._replace(sum=0.0).pack() == before._replace(sum=0.0).pack()   # bit for bit
    assert after.sum == pytest.approx(before.sum, rel=1e-12)


def test_a_check_against_the_blocks_finds_a_changed_value(open_store):
    from steplog.engine.catalog import aggregates_mismatches
    from steplog.engine.segment import SegmentReader

    store = open_store()
    with store.start_run() as run:
        for i in range(5):
            run.log_batch("a", np.arange(i, 100, 5), np.cos(np.arange(i, 100, 5)))
            run.flush()
    reader = SegmentReader(store._layout.segment_path)
    with store._index.read() as txn:
        assert aggregates_mismatches(txn, reader, store._layout.segment_path) == []
        series_id = next(iter(txn.all_aggregates()))[0]
    store._index.write(lambda txn: txn.put_aggregates(series_id, txn.aggregates(series_id)._replace(max_step=3)))
    with store._index.read() as txn:
        assert len(aggregates_mismatches(txn, reader, store._layout.segment_path)) == 1
    reader.close()
