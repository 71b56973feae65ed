"""Bad arguments are refused with typed errors that name the argument, and change nothing."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import steplog

from _helpers import INT64_MAX, INT64_MIN, assert_points, bits, columns, list_tree

# -- a store with something in it, and everything one can observe of it -------------

SERIES = [("m", None), ("n", None), ("b", None), ("m", {"k": "v"})]


@pytest.fixture
def seeded(open_store):
    store = open_store()
    run = store.start_run(experiment="exp", name="seeded", params={"p": 1, "nested": {"q": 2}}, tags={"t": "x"})
    run.log("m", 1.0, step=0)
    run.log("m", float("nan"), step=1)
    run.log({"m": 3.0, "n": 4.0}, step=2)
    run.log_batch("b", [5, 6], [5.0, 6.0], times=[50, 60])
    store.flush()
    run.log("m", 4.0, step=3)                     # not flushed
    run.log("m", 5.0, step=3, context={"k": "v"})
    return store, run


def snapshot(store, run):
    reads = {}
    for name, context in SERIES:
        steps, times, values = columns(store.read(run.id, name, context=context))
        reads[name, str(context)] = (steps.tolist(), times.tolist(), bits(values).tolist())
    runs = store.runs().to_pylist()
    metrics = store.metrics(run.id).to_pylist()
    return reads, runs, metrics


def assert_unchanged_once_flushed(store, run, before):
    """Like snapshot(...) == before, for a store that has flushed what was pending."""
    reads, runs, metrics = snapshot(store, run)
    assert reads == before[0]
    ended = ("status", "end_time")   # close() ends the run
    assert [{k: v for k, v in r.items() if k not in ended} for r in runs] == \
        [{k: v for k, v in r.items() if k not in ended} for r in before[1]]
    # every point flushed now, and nothing else: the series are exactly the seeded ones
    assert {(r["metric"], r["context"]): r["count"] for r in metrics} == \
        {("m", None): 4, ("n", None): 1, ("b", None): 2, ("m", '{"k":"v"}'): 1}


def check_error(info, base, argument):
    error = info.value
    assert isinstance(error, steplog.StepLogError)
    assert isinstance(error, base), f"{type(error).__mro__} is not a {base.__name__}"
    assert re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", str(error)), str(error)


def _raises(call, base, argument):
    with pytest.raises(steplog.StepLogError) as info:
        call()
    check_error(info, base, argument)


# -- Run.log / log(dict) / log_batch ------------------------------------------------

T, V = TypeError, ValueError
RUN_CASES = [
    # name
    ("log-name-empty", lambda r: r.log("", 1.0, step=9), V, "name"),
    ("log-name-int", lambda r: r.log(5, 1.0, step=9), T, "name"),
    ("log-name-none", lambda r: r.log(None, 1.0, step=9), T, "name"),
    ("log-name-bytes", lambda r: r.log(b"m", 1.0, step=9), T, "name"),
    ("log-name-list", lambda r: r.log(["m"], 1.0, step=9), T, "name"),
    ("log-name-list-context", lambda r: r.log(["m"], 1.0, step=9, context={"k": "v"}), T, "name"),
    ("log-name-tuple", lambda r: r.log(("m",), 1.0, step=9), T, "name"),
    ("log-name-tuple-of-dict-keys", lambda r: r.log(("m", "n"), 1.0, step=9), T, "name"),
    ("log-name-tuple-like-context", lambda r: r.log(("m", (("k", "v"),)), 1.0, step=9), T, "name"),
    # value
    ("log-value-str", lambda r: r.log("m", "1.0", step=9), T, "value"),
    ("log-value-none", lambda r: r.log("m", None, step=9), T, "value"),
    ("log-value-missing", lambda r: r.log("m", step=9), T, "value"),
    ("log-value-bytes", lambda r: r.log("m", b"1", step=9), T, "value"),
    ("log-value-list", lambda r: r.log("m", [1.0], step=9), T, "value"),
    ("log-value-array", lambda r: r.log("m", np.array([1.0, 2.0]), step=9), T, "value"),
    ("log-value-complex", lambda r: r.log("m", 1 + 2j, step=9), T, "value"),
    ("log-value-np-complex", lambda r: r.log("m", np.complex128(1), step=9), T, "value"),
    ("log-value-object", lambda r: r.log("m", object(), step=9), T, "value"),
    ("log-value-huge-int", lambda r: r.log("m", 10**400, step=9), V, "value"),
    # step
    ("log-step-float", lambda r: r.log("m", 1.0, step=9.0), T, "step"),
    ("log-step-fraction", lambda r: r.log("m", 1.0, step=1.5), T, "step"),
    ("log-step-str", lambda r: r.log("m", 1.0, step="9"), T, "step"),
    ("log-step-bool", lambda r: r.log("m", 1.0, step=True), T, "step"),
    ("log-step-np-bool", lambda r: r.log("m", 1.0, step=np.bool_(True)), T, "step"),
    ("log-step-np-float", lambda r: r.log("m", 1.0, step=np.float64(9)), T, "step"),
    ("log-step-too-big", lambda r: r.log("m", 1.0, step=2**63), V, "step"),
    ("log-step-too-small", lambda r: r.log("m", 1.0, step=-(2**63) - 1), V, "step"),
    ("log-step-np-uint-too-big", lambda r: r.log("m", 1.0, step=np.uint64(2**63)), V, "step"),
    # context
    ("log-context-str", lambda r: r.log("m", 1.0, step=9, context="train"), T, "context"),
    ("log-context-list", lambda r: r.log("m", 1.0, step=9, context=[("k", "v")]), T, "context"),
    ("log-context-int-key", lambda r: r.log("m", 1.0, step=9, context={1: "v"}), T, "context"),
    ("log-context-list-value", lambda r: r.log("m", 1.0, step=9, context={"k": [1]}), T, "context"),
    ("log-context-dict-value", lambda r: r.log("m", 1.0, step=9, context={"k": {"x": 1}}), T, "context"),
    ("log-context-tuple-value", lambda r: r.log("m", 1.0, step=9, context={"k": (1,)}), T, "context"),
    ("log-context-object-value", lambda r: r.log("m", 1.0, step=9, context={"k": object()}), T, "context"),
    # log(dict)
    ("dict-value-str", lambda r: r.log({"m": "x"}, step=9), T, "value"),
    ("dict-second-value-none", lambda r: r.log({"m": 1.0, "n": None}, step=9), T, "value"),
    ("dict-with-value", lambda r: r.log({"m": 1.0}, 2.0, step=9), V, "value"),
    ("dict-step-float", lambda r: r.log({"m": 1.0}, step=1.5), T, "step"),
    ("dict-step-too-big", lambda r: r.log({"m": 1.0}, step=2**63), V, "step"),
    ("dict-name-empty", lambda r: r.log({"m": 1.0, "": 2.0}, step=9), V, "name"),
    ("dict-name-int", lambda r: r.log({"m": 1.0, 5: 2.0}, step=9), T, "name"),
    ("dict-context-str", lambda r: r.log({"m": 1.0}, step=9, context="x"), T, "context"),
    # log_batch
    ("batch-name-empty", lambda r: r.log_batch("", [9], [1.0]), V, "name"),
    ("batch-name-int", lambda r: r.log_batch(5, [9], [1.0]), T, "name"),
    ("batch-name-list", lambda r: r.log_batch(["m"], [9], [1.0]), T, "name"),
    ("batch-steps-float", lambda r: r.log_batch("m", [9.0, 10.0], [1.0, 2.0]), T, "steps"),
    ("batch-steps-str", lambda r: r.log_batch("m", ["9", "10"], [1.0, 2.0]), T, "steps"),
    ("batch-steps-bool", lambda r: r.log_batch("m", [True, False], [1.0, 2.0]), T, "steps"),
    ("batch-steps-none", lambda r: r.log_batch("m", [9, None], [1.0, 2.0]), T, "steps"),
    ("batch-steps-2d", lambda r: r.log_batch("m", [[9, 10]], [1.0, 2.0]), V, "steps"),
    ("batch-steps-scalar", lambda r: r.log_batch("m", 9, 1.0), V, "steps"),
    ("batch-steps-ragged", lambda r: r.log_batch("m", [[9], [10, 11]], [1.0, 2.0]), T, "steps"),
    ("batch-steps-uint-too-big", lambda r: r.log_batch("m", np.array([2**63], np.uint64), [1.0]), V, "steps"),
    ("batch-values-str", lambda r: r.log_batch("m", [9, 10], ["a", "b"]), T, "values"),
    ("batch-values-none", lambda r: r.log_batch("m", [9, 10], [1.0, None]), T, "values"),
    ("batch-values-complex", lambda r: r.log_batch("m", [9, 10], [1 + 1j, 2.0]), T, "values"),
    ("batch-values-2d", lambda r: r.log_batch("m", [9, 10], [[1.0, 2.0]]), V, "values"),
    ("batch-values-short", lambda r: r.log_batch("m", [9, 10], [1.0]), V, "values"),
    ("batch-values-long", lambda r: r.log_batch("m", [9], [1.0, 2.0]), V, "values"),
    ("batch-times-short", lambda r: r.log_batch("m", [9, 10], [1.0, 2.0], times=[1]), V, "times"),
    ("batch-times-float", lambda r: r.log_batch("m", [9, 10], [1.0, 2.0], times=[1.0, 2.0]), T, "times"),
    ("batch-times-str", lambda r: r.log_batch("m", [9, 10], [1.0, 2.0], times=["a", "b"]), T, "times"),
    ("batch-context-str", lambda r: r.log_batch("m", [9], [1.0], context="x"), T, "context"),
    # metadata and status
    ("log-params-str", lambda r: r.log_params("lr=0.1"), T, "params"),
    ("log-params-empty-key", lambda r: r.log_params({"": 1}), V, "params"),
    ("log-params-int-key", lambda r: r.log_params({1: 1}), T, "params"),
    ("log-params-object", lambda r: r.log_params({"a": object()}), T, "params"),
    ("set-tags-list", lambda r: r.set_tags(["x"]), T, "tags"),
    ("set-tags-object", lambda r: r.set_tags({"a": 1 + 2j}), T, "tags"),   # a set is stored as a sorted list
    ("end-status", lambda r: r.end("done"), V, "status"),
    ("end-status-running", lambda r: r.end("running"), V, "status"),
]


@pytest.mark.parametrize("call,base,argument", [pytest.param(*c[1:], id=c[0]) for c in RUN_CASES])
def test_run_rejects_bad_arguments(seeded, call, base, argument):
    store, run = seeded
    before = snapshot(store, run)
    _raises(lambda: call(run), base, argument)
    assert snapshot(store, run) == before
    store.flush()
    assert_unchanged_once_flushed(store, run, before)
    # the run still works after the refusal
    run.log("m", 7.0, step=100)
    assert columns(store.read(run.id, "m", start=100))[0].tolist() == [100]


# -- Store methods ------------------------------------------------------------------

STORE_CASES = [
    ("start-experiment-empty", lambda s, r: s.start_run(experiment=""), V, "experiment"),
    ("start-experiment-int", lambda s, r: s.start_run(experiment=5), T, "experiment"),
    ("start-name-empty", lambda s, r: s.start_run(name=""), V, "name"),
    ("start-name-int", lambda s, r: s.start_run(name=5), T, "name"),
    ("start-params-list", lambda s, r: s.start_run(params=[("lr", 1)]), T, "params"),
    ("start-params-object", lambda s, r: s.start_run(params={"lr": object()}), T, "params"),
    ("start-params-empty-key", lambda s, r: s.start_run(params={"": 1}), V, "params"),
    ("start-tags-str", lambda s, r: s.start_run(tags="x"), T, "tags"),
    ("start-parent-int", lambda s, r: s.start_run(parent=5), T, "parent"),
    ("start-parent-short", lambda s, r: s.start_run(parent="abc"), V, "parent"),
    ("start-parent-not-hex", lambda s, r: s.start_run(parent="g" * 32), V, "parent"),
    ("run-id-int", lambda s, r: s.run(5), T, "run_id"),
    ("run-id-bytes", lambda s, r: s.run(bytes.fromhex(r.id)), T, "run_id"),
    ("run-id-short", lambda s, r: s.run(r.id[:-2]), V, "run_id"),
    ("run-id-not-hex", lambda s, r: s.run("z" * 32), V, "run_id"),
    ("read-run-id-int", lambda s, r: s.read(5, "m"), T, "run_id"),
    ("read-run-id-bad", lambda s, r: s.read("nope", "m"), V, "run_id"),
    ("read-name-empty", lambda s, r: s.read(r.id, ""), V, "name"),
    ("read-name-int", lambda s, r: s.read(r.id, 5), T, "name"),
    ("read-context-str", lambda s, r: s.read(r.id, "m", context="x"), T, "context"),
    ("read-start-float", lambda s, r: s.read(r.id, "m", start=1.5), T, "start"),
    ("read-start-bool", lambda s, r: s.read(r.id, "m", start=False), T, "start"),
    ("read-stop-str", lambda s, r: s.read(r.id, "m", stop="9"), T, "stop"),
    ("read-start-too-big", lambda s, r: s.read(r.id, "m", start=2**63), V, "start"),
    ("read-stop-too-small", lambda s, r: s.read(r.id, "m", stop=-(2**63) - 1), V, "stop"),
    ("metrics-run-id-int", lambda s, r: s.metrics(5), T, "run_id"),
    ("metrics-run-id-bad", lambda s, r: s.metrics("zz"), V, "run_id"),
]


@pytest.mark.parametrize("call,base,argument", [pytest.param(*c[1:], id=c[0]) for c in STORE_CASES])
def test_store_rejects_bad_arguments(seeded, call, base, argument):
    store, run = seeded
    before = snapshot(store, run)
    _raises(lambda: call(store, run), base, argument)
    assert snapshot(store, run) == before


def test_unknown_parent_creates_no_run(seeded):
    store, run = seeded
    before = snapshot(store, run)
    with pytest.raises(steplog.NotFoundError):
        store.start_run(experiment="other", parent="0" * 32)
    assert snapshot(store, run) == before


OPEN_CASES = [
    ("path-int", dict(path=5), T, "path"),
    ("path-none", dict(path=None), T, "path"),
    ("durability-unknown", dict(durability="sometimes"), V, "durability"),
    ("durability-none", dict(durability=None), V, "durability"),
    ("durability-upper", dict(durability="FSYNC"), V, "durability"),
    ("block-points-zero", dict(block_points=0), V, "block_points"),
    ("block-points-negative", dict(block_points=-64), V, "block_points"),
    ("block-points-float", dict(block_points=64.0), (T, V), "block_points"),
    ("block-points-bool", dict(block_points=True), (T, V), "block_points"),
    ("budget-zero", dict(budget_bytes=0), V, "budget_bytes"),
    ("budget-str", dict(budget_bytes="64M"), (T, V), "budget_bytes"),
    ("flush-interval-zero", dict(flush_interval=0), V, "flush_interval"),
    ("flush-interval-negative", dict(flush_interval=-1.0), V, "flush_interval"),
    ("flush-interval-str", dict(flush_interval="5"), (T, V), "flush_interval"),
    ("flush-interval-nan", dict(flush_interval=float("nan")), V, "flush_interval"),
]


@pytest.mark.parametrize("kwargs,base,argument", [pytest.param(*c[1:], id=c[0]) for c in OPEN_CASES])
def test_open_rejects_bad_arguments(tmp_path, kwargs, base, argument):
    kwargs = dict(kwargs)
    target = tmp_path / "never"
    path = kwargs.pop("path", target)
    with pytest.raises(steplog.StepLogError) as info:
        store = steplog.open(path, **kwargs)
        store.close()
    check_error(info, base, argument)
    assert not target.exists()


@pytest.mark.parametrize("flush_interval", [1e-3, 1e10, float("inf")])
def test_open_accepts_extreme_flush_intervals(open_store, flush_interval):
    store = open_store(flush_interval=flush_interval)
    run = store.start_run()
    run.log("m", 1.0, step=0)
    store.flush()
    store.close()
    assert_points(open_store().read(run.id, "m"), [0], [1.0])


# -- odd names ----------------------------------------------------------------------

# names with NUL, line breaks, only blanks or past MAX_NAME_CHARS are refused: test_limits.py
ODD_NAMES = ["a/b", "/etc/passwd", "../../escape", "..", ".", "tab\there", " padded ", "ünïcødé 📈 中文 \u200b",
             "\u0301\u0301", "a\\b", "*?<>|:\"", "COM1", "index", "segments", "0000000000000001.seg", "z" * 250]


def test_odd_names_work_and_create_no_files(open_store, store_path, tmp_path):
    store = open_store()
    warmup = store.start_run()
    warmup.log("warmup", 1.0)
    store.flush()  # the segment file exists from here on
    inside, beside = list_tree(store_path), sorted(os.listdir(tmp_path))

    metric_run = store.start_run(experiment="odd metric names")
    for i, name in enumerate(ODD_NAMES):
        metric_run.log(name, float(i), step=0)
        metric_run.log({name: float(i) + 0.5}, step=1)
        metric_run.log_batch(name, [2], [float(i) + 0.25], context={name: name})
    runs = [store.start_run(experiment=name, name=name, params={name: i}, tags={name: name})
            for i, name in enumerate(ODD_NAMES)]
    for run in runs:
        run.log("m", 1.0)
        run.end()
    store.flush()
    assert list_tree(store_path) == inside
    assert sorted(os.listdir(tmp_path)) == beside

    def check(s):
        for i, name in enumerate(ODD_NAMES):
            assert_points(s.read(metric_run.id, name), [0, 1], [float(i), float(i) + 0.5])
            assert_points(s.read(metric_run.id, name, context={name: name}), [2], [float(i) + 0.25])
        series = s.metrics(metric_run.id).to_pylist()
        assert sorted((r["metric"], r["context"] is None) for r in series) == \
            sorted([(n, True) for n in ODD_NAMES] + [(n, False) for n in ODD_NAMES])
        rows = {r["id"]: r for r in s.runs().to_pylist()}
        for run, name in zip(runs, ODD_NAMES):
            assert (rows[run.id]["experiment"], rows[run.id]["name"]) == (name, name)
            assert_points(s.read(run.id, "m"), [0], [1.0])

    check(store)
    store.close()
    check(open_store())
    assert list_tree(store_path) == inside


@pytest.mark.parametrize("where", ["metric", "experiment", "run_name"])
def test_lone_surrogate_name_is_refused_or_fully_supported(store, where):
    # "\udc80" is a str but not encodable text: refuse it up front, or store it so that
    # every listing still works
    odd = "bad\udc80name"
    try:
        if where == "metric":
            run = store.start_run()
            run.log(odd, 1.0, step=0)
        else:
            run = store.start_run(**{"experiment" if where == "experiment" else "name": odd})
            run.log("m", 1.0, step=0)
    except steplog.StepLogError as error:
        assert isinstance(error, ValueError)
        assert ("name" if where != "experiment" else "experiment") in str(error)
        return
    store.flush()
    if where == "metric":
        assert_points(store.read(run.id, odd), [0], [1.0])
        assert store.metrics(run.id).column("metric").to_pylist() == [odd]
    else:
        row = [r for r in store.runs().to_pylist() if r["id"] == run.id][0]
        assert row["experiment" if where == "experiment" else "name"] == odd


# -- numpy scalars ------------------------------------------------------------------

INT_SCALARS = [np.int8(-7), np.int16(300), np.int32(-70000), np.int64(INT64_MIN), np.int64(INT64_MAX),
               np.uint8(200), np.uint16(60000), np.uint32(4_000_000_000), np.uint64(2**63 - 2)]
FLOAT_SCALARS = [np.float16(0.1), np.float32(0.1), np.float64(0.1), np.float32("nan"), np.float64("-inf"),
                 np.float32(-0.0), np.longdouble(0.25), np.int64(3), np.uint8(7), np.array(2.5), 5]


def test_numpy_integer_steps_work(store):
    run = store.start_run()
    for i, step in enumerate(INT_SCALARS):
        run.log("m", float(i), step=step)
        run.log({"d": float(i)}, step=step)
    run.log_batch("b", np.array([1, 2], np.int16), [1.0, 2.0])
    run.log_batch("b", np.array([3, 4], np.uint32), [3.0, 4.0])
    want_steps = [int(s) for s in INT_SCALARS]
    for phase in range(2):
        assert_points(store.read(run.id, "m"), want_steps, np.arange(len(INT_SCALARS), dtype=float))
        assert_points(store.read(run.id, "d"), want_steps, np.arange(len(INT_SCALARS), dtype=float))
        assert_points(store.read(run.id, "b"), [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0])
        assert_points(store.read(run.id, "m", start=np.int32(-7), stop=np.uint16(301)), want_steps,
                      np.arange(len(INT_SCALARS), dtype=float), start=-7, stop=301)
        store.flush()


def test_numpy_float_values_work(store):
    run = store.start_run()
    for i, value in enumerate(FLOAT_SCALARS):
        run.log("m", value, step=i)
        run.log({"d": value}, step=i)
    run.log_batch("b", [0, 1, 2], np.array([0.5, np.nan, 1e30], np.float32))
    run.log_batch("i", [0, 1], np.array([2**53 + 1, -3], np.int64))
    want = np.array([np.float64(np.asarray(v)) for v in FLOAT_SCALARS])
    for phase in range(2):
        assert_points(store.read(run.id, "m"), np.arange(len(FLOAT_SCALARS)), want)
        assert_points(store.read(run.id, "d"), np.arange(len(FLOAT_SCALARS)), want)
        assert_points(store.read(run.id, "b"), [0, 1, 2], np.array([0.5, np.nan, 1e30], np.float32).astype(np.float64))
        assert_points(store.read(run.id, "i"), [0, 1], np.array([2**53 + 1, -3], np.int64).astype(np.float64))
        store.flush()


def test_empty_batches_are_no_ops(store):
    run = store.start_run()
    run.log_batch("m", [], [])
    run.log_batch("m", np.array([], np.int64), np.array([]), times=[])
    run.log("m", 1.0)
    assert_points(store.read(run.id, "m"), [0], [1.0])


# -- step=None at the end of int64 ---------------------------------------------------

@pytest.mark.parametrize("how", ["log", "dict", "batch"])
def test_step_none_after_int64_max_is_refused(store, how):
    run = store.start_run()
    if how == "batch":
        run.log_batch("m", [INT64_MAX], [1.0])
    else:
        run.log("m", 1.0, step=INT64_MAX)
    with pytest.raises(steplog.StepLogError) as info:
        if how == "dict":
            run.log({"m": 2.0})
        else:
            run.log("m", 2.0)
    check_error(info, ValueError, "step")
    assert_points(store.read(run.id, "m"), [INT64_MAX], [1.0])
    store.flush()   # the store keeps working
    assert_points(store.read(run.id, "m"), [INT64_MAX], [1.0])


# -- ended runs and closed stores ------------------------------------------------------

ENDED_CALLS = [
    ("log", lambda r: r.log("m", 9.0, step=9)),
    ("log-step-none", lambda r: r.log("m", 9.0)),
    ("log-new-series", lambda r: r.log("new", 9.0, step=9)),
    ("log-dict", lambda r: r.log({"m": 9.0, "n": 9.0}, step=9)),
    ("log-batch", lambda r: r.log_batch("m", [9], [9.0])),
    ("log-batch-new-series", lambda r: r.log_batch("new", [9], [9.0])),
]


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in ENDED_CALLS])
def test_log_after_end_raises_closed(seeded, call):
    store, run = seeded
    run.end()
    before = snapshot(store, run)
    with pytest.raises(steplog.ClosedError) as info:
        call(run)
    assert isinstance(info.value, steplog.StepLogError)
    assert isinstance(info.value, RuntimeError)
    assert snapshot(store, run) == before
    run.end()  # a second end is a no-op
    assert snapshot(store, run) == before
    resumed = store.run(run.id)  # resuming makes logging possible again
    resumed.log("m", 9.0, step=9)
    assert columns(store.read(run.id, "m", start=9))[0].tolist() == [9]


CLOSED_CALLS = ENDED_CALLS + [
    ("log-params", lambda r: r.log_params({"x": 1})),
    ("set-tags", lambda r: r.set_tags({"x": 1})),
    ("run-flush", lambda r: r.flush()),
    ("end", lambda r: r.end()),
    ("store-read", lambda r: r._store.read(r.id, "m")),
    ("store-metrics", lambda r: r._store.metrics(r.id)),
    ("store-runs", lambda r: r._store.runs()),
    ("store-start-run", lambda r: r._store.start_run()),
    ("store-run", lambda r: r._store.run(r.id)),
    ("store-flush", lambda r: r._store.flush()),
]


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in CLOSED_CALLS])
def test_operations_after_close_raise_closed(seeded, open_store, call):
    store, run = seeded
    before = snapshot(store, run)
    store.close()
    store.close()  # closing twice is fine
    with pytest.raises(steplog.ClosedError):
        call(run)
    assert_unchanged_once_flushed(open_store(), run, before)
