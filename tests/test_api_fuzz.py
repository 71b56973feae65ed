"""Random sequences of public calls with random, often wrong, arguments.

Every call either succeeds or raises a steplog error of the documented kind: a
StepLogError that is also a TypeError or ValueError for a bad argument, ClosedError
for a closed store or an ended run, NotFoundError for an unknown run. The store stays
readable and holds exactly the points of the calls that succeeded (a dict-of-lists
model), also after it is closed and opened again.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import steplog

from _helpers import bits, columns, fbits

# -- argument strategies -------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["m", "loss", "a/b", "..", "../../etc/passwd", "a\x00b", "line\nbreak", "tab\tx", " ",
                     "ünïcødé", "指标", "🙂", "x" * 3000, "", "\ud800", "CON", ".", "m "]),
    st.text(max_size=12),
    st.sampled_from([None, 3, 2.5, b"m", ["m"], ("m",), np.str_("m")]),
)
GOOD_NAMES = st.sampled_from(["m", "loss", "a/b", "..", "a\tb", "指标", "x" * 250])   # within the name limits
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([np.float32(1.5), np.float16(-2.0), np.int64(-7), np.uint8(200), np.bool_(True), True,
                     np.float64("nan"), np.array(2.5), np.array([1.0, 2.0]), Fraction(1, 3), complex(1, 2),
                     "1.0", "nan", b"1", None, [1.0], {}, float("-0.0"), Decimal("0.1"), Decimal("sNaN"),
                     np.array([[3.5]]), np.longdouble("1e4000"), np.datetime64(1, "ns")]),
)
STEPS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-5, max_value=50),
    st.sampled_from([1.0, 2.5, float("nan"), "3", np.int64(4), np.int32(-2), np.uint64(2**63 + 5), np.uint64(6),
                     True, np.float64(3.0), [1], b"1"]),
)
CONTEXTS = st.one_of(
    st.none(),
    st.sampled_from([{}, {"rank": 0}, {"rank": 1}, {"rank": 0.0}, {"rank": True}, {"k": "v"}, {"k": None},
                     {"k": float("nan")}, {"a": 1, "b": "x"}, {"b": "x", "a": 1}, {1: 2}, {"k": [1]}, {"k": {}},
                     {"\ud800": 1}, {"k": "\ud800"}, "rank", ["rank"], 0, {"rank": np.int64(0)}, {"rank": np.bool_(True)},
                     {"k": np.str_("v")}, {"k": np.array([1, 2])}, {"k": "v" * 300}, {" ": 1}]),
)
ARRAYS = st.one_of(
    st.lists(st.integers(min_value=-1000, max_value=1000), max_size=150),
    st.lists(st.floats(allow_nan=True), max_size=20),
    st.sampled_from([[], [1, 2, 3], [1.5, 2.5], ["a", "b"], [[1, 2]], np.arange(300), np.arange(5, dtype=np.uint64),
                     np.array([2**63 + 1], dtype=np.uint64), np.arange(3, dtype=np.int8), np.ones(3, bool),
                     np.arange(3.0), np.zeros((2, 2)), 5, "123", None, [None, 1], np.array(["1", "2"]),
                     np.array([1 + 2j])]),
)
RUN_IDS = st.one_of(st.sampled_from(["0" * 32, "z" * 32, "abc", "", "0" * 31, "0" * 33, "G" * 32]),
                    st.sampled_from([None, 5, b"0" * 16]))
STATUSES = st.sampled_from(["finished", "failed", "killed", "running", "crashed", "", None, 1])
MAPPINGS = st.one_of(st.none(), st.sampled_from([{}, {"lr": 0.1}, {"nested": {"depth": 2}}, {"": 1}, {1: 2},
                                                 {"x": object()}, {"x": float("nan")}, {"x": "\ud800"},
                                                 {"x": [1, {"y": None}]}, "lr=0.1", [("lr", 1)],
                                                 {"x": np.int64(3), "s": {2, 1}}, {"a.b": 1, "a": {"b": 2}},
                                                 {"x": "y" * 9000}, {"x\n": 1}]))

GOOD_BATCH = st.integers(0, 300).flatmap(lambda n: st.tuples(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n)))
SOME_RUN = st.integers(0, 10)

ARGS = {
    "start_run": st.tuples(st.one_of(st.just("default"), GOOD_NAMES, NAMES), st.one_of(st.none(), GOOD_NAMES, NAMES),
                           MAPPINGS, MAPPINGS),
    "resume": st.tuples(SOME_RUN, RUN_IDS, st.booleans()),
    "log": st.tuples(SOME_RUN, st.one_of(GOOD_NAMES, NAMES), VALUES, STEPS, CONTEXTS),
    "log_good": st.tuples(SOME_RUN, GOOD_NAMES, st.floats(allow_nan=True), st.one_of(st.none(), st.integers(-9, 99)),
                          st.sampled_from([None, {}, {"rank": 0}, {"rank": 1}])),
    "log_dict": st.tuples(SOME_RUN, st.dictionaries(st.one_of(GOOD_NAMES, NAMES.filter(lambda n: isinstance(n, str))),
                                                    VALUES, max_size=3),
                          st.one_of(st.none(), VALUES), STEPS, CONTEXTS),
    "log_dict_good": st.tuples(SOME_RUN, st.dictionaries(GOOD_NAMES, st.floats(allow_nan=True), max_size=3),
                               st.none(), st.one_of(st.none(), st.integers(-9, 99)), st.sampled_from([None, {"rank": 0}])),
    "log_batch": st.tuples(SOME_RUN, st.one_of(GOOD_NAMES, NAMES), ARRAYS, ARRAYS, st.one_of(st.none(), ARRAYS),
                           CONTEXTS),
    "log_batch_good": st.tuples(SOME_RUN, GOOD_NAMES, GOOD_BATCH, st.sampled_from([None, {"rank": 1}])),
    "end": st.tuples(SOME_RUN, STATUSES),
    "params": st.tuples(SOME_RUN, MAPPINGS),
    "read": st.tuples(SOME_RUN, st.one_of(GOOD_NAMES, NAMES), CONTEXTS, st.one_of(st.none(), STEPS),
                      st.one_of(st.none(), STEPS)),
    "read_junk_run": st.tuples(RUN_IDS, NAMES),
    "metrics": st.tuples(SOME_RUN),
    "flush": st.tuples(),
    "runs": st.tuples(),
    "close": st.tuples(),
    "reopen": st.tuples(),
}
WEIGHTS = {"log": 4, "log_good": 6, "log_dict": 2, "log_dict_good": 3, "log_batch": 3, "log_batch_good": 4,
           "start_run": 2, "resume": 2, "read": 3, "flush": 2}
KINDS = [kind for kind in ARGS for _ in range(WEIGHTS.get(kind, 1))]
OPS = st.sampled_from(KINDS).flatmap(lambda kind: ARGS[kind].map(lambda args: (kind, *args)))


# -- the model -------------------------------------------------------------------------------

def context_key(context) -> str:
    """The documented identity of a context: canonical JSON of the plain values (numpy
    scalars as the Python value), '' for none or empty."""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), default=lambda v: v.item()) if context else ""


def as_float(value) -> float:
    if isinstance(value, np.ndarray):
        value = value.reshape(())[()]   # a logged array holds one element
    return float(value)


class Model:
    def __init__(self):
        self.points: dict[tuple, list] = {}   # (run_id, name, context key) -> [(step or None, value bits)]
        self.runs: list[str] = []             # run ids, in creation order

    def add(self, run_id, name, context, steps, values) -> None:
        series = self.points.setdefault((run_id, name, context_key(context)), [])
        for step, value in zip(steps, values):
            series.append((None if step is None else int(step), fbits(value)))


ALLOWED = (steplog.ClosedError, steplog.NotFoundError)


def check_error(exc: BaseException, op) -> None:
    assert isinstance(exc, steplog.StepLogError), f"{op!r} raised {type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert isinstance(exc, (TypeError, ValueError) + ALLOWED), \
        f"{op!r} raised {type(exc).__name__}, which is neither a TypeError/ValueError nor Closed/NotFound: {exc}"


def check_series(store, model: Model, key) -> None:
    run_id, name, ctx = key
    context = json.loads(ctx) if ctx else None
    want = model.points.get(key, [])
    steps, _, values = columns(store.read(run_id, name, context=context, missing_ok=not want))
    assert np.all(np.diff(steps) >= 0), f"{key}: not sorted by step"
    got = sorted(zip(steps.tolist(), bits(values).tolist()))
    known = sorted((s, b) for s, b in want if s is not None)
    unknown = sorted(b for s, b in want if s is None)
    assert len(got) == len(want), f"{key[1]!r}: {len(got)} points read, {len(want)} logged"
    rest = list(got)
    for point in known:
        assert point in rest, f"{key[1]!r}: logged point {point} missing"
        rest.remove(point)
    assert sorted(b for _, b in rest) == unknown, f"{key[1]!r}: values logged with step=None differ"


def check_store(store, model: Model) -> None:
    table = store.runs()
    assert sorted(table.column("id").to_pylist()) == sorted(model.runs)
    for key in model.points:
        check_series(store, model, key)
    for run_id in model.runs:
        counts = {(m["metric"], m["context"] or ""): m["count"] for m in store.metrics(run_id).to_pylist()}
        for (rid, name, ctx), points in model.points.items():
            if rid == run_id and points:
                assert counts.get((name, ctx)) == len(points), f"metrics of {name!r}: {counts.get((name, ctx))}"


# -- the test --------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(OPS, min_size=1, max_size=40))
def test_random_public_calls_fail_cleanly_and_keep_the_store_consistent(ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = tmp + "/store.steplog"
        model = Model()
        store = steplog.open(path, block_points=64, flush_interval=None)
        first = store.start_run(experiment="fuzz")
        model.runs.append(first.id)
        handles: list = [first]   # Run objects, old ones included (they may belong to a closed store)
        try:
            for op in ops:
                store, handles = apply(op, store, handles, model, path)
            store.close()
            store = steplog.open(path, block_points=64, flush_interval=None)
            check_store(store, model)
        finally:
            store.close()


def pick(handles, i):
    return handles[i % len(handles)] if handles else None


def apply(op, store, handles, model: Model, path):
    """Run one op; library exceptions are checked, model updates happen only after success."""
    kind = op[0]
    updates = []      # (run_id, name, context, steps, values) to add once the call returned
    try:
        if kind == "start_run":
            _, experiment, name, params, tags = op
            run = store.start_run(experiment=experiment, name=name, params=params, tags=tags)
            model.runs.append(run.id)
            handles.append(run)
        elif kind == "resume":
            _, i, junk, use_junk = op
            if use_junk or not model.runs:
                store.run(junk)
                raise AssertionError(f"store.run({junk!r}) succeeded")
            handles.append(store.run(model.runs[i % len(model.runs)]))
        elif kind in ("log", "log_good"):
            _, i, name, value, step, context = op
            run = pick(handles, i)
            if run is not None:
                run.log(name, value, step=step, context=context)
                updates.append((run.id, name, context, [step], [value]))
        elif kind in ("log_dict", "log_dict_good"):
            _, i, metrics, value, step, context = op
            run = pick(handles, i)
            if run is not None:
                run.log(metrics, value, step=step, context=context)
                updates.extend((run.id, name, context, [step], [v]) for name, v in metrics.items())
        elif kind in ("log_batch", "log_batch_good"):
            if kind == "log_batch":
                _, i, name, steps, values, times, context = op
            else:
                _, i, name, (steps, values), context = op
                times = None
            run = pick(handles, i)
            if run is not None:
                run.log_batch(name, steps, values, times=times, context=context)
                updates.append((run.id, name, context, np.asarray(steps).astype(np.int64).tolist(),
                                np.asarray(values).astype(np.float64).tolist()))
        elif kind == "end":
            _, i, status = op
            run = pick(handles, i)
            if run is not None:
                run.end(status)
        elif kind == "params":
            _, i, mapping = op
            run = pick(handles, i)
            if run is not None:
                run.log_params(mapping)
                run.set_tags(mapping)
        elif kind == "read":
            _, i, name, context, start, stop = op
            run_id = model.runs[i % len(model.runs)] if model.runs else "0" * 32
            try:
                table = store.read(run_id, name, context=context, start=start, stop=stop)
            except steplog.NotFoundError:   # a series never logged to; a missing run has its own error
                assert not model.points.get((run_id, name, context_key(context)))
                raise
            steps, _, values = columns(table)
            assert np.all(np.diff(steps) >= 0)
            assert len(steps) <= len(model.points.get((run_id, name, context_key(context)), []))
            if start is None and stop is None and isinstance(name, str):
                check_series(store, model, (run_id, name, context_key(context)))
        elif kind == "read_junk_run":
            _, run_id, name = op
            store.read(run_id, name)
            raise AssertionError(f"read of run {run_id!r} succeeded")
        elif kind == "metrics":
            run_id = model.runs[op[1] % len(model.runs)] if model.runs else "f" * 32
            store.metrics(run_id)
        elif kind == "flush":
            store.flush()
        elif kind == "runs":
            assert sorted(store.runs().column("id").to_pylist()) == sorted(model.runs)
        elif kind == "close":
            store.close()
        elif kind == "reopen":
            store.close()
            store = steplog.open(path, block_points=64, flush_interval=None)
            check_store(store, model)
        event(f"{kind}: ok")
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - every exception is checked here
        event(f"{kind}: {type(exc).__name__}")
        check_error(exc, op)
        return store, handles
    for run_id, name, context, steps, values in updates:
        model.add(run_id, name, context, steps, [as_float(v) for v in values])
    return store, handles


def test_auto_step_continues_after_explicit_steps_across_log_styles(open_store):
    """step=None is the series' last step + 1 whichever way the points were logged."""
    store = open_store()
    run = store.start_run()
    run.log("a", 1.0)                    # 0
    run.log({"a": 2.0, "b": 0.5})        # a: 1, b: 0
    run.log_batch("a", [10, 11], [3.0, 4.0])
    run.log("a", 5.0)                    # 12
    run.log("a", 6.0, context={})        # {} is no context: 13
    store.flush()
    assert columns(store.read(run.id, "a"))[0].tolist() == [0, 1, 10, 11, 12, 13]
    assert columns(store.read(run.id, "b"))[0].tolist() == [0]
