"""Points and run records written through the public API come back exactly."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

import steplog

from _helpers import (INT64_MAX, INT64_MIN, SPECIAL_VALUES, assert_points, bits, columns)


def _special_mix(rng, n):
    values = rng.normal(0.0, 10.0, size=n)
    mask = rng.random(n) < 0.25
    values[mask] = rng.choice(SPECIAL_VALUES, size=int(mask.sum()))
    return values


# -- basic round trip ---------------------------------------------------------------

def test_log_flush_reopen_bit_exact(open_store, store_path):
    rng = np.random.default_rng(1)
    store = open_store()
    run = store.start_run(experiment="e")
    want = {}  # name -> (steps, values) in write order

    steps = rng.integers(-1000, 1000, size=300)
    values = _special_mix(rng, 300)
    for s, v in zip(steps, values):
        run.log("single", float(v), step=int(s))
    want["single"] = (steps, values)

    dict_steps = rng.integers(-50, 50, size=100)
    a, b = _special_mix(rng, 100), _special_mix(rng, 100)
    for s, va, vb in zip(dict_steps, a, b):
        run.log({"dict_a": float(va), "dict_b": float(vb)}, step=int(s))
    want["dict_a"] = (dict_steps, a)
    want["dict_b"] = (dict_steps, b)

    batch_steps = rng.integers(INT64_MIN, INT64_MAX, size=1000, endpoint=True)
    batch_values = _special_mix(rng, 1000)
    run.log_batch("batch", batch_steps[:10], batch_values[:10])
    run.log_batch("batch", batch_steps[10:], batch_values[10:])
    want["batch"] = (batch_steps, batch_values)

    def check(s):
        for name, (st, va) in want.items():
            assert_points(s.read(run.id, name), st, va)

    check(store)                      # unflushed, read through the same store
    store.flush()
    check(store)
    counts = {row["metric"]: row["count"] for row in store.metrics(run.id).to_pylist()}
    assert counts == {name: len(st) for name, (st, _) in want.items()}
    store.close()
    reopened = open_store()
    check(reopened)
    rows = {row["metric"]: row for row in reopened.metrics(run.id).to_pylist()}
    for name, (st, _) in want.items():
        assert rows[name]["count"] == len(st)
        assert rows[name]["step_min"] == int(np.min(st))
        assert rows[name]["step_max"] == int(np.max(st))
        assert rows[name]["context"] is None


def test_special_values_round_trip_through_every_entry_point(open_store):
    store = open_store()
    run = store.start_run()
    n = len(SPECIAL_VALUES)
    for i, v in enumerate(SPECIAL_VALUES):
        run.log("py_float", float(v), step=i)
        run.log("np_float", v, step=i)          # numpy float64 scalar
        run.log({"dict": float(v)}, step=i)
    run.log_batch("batch", np.arange(n), SPECIAL_VALUES)
    run.log_batch("batch_list", list(range(n)), [float(v) for v in SPECIAL_VALUES])
    names = ["py_float", "np_float", "dict", "batch", "batch_list"]
    for phase in ("unflushed", "flushed", "reopened"):
        if phase == "flushed":
            store.flush()
        if phase == "reopened":
            store.close()
            store = open_store()
        for name in names:
            got = store.read(run.id, name).column("value").to_numpy()
            assert bits(got).tolist() == bits(SPECIAL_VALUES).tolist(), (phase, name)


def test_log_dict_logs_every_metric_at_one_step(store):
    run = store.start_run()
    run.log({"a": 1.0, "b": 2.0, "c": 3.0}, step=7)
    run.log({"a": 4.0, "c": 5.0}, step=8)
    assert_points(store.read(run.id, "a"), [7, 8], [1.0, 4.0])
    assert_points(store.read(run.id, "b"), [7], [2.0])
    assert_points(store.read(run.id, "c"), [7, 8], [3.0, 5.0])
    t = columns(store.read(run.id, "a"))[1][0]
    assert columns(store.read(run.id, "b"))[1][0] == t  # one call, one time


def test_step_none_auto_increments(open_store):
    store = open_store()
    run = store.start_run()
    for v in range(7):
        run.log("a", float(v))
    run.log({"d": 5.0, "b": 0.5})            # each series of a dict counts from 0
    run.log({"d": 6.0, "b": 1.5})
    run.log({"d": 7.0, "b": 2.5})
    run.log("a", 10.0, step=100)
    run.log("a", 11.0)                       # after an explicit step: 101
    store.flush()
    run.log("a", 12.0)                       # continues across a flush: 102
    run.log_batch("a", [200, 201], [13.0, 14.0])
    run.log("a", 15.0)                       # after a batch: 202
    run.log("c", 1.0, context={"split": "val"})
    run.log("c", 2.0, context={"split": "val"})
    run.log("c", 3.0)                        # another series: starts at 0
    assert_points(store.read(run.id, "a"), [0, 1, 2, 3, 4, 5, 6, 100, 101, 102, 200, 201, 202],
                  [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15])
    assert_points(store.read(run.id, "b"), [0, 1, 2], [0.5, 1.5, 2.5])
    assert_points(store.read(run.id, "d"), [0, 1, 2], [5.0, 6.0, 7.0])
    assert_points(store.read(run.id, "c", context={"split": "val"}), [0, 1], [1.0, 2.0])
    assert_points(store.read(run.id, "c"), [0], [3.0])


def test_step_none_mixing_log_and_log_dict(store):
    # one series, logged by log(), by log(dict) with different key sets and by
    # log_batch: one step counter
    run = store.start_run()
    run.log("a", 0.0)
    run.log({"a": 1.0, "b": 10.0})
    run.log("a", 2.0)
    run.log({"a": 3.0})
    run.log_batch("a", [4], [4.0])
    run.log({"a": 5.0, "b": 11.0})
    run.log({"b": 12.0, "a": 6.0})
    assert_points(store.read(run.id, "a"), [0, 1, 2, 3, 4, 5, 6], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert_points(store.read(run.id, "b"), [0, 1, 2], [10.0, 11.0, 12.0])


def test_ties_keep_write_order_mixing_log_and_log_dict(store):
    run = store.start_run()
    run.log("a", 1.0, step=0)
    run.log({"a": 2.0}, step=0)
    run.log("a", 3.0, step=0)
    run.log({"a": 4.0, "b": 0.0}, step=0)
    run.log_batch("a", [0], [5.0])
    assert_points(store.read(run.id, "a"), [0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    store.flush()
    assert_points(store.read(run.id, "a"), [0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])


def test_step_none_many_points_crosses_blocks(store):
    run = store.start_run()
    for i in range(1000):  # 64-point blocks sealed as the points come
        run.log("m", float(i) * 0.5)
    store.flush()
    for i in range(1000, 1100):
        run.log("m", float(i) * 0.5)
    assert_points(store.read(run.id, "m"), np.arange(1100), np.arange(1100) * 0.5)


# -- ordering and ranges ------------------------------------------------------------

def test_out_of_order_and_duplicate_steps_sorted_stably(open_store):
    rng = np.random.default_rng(2)
    store = open_store()
    run = store.start_run()
    steps, values = [], []
    value = 0.0
    for round_ in range(6):
        chunk = rng.integers(-20, 20, size=150)
        for s in chunk[:100]:
            value += 1.0
            run.log("m", value, step=int(s))
        batch_values = value + 1.0 + np.arange(50)
        run.log_batch("m", chunk[100:], batch_values)
        value = float(batch_values[-1])
        steps.extend(chunk.tolist())
        values.extend(np.arange(value - 149, value + 1).tolist())
        if round_ % 2 == 0:
            store.flush()   # some rounds stored, some not: ties span both
    assert len(set(values)) == len(values)
    assert_points(store.read(run.id, "m"), steps, values)
    store.close()
    assert_points(open_store().read(run.id, "m"), steps, values)


def test_ties_keep_write_order_across_blocks(store):
    run = store.start_run()
    n = 64 * 5 + 3
    for i in range(n):
        run.log("m", float(i), step=5 if i % 3 else -5)
    store.flush()
    for i in range(n, n + 10):
        run.log("m", float(i), step=5)
    steps = [5 if i % 3 else -5 for i in range(n)] + [5] * 10
    assert_points(store.read(run.id, "m"), steps, np.arange(n + 10, dtype=float))


RANGE_BOUNDS = [None, INT64_MIN, INT64_MIN + 1, -10**18, -501, -500, -499, -1, 0, 1, 63, 64, 65, 127, 128,
                250, 499, 500, 501, 10**18, INT64_MAX]


def test_ranges_cut_blocks(open_store):
    rng = np.random.default_rng(3)
    store = open_store()
    run = store.start_run()
    # monotone steps (narrow blocks), then a shuffled tail (wide blocks that overlap)
    mono = np.arange(-500, 500, dtype=np.int64)
    shuffled = rng.integers(-600, 600, size=700)
    extremes = np.array([INT64_MIN, INT64_MAX, INT64_MIN, 0, INT64_MAX], dtype=np.int64)
    steps = np.concatenate([mono, shuffled, extremes])
    values = rng.normal(size=len(steps))
    run.log_batch("m", mono, values[:len(mono)])
    for s, v in zip(shuffled[:300], values[len(mono):len(mono) + 300]):
        run.log("m", float(v), step=int(s))
    store.flush()
    run.log_batch("m", shuffled[300:], values[len(mono) + 300:len(mono) + 700])
    for s, v in zip(extremes, values[-5:]):
        run.log("m", float(v), step=int(s))

    def check(s):
        for start in RANGE_BOUNDS:
            for stop in RANGE_BOUNDS[::2]:
                table = s.read(run.id, "m", start=start, stop=stop)
                assert_points(table, steps, values, start=start, stop=stop)

    check(store)          # stored blocks plus unflushed points
    store.flush()
    check(store)
    store.close()
    check(open_store())


def test_random_ranges_many_blocks(open_store):
    rng = np.random.default_rng(4)
    store = open_store()
    run = store.start_run()
    steps = np.concatenate([np.arange(3000), rng.integers(0, 3000, size=1000)])
    values = rng.normal(size=len(steps))
    run.log_batch("m", steps, values)
    store.close()
    store = open_store()
    for _ in range(200):
        start, stop = sorted(rng.integers(-10, 3010, size=2).tolist())
        start = None if rng.random() < 0.1 else start
        stop = None if rng.random() < 0.1 else stop
        assert_points(store.read(run.id, "m", start=start, stop=stop), steps, values, start=start, stop=stop)
    # empty and inverted ranges
    assert store.read(run.id, "m", start=10, stop=10).num_rows == 0
    assert store.read(run.id, "m", start=100, stop=5).num_rows == 0
    assert store.read(run.id, "m", start=5000).num_rows == 0
    assert store.read(run.id, "m", stop=-1).num_rows == 0


# -- series identity ----------------------------------------------------------------

def test_contexts_are_separate_series(open_store):
    store = open_store()
    run = store.start_run()
    run.log("loss", 1.0, step=0)
    run.log("loss", 2.0, step=0, context={"split": "train"})
    run.log("loss", 3.0, step=0, context={"split": "val"})
    run.log("loss", 4.0, step=1, context={"split": "val", "fold": 2})
    run.log("loss", 5.0, step=2, context={"fold": 2, "split": "val"})  # same context, other key order
    run.log({"loss": 6.0, "acc": 0.5}, step=3, context={"split": "train"})
    run.log_batch("loss", [4, 5], [7.0, 8.0], context={"split": "train"})

    def check(s):
        assert_points(s.read(run.id, "loss"), [0], [1.0])
        assert_points(s.read(run.id, "loss", context={"split": "train"}), [0, 3, 4, 5], [2.0, 6.0, 7.0, 8.0])
        assert_points(s.read(run.id, "loss", context={"split": "val"}), [0], [3.0])
        assert_points(s.read(run.id, "loss", context={"fold": 2, "split": "val"}), [1, 2], [4.0, 5.0])
        assert_points(s.read(run.id, "acc", context={"split": "train"}), [3], [0.5])
        assert s.read(run.id, "acc", missing_ok=True).num_rows == 0
        with pytest.raises(steplog.NotFoundError, match="split"):   # names the contexts it has
            s.read(run.id, "loss", context={"split": "test"})

    check(store)
    store.flush()
    check(store)
    rows = {(r["metric"], r["context"]): r["count"] for r in store.metrics(run.id).to_pylist()}
    assert rows == {("loss", None): 1, ("loss", '{"split":"train"}'): 4, ("loss", '{"split":"val"}'): 1,
                    ("loss", '{"fold":2,"split":"val"}'): 2, ("acc", '{"split":"train"}'): 1}
    store.close()
    check(open_store())


@pytest.mark.parametrize("first,second", [({"flag": 1}, {"flag": True}), ({"x": 1}, {"x": 1.0}),
                                          ({"flag": True}, {"flag": 1})])
def test_contexts_equal_in_python_but_distinct_in_json_are_separate_series(store, first, second):
    # a series is identified by the canonical JSON of its context ({"flag":1} and
    # {"flag":true} are two series for read() and metrics()); logging must agree
    run = store.start_run()
    run.log("m", 1.0, step=0, context=first)
    run.log("m", 2.0, step=0, context=second)
    assert_points(store.read(run.id, "m", context=first), [0], [1.0])
    assert_points(store.read(run.id, "m", context=second), [0], [2.0])


def test_empty_context_is_the_same_series_as_no_context(store):
    # context_arg maps {} and None to the same series; step=None must count both
    run = store.start_run()
    run.log("m", 1.0)
    run.log("m", 2.0, context={})
    run.log("m", 3.0)
    assert_points(store.read(run.id, "m"), [0, 1, 2], [1.0, 2.0, 3.0])
    assert_points(store.read(run.id, "m", context={}), [0, 1, 2], [1.0, 2.0, 3.0])


def test_runs_are_separate(store):
    a = store.start_run()
    b = store.start_run()
    a.log("m", 1.0, step=0)
    b.log("m", 2.0, step=0)
    store.flush()
    assert_points(store.read(a.id, "m"), [0], [1.0])
    assert_points(store.read(b.id, "m"), [0], [2.0])


def test_ten_thousand_series_in_one_run(open_store):
    store = open_store()
    run = store.start_run()
    names = [f"metric/{i:05d}" for i in range(10_000)]
    for step in range(3):
        run.log({name: float(i * 10 + step) for i, name in enumerate(names)}, step=step)
    for i in range(0, 10_000, 10):
        run.log(names[i], -1.0, step=100)
    store.flush()
    store.close()
    store = open_store()
    table = store.metrics(run.id)
    assert table.num_rows == 10_000
    rows = {r["metric"]: r for r in table.to_pylist()}
    assert sorted(rows) == names
    for i, name in enumerate(names):
        extra = i % 10 == 0
        assert (rows[name]["count"], rows[name]["step_min"], rows[name]["step_max"]) == \
            (4 if extra else 3, 0, 100 if extra else 2)
    for i in (0, 1, 4321, 9999):
        extra = [100] if i % 10 == 0 else []
        assert_points(store.read(run.id, names[i]), [0, 1, 2] + extra,
                      [i * 10.0, i * 10.0 + 1, i * 10.0 + 2] + [-1.0] * len(extra))


def test_ten_thousand_series_logged_in_a_loop(open_store):
    store = open_store()
    run = store.start_run()
    for i in range(10_000):
        run.log(f"s{i}", float(i), step=i)
    store.flush()
    store.close()
    store = open_store()
    counts = store.metrics(run.id).column("count").to_numpy()
    assert len(counts) == 10_000 and (counts == 1).all()
    assert_points(store.read(run.id, "s7777"), [7777], [7777.0])


# -- runs ---------------------------------------------------------------------------

def _run_row(store, run_id):
    rows = [r for r in store.runs().to_pylist() if r["id"] == run_id]
    assert len(rows) == 1
    return rows[0]


def test_empty_run(open_store):
    store = open_store()
    with store.start_run(experiment="exp", name="nothing") as run:
        pass
    for s in (store, None):
        if s is None:
            store.close()
            s = open_store()
        row = _run_row(s, run.id)
        assert (row["experiment"], row["name"], row["status"], row["parent"]) == ("exp", "nothing", "finished", None)
        metrics = s.metrics(run.id)
        assert metrics.num_rows == 0
        assert {"metric", "context", "count", "step_min", "step_max"} <= set(metrics.column_names)
        with pytest.raises(steplog.NotFoundError, match="never_logged"):
            s.read(run.id, "never_logged")
        table = s.read(run.id, "never_logged", missing_ok=True)
        assert table.num_rows == 0
        assert table.schema.field("step").type == pa.int64()
        assert table.schema.field("value").type == pa.float64()
        assert pa.types.is_timestamp(table.schema.field("time").type)
        assert table.schema.field("time").type.unit == "us"


def test_read_and_metrics_of_unknown_run_raise_not_found(store):
    unknown = "0" * 32
    with pytest.raises(steplog.NotFoundError):
        store.read(unknown, "m")
    with pytest.raises(steplog.NotFoundError):
        store.metrics(unknown)
    with pytest.raises(steplog.NotFoundError):
        store.run(unknown)
    assert issubclass(steplog.NotFoundError, steplog.StepLogError)


def test_resumed_run_continues(open_store):
    store = open_store()
    run = store.start_run(experiment="e", name="resumable")
    for v in range(5):
        run.log("loss", float(v))
    run.log({"a": 0.0, "b": 0.0})
    run.log_batch("batch", [10, 20], [1.0, 2.0])
    assert _run_row(store, run.id)["status"] == "running"
    store.close()   # the job dies without ending its run

    store = open_store()
    resumed = store.run(run.id)
    assert _run_row(store, run.id)["status"] == "running"
    assert resumed.id == run.id
    resumed.log("loss", 5.0)                 # continues at step 5
    resumed.log({"a": 1.0, "b": 1.0})        # at step 1
    resumed.log("batch", 3.0)                # at step 21
    resumed.end()
    assert _run_row(store, run.id)["status"] == "finished"
    store.close()

    store = open_store()
    again = store.run(run.id)
    assert _run_row(store, run.id)["status"] == "running"
    assert _run_row(store, run.id)["end_time"] is None
    again.log("loss", 6.0)
    again.end("killed")
    row = _run_row(store, run.id)
    assert row["status"] == "killed"
    assert row["end_time"] is not None
    assert_points(store.read(run.id, "loss"), range(7), [0, 1, 2, 3, 4, 5, 6])
    assert_points(store.read(run.id, "a"), [0, 1], [0.0, 1.0])
    assert_points(store.read(run.id, "batch"), [10, 20, 21], [1.0, 2.0, 3.0])
    assert len(store.runs()) == 1


def test_resumed_in_the_same_store_continues(store):
    run = store.start_run()
    run.log("m", 1.0)
    run.log("m", 2.0)
    run.end()
    resumed = store.run(run.id)
    resumed.log("m", 3.0)
    assert_points(store.read(run.id, "m"), [0, 1, 2], [1.0, 2.0, 3.0])


def test_step_none_after_out_of_order_steps_does_not_depend_on_reopen(open_store, tmp_path):
    # "step=None logs at the next step of each series": the same calls must give the
    # same steps whether or not the store was closed and the run resumed in between
    def scenario(path, reopen):
        store = open_store(path=path)
        run = store.start_run()
        run.log("m", 1.0, step=10)
        run.log("m", 2.0, step=3)
        run_id = run.id
        if reopen:
            store.close()
            store = open_store(path=path)
            run = store.run(run_id)
        else:
            store.flush()
        run.log("m", 3.0)
        steps = columns(store.read(run_id, "m"))[0].tolist()
        store.close()
        return steps

    assert scenario(tmp_path / "a", reopen=False) == scenario(tmp_path / "b", reopen=True)


def test_exception_in_with_marks_run_failed(open_store):
    store = open_store()
    with pytest.raises(ZeroDivisionError):
        with store.start_run() as run:
            run.log("m", 1.0, step=0)
            1 / 0
    assert _run_row(store, run.id)["status"] == "failed"
    with store.start_run() as ok:
        ok.log("m", 1.0, step=0)
    assert _run_row(store, ok.id)["status"] == "finished"
    store.close()
    store = open_store()
    assert _run_row(store, run.id)["status"] == "failed"
    assert_points(store.read(run.id, "m"), [0], [1.0])   # end() flushed it
    with pytest.raises(steplog.ClosedError):
        run.log("m", 2.0)


def test_params_and_tags_in_runs(store):
    before = time.time_ns()
    a = store.start_run(experiment="sweep", name="a",
                        params={"lr": 0.1, "model": {"depth": 50, "act": "relu", "opt": {"beta": 0.9}},
                                "layers": [1, 2]},
                        tags={"team": "vision", "seed": 3})
    b = store.start_run(experiment="sweep", name="b", params={"lr": 0.2})
    a.log_params({"batch": 32})
    a.set_tags({"team": "nlp"})
    after = time.time_ns()
    table = store.runs()
    rows = {r["name"]: r for r in table.to_pylist()}
    assert set(rows) == {"a", "b"}
    for col in ("params.lr", "params.model.depth", "params.model.act", "params.model.opt.beta", "params.batch",
                "tags.team", "tags.seed", "params.layers"):
        assert col in table.column_names
    assert "params.model" not in table.column_names
    ra, rb = rows["a"], rows["b"]
    assert (ra["params.lr"], ra["params.model.depth"], ra["params.model.act"], ra["params.model.opt.beta"],
            ra["params.batch"]) == (0.1, 50, "relu", 0.9, 32)
    assert (ra["tags.team"], ra["tags.seed"]) == ("nlp", 3)
    assert rb["params.lr"] == 0.2
    assert rb["params.model.depth"] is None and rb["tags.team"] is None
    assert (ra["id"], rb["id"]) == (a.id, b.id)
    assert ra["experiment"] == rb["experiment"] == "sweep"
    start_type = table.schema.field("start_time").type
    assert pa.types.is_timestamp(start_type)
    per_unit = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[start_type.unit]
    start = table.column("start_time").cast(pa.int64()).to_pylist()
    assert all(before // per_unit <= t <= after // per_unit for t in start)


def test_default_run_name_and_ids(store):
    run = store.start_run()
    assert len(run.id) == 32 and int(run.id, 16) >= 0
    row = _run_row(store, run.id)
    assert row["experiment"] == "default"
    assert row["name"] == run.id[:8]
    assert store.start_run().id != run.id


def test_parent_runs(open_store):
    store = open_store()
    parent = store.start_run(name="parent")
    child_a = store.start_run(name="child_a", parent=parent)
    child_b = store.start_run(name="child_b", parent=parent.id)
    grandchild = store.start_run(name="grandchild", parent=child_a)
    with pytest.raises(steplog.NotFoundError):
        store.start_run(name="orphan", parent="ab" * 16)
    store.close()
    store = open_store()
    rows = {r["name"]: r for r in store.runs().to_pylist()}
    assert set(rows) == {"parent", "child_a", "child_b", "grandchild"}
    assert rows["parent"]["parent"] is None
    assert rows["child_a"]["parent"] == parent.id
    assert rows["child_b"]["parent"] == parent.id
    assert rows["grandchild"]["parent"] == child_a.id


# -- time column --------------------------------------------------------------------

def test_times_are_microseconds_beside_exact_nanoseconds(open_store):
    """time: timestamp[us] that to_pylist() turns into datetimes without pandas; time_ns:
    the nanoseconds logged, exact; time is time_ns rounded down to the microsecond."""
    store = open_store()
    run = store.start_run()
    before = time.time_ns()
    for i in range(100):
        run.log("m", float(i), step=i)
    run.log({"d": 1.0}, step=0)
    run.log_batch("b", [0, 1], [0.0, 1.0])
    after = time.time_ns()
    for phase in ("unflushed", "reopened"):
        if phase == "reopened":
            store.close()
            store = open_store()
        for name in ("m", "d", "b"):
            table = store.read(run.id, name)
            assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
            times = columns(table)[1]
            assert ((times >= before) & (times <= after)).all(), (phase, name)
            rows = table.to_pylist()
            assert [int(r["time"].timestamp() * 10**6 + 0.5) for r in rows] == list(times // 1000)
            assert [r["time_ns"] for r in rows] == list(times)
        times = columns(store.read(run.id, "m"))[1]
        assert (np.diff(times) >= 0).all()


def test_given_times_round_trip(open_store):
    rng = np.random.default_rng(5)
    store = open_store()
    run = store.start_run()
    n = 500
    steps = rng.integers(-100, 100, size=n)
    times = rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    times[:4] = [INT64_MIN, INT64_MAX, 0, -1]
    values = rng.normal(size=n)
    run.log_batch("m", steps[:200], values[:200], times=times[:200])
    store.flush()
    run.log_batch("m", steps[200:], values[200:], times=list(times[200:]))
    run.log_batch("u", np.arange(3, dtype=np.uint32), [1.0, 2.0, 3.0], times=np.array([7, 8, 9], np.uint16))
    assert_points(store.read(run.id, "m"), steps, values, times)
    assert_points(store.read(run.id, "u"), [0, 1, 2], [1.0, 2.0, 3.0], [7, 8, 9])
    store.close()
    store = open_store()
    assert_points(store.read(run.id, "m"), steps, values, times)
    for start, stop in ((-50, 50), (0, 1), (None, -99)):
        assert_points(store.read(run.id, "m", start=start, stop=stop), steps, values, times, start=start, stop=stop)


# -- storage behaviour ---------------------------------------------------------------

def test_small_budget_applies_backpressure_without_losing_points(open_store):
    store = open_store(budget_bytes=24 * 64)
    run = store.start_run()
    for i in range(3000):
        run.log("m", float(i))
    run.log_batch("b", np.arange(3000), np.arange(3000.0))
    assert_points(store.read(run.id, "m"), np.arange(3000), np.arange(3000.0))
    store.close()
    store = open_store()
    assert_points(store.read(run.id, "b"), np.arange(3000), np.arange(3000.0))


@pytest.mark.parametrize("durability", ["fsync", "commit", "none"])
def test_every_durability_round_trips(open_store, durability):
    store = open_store(durability=durability)
    run = store.start_run()
    run.log_batch("m", np.arange(100), np.arange(100.0))
    store.flush()
    store.close()
    assert_points(open_store(durability=durability).read(run.id, "m"), np.arange(100), np.arange(100.0))


def test_flipped_byte_in_segment_raises_corruption(open_store, store_path):
    store = open_store()
    run = store.start_run()
    run.log_batch("m", np.arange(1000), np.random.default_rng(6).normal(size=1000))
    store.close()
    segments = sorted((store_path / "segments").iterdir())
    assert segments
    data = bytearray(segments[-1].read_bytes())
    data[len(data) // 2] ^= 0x10
    segments[-1].write_bytes(bytes(data))
    store = open_store()
    with pytest.raises(steplog.CorruptionError):
        store.read(run.id, "m")


def test_store_layout_on_disk(open_store, store_path):
    store = open_store()
    run = store.start_run()
    run.log("m", 1.0)
    store.close()
    assert sorted(os.listdir(store_path)) == ["blobs", "index", "segments"]   # blobs: the environment
    for seg in os.listdir(store_path / "segments"):
        assert len(seg) == 20 and seg.endswith(".seg") and int(seg[:16], 16) > 0
    for folder, _, names in os.walk(store_path / "blobs"):   # named by their hash, nothing else
        assert all(len(n) == 64 + len(".blob") and int(n[:64], 16) >= 0 for n in names)


def test_read_many_names_typos_and_tensor_names(store):
    run = store.start_run(experiment="sweep")
    run.log("loss", 1.0, step=0)
    run.log_tensor("w", np.ones(3), step=0)
    with pytest.raises(steplog.NotFoundError, match="did you mean 'loss'"):
        store.read_many(metrics=["losss"])
    with pytest.raises(steplog.NotFoundError, match="did you mean 'sweep'"):
        store.read_many(experiment="swep")
    with pytest.raises(steplog.InvalidArgumentError, match="read_tensor"):
        store.read_many(metrics=["w"])
    assert store.read_many(metrics=["losss"], missing_ok=True).num_rows == 0
    assert store.read_many(metrics=["loss", "losss"], missing_ok=True).num_rows == 1
    assert store.read_many(metrics=["loss"]).column("metric").to_pylist() == ["loss"]


def test_metrics_lists_series_not_flushed_yet(open_store):
    store = open_store(flush_interval=None)
    run = store.start_run()
    run.log("loss", 1.0, step=3)
    run.log_tensor("w", np.ones(3), step=0)

    def listed():
        return {(r["metric"], r["kind"]): (r["count"], r["step_min"], r["step_max"])
                for r in store.metrics(run.id).to_pylist()}

    assert listed() == {("loss", "scalar"): (1, 3, 3), ("w", "tensor"): (1, 0, 0)}
    run.flush()
    run.log("loss", 2.0, step=-5)   # stored and unflushed points together
    assert listed() == {("loss", "scalar"): (2, -5, 3), ("w", "tensor"): (1, 0, 0)}
    run.flush()
    assert listed() == {("loss", "scalar"): (2, -5, 3), ("w", "tensor"): (1, 0, 0)}
