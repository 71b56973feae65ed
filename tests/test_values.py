"""What Run.log, log_batch, contexts and params accept, and what each becomes.

One rule for scalars: a Python number, a numpy scalar, or an array or tensor with
exactly one element (any shape, as TensorBoard's add_scalar squeezes it). Values are
real scalars, bools or objects with __float__; steps integer scalars only; context
values str, int, float, bool or None scalars, stored as the plain JSON value. Params and
tags become plain JSON by a documented conversion. torch, jax and pandas are used when
installed; FakeTensor stands for them otherwise (it has what steplog may use of a
tensor: shape, a dtype without numpy's kind, item(), __float__, __index__, __array__).
"""

from __future__ import annotations

import datetime as dt
import enum
import importlib.util
import json
import pathlib
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import steplog
from steplog import _args

from _helpers import assert_points, columns

T, V = TypeError, ValueError


class FakeTensor:
    """A torch-like tensor: its dtype is not a numpy dtype, float() and int() need one element."""

    def __init__(self, data, dtype=None):
        self._array = np.asarray(data, dtype)
        self.dtype = f"fake.{self._array.dtype}"
        self.shape = self._array.shape

    def item(self):
        if self._array.size != 1:
            raise RuntimeError("a Tensor with more than one value cannot be converted to a scalar")
        return self._array.item()

    def __float__(self):
        return float(self.item())

    def __index__(self):
        if self._array.dtype.kind not in "iu":
            raise TypeError("only integer tensors can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (FakeTensor(x) for x in self._array)


class HasFloat:
    """A user's number type: only __float__."""

    def __float__(self):
        return 0.75


def _skip_unless(module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    return pytest.importorskip(module)


def _rows(store, run, name) -> int:
    """Points a read finds; a series never created reads as none (or raises NotFoundError)."""
    try:
        return store.read(run.id, name).num_rows
    except steplog.NotFoundError:
        return 0


def _error(call, base, argument):
    with pytest.raises(steplog.StepLogError) as info:
        call()
    assert isinstance(info.value, base), type(info.value).__mro__
    assert argument in str(info.value), str(info.value)
    return info.value


# -- values --------------------------------------------------------------------------

VALUES = [
    (np.float64(0.1), 0.1), (np.float32(0.1), float(np.float32(0.1))), (np.float16(0.1), float(np.float16(0.1))),
    (np.longdouble(0.25), 0.25), (np.int8(-8), -8.0), (np.int16(-16), -16.0), (np.int32(-32), -32.0),
    (np.int64(-64), -64.0), (np.uint8(8), 8.0), (np.uint16(16), 16.0), (np.uint32(32), 32.0),
    (np.uint64(2**64 - 1), float(2**64 - 1)), (np.bool_(True), 1.0), (np.bool_(False), 0.0),
    (True, 1.0), (False, 0.0), (7, 7.0), (Decimal("0.1"), 0.1), (Decimal("-Infinity"), float("-inf")),
    (Decimal("NaN"), float("nan")), (Fraction(1, 3), 1 / 3), (HasFloat(), 0.75),
    (np.array(2.5), 2.5), (np.array([2.5]), 2.5), (np.array([[2.5]], np.float32), 2.5), (np.array(3, np.int8), 3.0),
    (np.array(Decimal("0.5"), dtype=object), 0.5),
    (FakeTensor(1.5), 1.5), (FakeTensor([1.5]), 1.5), (FakeTensor(4, np.int64), 4.0), (FakeTensor(True), 1.0),
    (float("nan"), float("nan")), (np.float64("-inf"), float("-inf")),
]


@pytest.mark.parametrize("value,want", VALUES, ids=[f"{type(v).__name__}-{i}" for i, (v, _) in enumerate(VALUES)])
def test_scalar_kinds_are_logged_as_float64(store, value, want):
    run = store.start_run()
    run.log("m", value, step=0)
    run.log({"d": value, "e": 1.0}, step=0)
    run.log_batch("b", [0], [value])
    for phase in range(2):
        for name in ("m", "d", "b"):
            assert_points(store.read(run.id, name), [0], [want])
        store.flush()


REFUSED_VALUES = [
    ("str", "0.5", T), ("str-nan", "nan", T), ("np-str", np.str_("1"), T), ("bytes", b"1", T), ("none", None, T),
    ("complex", 1 + 2j, T), ("np-complex", np.complex64(1), T), ("complex-array", np.array([1j]), T),
    ("list", [1.0], T), ("tuple", (1.0,), T), ("two-elements", np.array([1.0, 2.0]), T),
    ("empty-array", np.array([]), T), ("tensor-two-elements", FakeTensor([1.0, 2.0]), T),
    ("str-array", np.array("0.5"), T), ("datetime64", np.datetime64(5, "ns"), T),
    ("timedelta64", np.timedelta64(5), T), ("datetime", dt.datetime(2020, 1, 1), T), ("object", object(), T),
    ("decimal-snan", Decimal("sNaN"), V), ("decimal-too-big", Decimal("1e400"), V), ("int-too-big", 10**400, V),
    ("fraction-too-big", Fraction(10**400), V), ("longdouble-too-big", np.longdouble("1e4000"), V),
]


@pytest.mark.parametrize("value,base", [pytest.param(*c[1:], id=c[0]) for c in REFUSED_VALUES])
def test_values_that_are_not_real_scalars_are_refused(store, value, base):
    run = store.start_run()
    _error(lambda: run.log("m", value, step=0), base, "value")
    _error(lambda: run.log({"n": 1.0, "d": value}, step=0), base, "value of 'd'")
    store.flush()
    assert _rows(store, run, "m") == 0
    assert _rows(store, run, "n") == 0   # log(dict) checks every value before it appends any


def test_real_torch_and_jax_scalars_are_values(store):
    run = store.start_run()
    logged = 0
    for module in ("torch", "jax.numpy"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            print(f"{module} is not installed: its scalars are not checked here")
            continue
        lib = pytest.importorskip(module)
        for value in (lib.asarray(0.5) if module != "torch" else lib.tensor(0.5),
                      lib.asarray([0.5]) if module != "torch" else lib.tensor([0.5], requires_grad=True)):
            run.log("m", value, step=logged)
            logged += 1
    if not logged:
        pytest.skip("neither torch nor jax is installed")
    assert_points(store.read(run.id, "m"), list(range(logged)), [0.5] * logged)


# -- steps ---------------------------------------------------------------------------

STEPS = [np.int8(-8), np.int16(16), np.int32(-32), np.int64(64), np.uint8(8), np.uint16(16), np.uint32(32),
         np.uint64(2**63 - 1), np.array(5), np.array([6], np.int32), FakeTensor(7, np.int64), FakeTensor([8], np.uint8)]


@pytest.mark.parametrize("step", STEPS, ids=[f"{type(s).__name__}-{i}" for i, s in enumerate(STEPS)])
def test_integer_scalars_are_steps(store, step):
    run = store.start_run()
    run.log("m", 1.0, step=step)
    run.log({"d": 1.0}, step=step)
    run.log_tensor("t", np.ones(3), step=step)
    want = int(np.asarray(step).reshape(()))
    for name in ("m", "d"):
        assert columns(store.read(run.id, name))[0].tolist() == [want]
    assert store.read_tensor(run.id, "t").column("step").to_pylist() == [want]
    assert columns(store.read(run.id, "m", start=step))[0].tolist() == [want]   # a bound is a step too


REFUSED_STEPS = [
    ("integral-float", 3.0, T), ("np-integral-float", np.float64(3.0), T), ("fraction-float", 1.5, T),
    ("float-array", np.array(3.0), T), ("float-tensor", FakeTensor(3.0), T), ("bool", True, T),
    ("np-bool", np.bool_(False), T), ("bool-tensor", FakeTensor(True), T), ("decimal", Decimal(3), T),
    ("str", "3", T), ("two-elements", np.array([1, 2]), T), ("timedelta64", np.timedelta64(3), T),
    ("too-big-array", np.array([2**63], np.uint64), V),
]


@pytest.mark.parametrize("step,base", [pytest.param(*c[1:], id=c[0]) for c in REFUSED_STEPS])
def test_non_integer_steps_are_refused(store, step, base):
    run = store.start_run()
    _error(lambda: run.log("m", 1.0, step=step), base, "step")
    _error(lambda: run.log({"m": 1.0}, step=step), base, "step")
    assert _rows(store, run, "m") == 0


def test_integral_float_step_error_says_what_to_do(store):
    error = _error(lambda: store.start_run().log("m", 1.0, step=3.0), T, "step")
    assert "int(step)" in str(error)


# -- contexts ------------------------------------------------------------------------

@pytest.mark.parametrize("numpy_context,plain_context", [
    ({"rank": np.int64(3)}, {"rank": 3}),
    ({"rank": np.uint8(3), "subset": np.str_("val")}, {"rank": 3, "subset": "val"}),
    ({"flag": np.bool_(True)}, {"flag": True}),
    ({"lr": np.float32(0.5)}, {"lr": 0.5}),
    ({"rank": np.array(3)}, {"rank": 3}),
    ({np.str_("rank"): FakeTensor(2, np.int64)}, {"rank": 2}),
], ids=["int64", "uint8-str", "bool", "float32", "0d-array", "tensor"])
def test_numpy_context_values_are_the_plain_series(store, numpy_context, plain_context):
    run = store.start_run()
    run.log("m", 1.0, step=0, context=numpy_context)
    run.log("m", 2.0, step=1, context=plain_context)
    run.log("m", 3.0, context=numpy_context)   # step=None continues the one series
    run.log_batch("m", [5], [4.0], context=numpy_context)
    for phase in range(2):
        for context in (numpy_context, plain_context):
            assert_points(store.read(run.id, "m", context=context), [0, 1, 2, 5], [1.0, 2.0, 3.0, 4.0])
        store.flush()
    listed = store.metrics(run.id).to_pylist()
    assert [(r["metric"], json.loads(r["context"]), r["count"]) for r in listed] == [("m", plain_context, 4)]


@pytest.mark.parametrize("value", [[1], (1,), {"x": 1}, 1j, np.complex64(1), np.datetime64(1, "s"), b"x",
                                   np.array([1, 2]), object()])
def test_context_values_that_are_not_scalars_are_refused(store, value):
    run = store.start_run()
    _error(lambda: run.log("m", 1.0, step=0, context={"k": value}), T, 'context["k"]')
    assert store.metrics(run.id).num_rows == 0


# -- log_batch columns ---------------------------------------------------------------

def _generator(values):
    yield from values


COLUMNS = [
    ("list", lambda v: list(v)), ("tuple", lambda v: tuple(v)), ("generator", _generator),
    ("map", lambda v: map(lambda x: x, v)), ("array", np.array), ("fake-tensor", FakeTensor),
    ("list-of-0d-tensors", lambda v: [FakeTensor(x) for x in v]),
    ("list-of-numpy-scalars", lambda v: [np.asarray(x)[()] for x in v]),
]


@pytest.mark.parametrize("make", [pytest.param(c[1], id=c[0]) for c in COLUMNS])
def test_log_batch_takes_any_iterable(store, make):
    run = store.start_run()
    steps, values, times = [3, 1, 2], [0.5, float("nan"), -1.0], [30, 10, 20]
    run.log_batch("m", make(steps), make(values), times=make(times))
    assert_points(store.read(run.id, "m"), steps, values, times)
    store.flush()
    assert_points(store.read(run.id, "m"), steps, values, times)


def test_log_batch_values_of_mixed_scalar_kinds(store):
    run = store.start_run()
    run.log_batch("m", [0, 1, 2, 3, 4], [Decimal("0.5"), Fraction(1, 4), np.float32(2), True, HasFloat()])
    assert_points(store.read(run.id, "m"), [0, 1, 2, 3, 4], [0.5, 0.25, 2.0, 1.0, 0.75])


@pytest.mark.parametrize("steps,values,argument,base", [
    ({3, 1, 2}, [1.0, 2.0, 3.0], "steps", T),          # a set has no order
    ([0, 1], {"a": 1.0, "b": 2.0}, "values", T),
    ([0, 1, 2], [1.0, "2", 3.0], "values", T),
    ([0, 1, 2], [1.0, 2.0, 1j], "values", T),
    ([0, 2**64, 1], [1.0, 2.0, 3.0], "steps[1]", V),
    ([0, None, 1], [1.0, 2.0, 3.0], "steps[1]", T),
    ([0, 1.0, 2], [1.0, 2.0, 3.0], "steps", T),
    (_generator([0, 1]), _generator([1.0, 2.0, 3.0]), "values", V),
])
def test_log_batch_refuses_columns_that_do_not_fit(store, steps, values, argument, base):
    run = store.start_run()
    _error(lambda: run.log_batch("m", steps, values), base, argument)
    assert _rows(store, run, "m") == 0


def test_log_batch_takes_pandas_series(store):
    pd = _skip_unless("pandas")
    run = store.start_run()
    run.log_batch("m", pd.Series([1, 2]), pd.Series([0.5, 1.5], dtype="float32"),
                  times=pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02"])))
    day = 86_400 * 10**9
    assert_points(store.read(run.id, "m"), [1, 2], [0.5, 1.5], [18262 * day, 18263 * day])


# -- log_batch times -----------------------------------------------------------------

EPOCH_2020 = 1_577_836_800 * 10**9   # 2020-01-01T00:00:00Z in ns


@pytest.mark.parametrize("times,want", [
    (np.array(["2020-01-01", "2020-01-02"], "datetime64[D]"), [EPOCH_2020, EPOCH_2020 + 86_400 * 10**9]),
    (np.array(["2020", "2021"], "datetime64[Y]"), [EPOCH_2020, EPOCH_2020 + 366 * 86_400 * 10**9]),
    (np.array(["2020-01-01T00:00:01", "2020-01-01T00:00:02"], "datetime64[s]"), [EPOCH_2020 + 10**9, EPOCH_2020 + 2 * 10**9]),
    (np.array([EPOCH_2020 // 10**6, EPOCH_2020 // 10**6 + 1], "datetime64[ms]"), [EPOCH_2020, EPOCH_2020 + 10**6]),
    (np.array([EPOCH_2020 // 1000 + 7, -1], "datetime64[us]"), [EPOCH_2020 + 7000, -1000]),
    (np.array([EPOCH_2020 + 1, 5], "datetime64[ns]"), [EPOCH_2020 + 1, 5]),
    (np.array([1999, -1], "datetime64[ps]"), [1, -1]),   # finer than ns: toward the past
    ([np.datetime64("2020-01-01"), np.datetime64("2020-01-01T00:00:00.5")], [EPOCH_2020, EPOCH_2020 + 5 * 10**8]),
    ([dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
      dt.datetime(2020, 1, 1, 1, 0, 0, 3, tzinfo=dt.timezone(dt.timedelta(hours=1)))], [EPOCH_2020, EPOCH_2020 + 3000]),
], ids=["D", "Y", "s", "ms", "us", "ns", "ps", "datetime64-scalars", "aware-datetimes"])
def test_log_batch_times_as_datetimes(store, times, want):
    run = store.start_run()
    run.log_batch("m", [0, 1], [1.0, 2.0], times=times)
    assert_points(store.read(run.id, "m"), [0, 1], [1.0, 2.0], want)
    assert _args.times_arg(times).tolist() == want


@pytest.mark.parametrize("times,base", [
    ([dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)], V),                # naive: zone unknown
    (np.array(["2020-01-01", "NaT"], "datetime64[D]"), V),
    (np.array(["2300-01-01", "2020-01-01"], "datetime64[D]"), V),          # past int64 ns
    (np.array(["1600-01-01", "2020-01-01"], "datetime64[s]"), V),
    ([dt.date(2020, 1, 1), dt.date(2020, 1, 2)], T),
    ([1.0, 2.0], T),
    (np.array([1, 2], "timedelta64[s]"), T),
])
def test_log_batch_refuses_times_it_cannot_place(store, times, base):
    run = store.start_run()
    _error(lambda: run.log_batch("m", [0, 1], [1.0, 2.0], times=times), base, "times")
    assert _rows(store, run, "m") == 0


# -- params and tags -----------------------------------------------------------------

class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


PARAMS = {
    "np_int": np.int64(3), "np_float": np.float32(0.5), "np_bool": np.bool_(True), "np_str": np.str_("adam"),
    "array": np.arange(3, dtype=np.int16), "matrix": np.eye(2), "when": dt.datetime(2020, 1, 2, 3, 4, 5),
    "aware": dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc), "day": dt.date(2020, 1, 2),
    "np_when": np.datetime64("2020-01-02T03:04"), "path": pathlib.PurePosixPath("/data/train.csv"),
    "set": {3, 1, 2}, "mixed_set": frozenset({"b", 1}), "tuple": (1, (2, 3)), "enum": Color.RED, "int_enum": Level.HIGH,
    "nested": {"np": np.uint8(7), "list": [np.float64(1.5), {"deep": np.int8(-1)}]},
    "nan": float("nan"), "none": None, "tensor": FakeTensor([1, 2]),
}
PLAIN = {
    "np_int": 3, "np_float": 0.5, "np_bool": True, "np_str": "adam", "array": [0, 1, 2], "matrix": [[1.0, 0.0], [0.0, 1.0]],
    "when": "2020-01-02T03:04:05", "aware": "2020-01-02T00:00:00+00:00", "day": "2020-01-02",
    "np_when": "2020-01-02T03:04", "path": "/data/train.csv", "set": [1, 2, 3], "mixed_set": ["b", 1],
    "tuple": [1, [2, 3]], "enum": "red", "int_enum": 3, "nested": {"np": 7, "list": [1.5, {"deep": -1}]},
    "nan": float("nan"), "none": None, "tensor": [1, 2],
}


def _same_json(got, want) -> bool:
    return json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)   # NaN equal to NaN


def test_params_and_tags_are_converted_to_plain_json(store):
    plain = _args.mapping_arg(PARAMS, "params")
    assert _same_json(plain, PLAIN)
    assert all(type(plain[k]) is type(PLAIN[k]) for k in PLAIN)   # np.str_ -> str, IntEnum -> int
    run = store.start_run(params=PARAMS, tags={"np": np.int64(1), "path": pathlib.PurePosixPath("a/b")})
    row = [r for r in store.runs().to_pylist() if r["id"] == run.id][0]
    assert row["params.np_int"] == 3 and row["params.nested.np"] == 7 and row["params.when"] == "2020-01-02T03:04:05"
    assert json.loads(row["params.set"]) == [1, 2, 3] and json.loads(row["params.nested.list"]) == [1.5, {"deep": -1}]
    assert (row["tags.np"], row["tags.path"]) == (1, "a/b")


@pytest.mark.parametrize("params,path", [
    ({"model": {"act": object()}}, 'params["model"]["act"]'),
    ({"a": [1, {"b": 1j}]}, 'params["a"][1]["b"]'),
    ({"a": np.complex64(1)}, 'params["a"]'),
    ({"a": dt.timedelta(seconds=1)}, 'params["a"]'),
    ({"a": np.timedelta64(1, "s")}, 'params["a"]'),
    ({"a": b"bytes"}, 'params["a"]'),
    ({"a": Decimal("0.1")}, 'params["a"]'),
    ({"a": {1: "int key"}}, 'params["a"]'),
    ({"a": np.array([1j])}, 'params["a"][0]'),
])
def test_params_that_are_not_json_name_their_key_path(store, params, path):
    error = _error(lambda: store.start_run(experiment="p", params=params), T, path)
    assert error.argument == path
    run = store.start_run()
    _error(lambda: run.log_params(params), T, path)
    _error(lambda: run.set_tags(params), T, path.replace("params", "tags", 1))
    assert [r["experiment"] for r in store.runs().to_pylist()] == ["default"]


# -- merge_params --------------------------------------------------------------------

@pytest.mark.parametrize("stored,new,want", [
    ({"a": {"b": 1}}, {"a": {"c": 2}}, {"a": {"b": 1, "c": 2}}),
    ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}}, "e": 4}, {"a": {"b": {"c": 1, "d": 3}}, "e": 4}),
    ({"lr": 0.1}, {"lr": 0.01}, {"lr": 0.01}),
    ({"opt": {"name": "adam", "lr": 0.1}}, {"opt": "sgd"}, {"opt": "sgd"}),      # a scalar replaces a dict
    ({"opt": "sgd"}, {"opt": {"name": "adam"}}, {"opt": {"name": "adam"}}),      # a dict replaces a scalar
    ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": 1}}),                                # an empty dict adds nothing
    ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),                                      # lists are values, not merged
    ({}, {"a": 1}, {"a": 1}),
])
def test_merge_params_merges_dicts_and_replaces_the_rest(stored, new, want):
    stored_before, new_before = json.dumps(stored), json.dumps(new)
    assert _args.merge_params(stored, new, "params") == want
    assert (json.dumps(stored), json.dumps(new)) == (stored_before, new_before)


def test_merge_params_refuses_a_collision_of_flattened_names():
    error = _error(lambda: _args.merge_params({"model.depth": 50}, {"model": {"depth": 18}}, "params"), V, "params")
    assert 'params["model.depth"]' in str(error) and 'params["model"]["depth"]' in str(error)


def test_log_params_merges_nested_dicts(store):
    run = store.start_run(params={"a": {"b": 1}, "lr": 0.1})
    run.log_params({"a": {"c": 2}})
    run.set_tags({"t": {"x": 1}})
    run.set_tags({"t": {"y": 2}})
    row = [r for r in store.runs().to_pylist() if r["id"] == run.id][0]
    assert {k: v for k, v in row.items() if k.startswith(("params.", "tags."))} == \
        {"params.a.b": 1, "params.a.c": 2, "params.lr": 0.1, "tags.t.x": 1, "tags.t.y": 2}


def test_log_params_refuses_a_collision_with_stored_params(store):
    run = store.start_run(params={"model.depth": 50})
    error = _error(lambda: run.log_params({"model": {"depth": 18}}), V, "params")
    assert 'params["model.depth"]' in str(error) and 'params["model"]["depth"]' in str(error)
    row = [r for r in store.runs().to_pylist() if r["id"] == run.id][0]
    assert row["params.model.depth"] == 50
