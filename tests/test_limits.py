"""Names, keys and values past the documented limits (steplog._args.MAX_*) are refused
with typed errors naming the argument, and change nothing; at the limits they work."""

from __future__ import annotations

import json

import numpy as np
import pytest

import steplog
from steplog._args import MAX_CONTEXT_VALUE_CHARS, MAX_DEPTH, MAX_MAPPING_CHARS, MAX_NAME_CHARS, MAX_VALUE_CHARS

from _helpers import assert_points

BAD_NAMES = {
    "nul": "x\x00y", "only-nul": "\x00", "newline": "line\nbreak", "crlf": "a\r\n", "line-separator": "a\u2028b",
    "escape": "\x1b[31mred", "blank": " ", "tabs": "\t\t", "ideographic-space": "\u3000",
    "too-long": "z" * (MAX_NAME_CHARS + 1), "megabyte": "z" * 2**20,
}
GOOD_NAMES = ["z" * MAX_NAME_CHARS, "a\tb", " padded ", "指标" * (MAX_NAME_CHARS // 2), "a.b/c:d"]


def _refused(call, argument):
    with pytest.raises(steplog.StepLogError) as info:
        call()
    assert isinstance(info.value, ValueError), type(info.value).__mro__
    assert argument in str(info.value), str(info.value)
    assert len(str(info.value)) < 1000   # a megabyte name is not echoed back
    return info.value


def _row(store, run):
    return [r for r in store.runs().to_pylist() if r["id"] == run.id][0]


# -- metric, experiment and run names ------------------------------------------------

METRIC_CALLS = {
    "log": lambda run, name: run.log(name, 1.0, step=0),
    "log-dict": lambda run, name: run.log({"ok": 1.0, name: 2.0}, step=0),
    "log-batch": lambda run, name: run.log_batch(name, [0], [1.0]),
    "log-tensor": lambda run, name: run.log_tensor(name, np.ones(3), step=0),
}


@pytest.mark.parametrize("call", METRIC_CALLS.values(), ids=METRIC_CALLS.keys())
@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_metric_names_past_the_limits_are_refused(store, name, call):
    run = store.start_run()
    _refused(lambda: call(run, name), "name")
    store.flush()
    assert store.metrics(run.id).to_pylist() == []


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_experiment_and_run_names_past_the_limits_are_refused(store, name):
    _refused(lambda: store.start_run(experiment=name), "experiment")
    _refused(lambda: store.start_run(name=name), "name")
    assert store.runs().num_rows == 0


def test_names_at_the_limits_work_everywhere(store):
    runs = []
    for name in GOOD_NAMES:
        run = store.start_run(experiment=name, name=name, params={name: {name: 1}}, tags={name: name})
        run.log(name, 1.0, step=0, context={name: "v" * MAX_CONTEXT_VALUE_CHARS})
        run.log_batch(name, [1], [2.0])
        runs.append(run)
    store.flush()
    for run, name in zip(runs, GOOD_NAMES):
        assert_points(store.read(run.id, name, context={name: "v" * MAX_CONTEXT_VALUE_CHARS}), [0], [1.0])
        assert_points(store.read(run.id, name), [1], [2.0])
        row = _row(store, run)
        assert (row["experiment"], row["name"], row[f"params.{name}.{name}"], row[f"tags.{name}"]) == \
            (name, name, 1, name)


def test_reading_a_name_past_the_limits_finds_nothing(store):
    """Reads check no limits, so that series stored before the limits stay readable."""
    run = store.start_run()
    run.log("m", 1.0, step=0)
    for name, context in (("z" * (MAX_NAME_CHARS + 1), None), ("m", {"k": "v" * (MAX_CONTEXT_VALUE_CHARS + 1)}),
                          ("a\nb", None), ("m", {"a\nb": 1})):
        try:
            assert store.read(run.id, name, context=context).num_rows == 0
        except steplog.NotFoundError:
            pass   # no such series: not an argument error


# -- context keys and values ---------------------------------------------------------

@pytest.mark.parametrize("context,argument", [
    *[({name: 1}, "context key") for name in BAD_NAMES.values()],
    ({"": 1}, "context key"),
    ({"k": "v" * (MAX_CONTEXT_VALUE_CHARS + 1)}, 'context["k"]'),
    ({"k": "a\nb"}, 'context["k"]'),
    ({"k": "\x00"}, 'context["k"]'),
    ({f"k{i}": "v" * MAX_CONTEXT_VALUE_CHARS for i in range(MAX_VALUE_CHARS // MAX_CONTEXT_VALUE_CHARS)}, "context"),
], ids=[*BAD_NAMES.keys(), "empty-key", "long-value", "newline-value", "nul-value", "whole-context"])
def test_context_keys_and_values_past_the_limits_are_refused(store, context, argument):
    run = store.start_run()
    _refused(lambda: run.log("m", 1.0, step=0, context=context), argument)
    _refused(lambda: run.log_batch("m", [0], [1.0], context=context), argument)
    store.flush()
    assert store.metrics(run.id).to_pylist() == []


def test_empty_and_blank_context_values_are_values(store):
    run = store.start_run()
    run.log("m", 1.0, step=0, context={"k": ""})
    run.log("m", 2.0, step=0, context={"k": " "})
    assert_points(store.read(run.id, "m", context={"k": ""}), [0], [1.0])
    assert_points(store.read(run.id, "m", context={"k": " "}), [0], [2.0])


# -- params and tags -----------------------------------------------------------------

def _deep(levels: int) -> dict:
    """A params dict of ``levels`` nested dicts, the outer one counted."""
    params: dict = {"leaf": 1}
    for _ in range(levels - 1):
        params = {"k": params}
    return params


@pytest.mark.parametrize("params,argument", [
    *[({"a": {name: 1}}, 'params["a"]') for name in BAD_NAMES.values()],
    ({"a": {"": 1}}, 'params["a"][""]'),
    ({"s": "x" * (MAX_VALUE_CHARS - 1)}, 'params["s"]'),          # the JSON text has two quotes more
    ({"l": list(range(MAX_VALUE_CHARS // 2))}, 'params["l"]'),
    ({"a": np.zeros(10**6)}, 'params["a"]'),
    ({f"k{i}": "x" * (MAX_VALUE_CHARS - 10) for i in range(MAX_MAPPING_CHARS // MAX_VALUE_CHARS + 1)}, "params"),
    (_deep(MAX_DEPTH + 1), 'params["k"]'),
    (_deep(200), 'params["k"]'),
    ({"l": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)}, 'params["l"]'),   # lists nest too
], ids=[*(f"key-{k}" for k in BAD_NAMES), "empty-key", "long-str", "long-list", "big-array", "whole-dict",
        "depth-limit-plus-one", "depth-200", "nested-lists"])
def test_params_and_tags_past_the_limits_are_refused(store, params, argument):
    _refused(lambda: store.start_run(params=params), argument)
    _refused(lambda: store.start_run(tags=params), argument.replace("params", "tags", 1))
    run = store.start_run(params={"kept": 1})
    _refused(lambda: run.log_params(params), argument)
    _refused(lambda: run.set_tags(params), argument.replace("params", "tags", 1))
    row = _row(store, run)
    assert {k: v for k, v in row.items() if k.startswith(("params.", "tags."))} == {"params.kept": 1}


def test_params_at_the_limits_are_kept(store):
    at_limit = {"s": "x" * (MAX_VALUE_CHARS - 2), "deep": _deep(MAX_DEPTH - 1)}
    run = store.start_run(params=at_limit, tags=at_limit)
    row = _row(store, run)
    assert row["params.s"] == at_limit["s"] and row["tags.s"] == at_limit["s"]
    assert row["params.deep" + ".k" * (MAX_DEPTH - 2) + ".leaf"] == 1


def test_log_params_refuses_a_total_past_the_limit(store):
    """Each call is under the limit; what the run would hold is not."""
    chunk = {f"k{i}": "x" * (MAX_VALUE_CHARS - 10) for i in range(MAX_MAPPING_CHARS // MAX_VALUE_CHARS // 2)}
    run = store.start_run(params={"a": chunk})
    run.log_params({"b": chunk})
    _refused(lambda: run.log_params({"c": chunk, "d": chunk}), "params")
    assert sorted({k.split(".")[1] for k in _row(store, run) if k.startswith("params.")}) == ["a", "b"]


# -- flattened names -----------------------------------------------------------------

@pytest.mark.parametrize("params,first,second", [
    ({"model.depth": 50, "model": {"depth": 18}}, 'params["model.depth"]', 'params["model"]["depth"]'),
    ({"a": {"b.c": 1}, "a.b": {"c": 2}}, 'params["a"]["b.c"]', 'params["a.b"]["c"]'),
    ({"a.b": 1, "a": {"b": {}}}, 'params["a.b"]', 'params["a"]["b"]'),
])
def test_a_collision_of_flattened_names_is_refused(store, params, first, second):
    error = _refused(lambda: store.start_run(params=params), "params")
    assert first in str(error) and second in str(error)
    _refused(lambda: store.start_run(tags=params), "tags")
    assert store.runs().num_rows == 0
