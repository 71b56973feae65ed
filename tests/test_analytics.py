"""Store.analytics: runs x params x metric aggregates, against numpy over the raw points
of each series (store.read), with contexts, NaN, runs lacking a metric, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import steplog


@pytest.fixture
def sweep(open_store):
    store = open_store()
    rng = np.random.default_rng(7)
    for i in range(6):
        with store.start_run(experiment="sweep" if i < 5 else "other", name=f"r{i}",
                             params={"lr": 10.0 ** -i, "opt": ["adam", "sgd"][i % 2]}) as run:
            steps = rng.integers(0, 40, 80)
            values = rng.normal(size=80)
            values[rng.integers(0, 80, 3)] = np.nan
            run.log_batch("loss", steps, values)
            run.log_batch("loss", np.arange(5), np.full(5, 9.0), context={"subset": "val"})
            if i % 3:
                run.log("acc", 0.1 * i, step=i)
            run.flush()
    return store


def test_every_cell_against_numpy(sweep):
    table = sweep.analytics(metrics=["loss", "acc"], aggs=["last", "first", "min", "max", "mean", "count", "sum"])
    assert table.column_names[:8] == ["id", "experiment", "name", "status", "start_time", "end_time",
                                      "params.lr", "params.opt"]
    rows = table.to_pylist()
    assert [r["name"] for r in rows] == [f"r{i}" for i in range(6)]
    for row in rows:
        for stem, name, context in (("loss", "loss", None), ("loss{subset=val}", "loss", {"subset": "val"}),
                                    ("acc", "acc", None)):
            points = sweep.read(row["id"], name, context=context, missing_ok=True)
            steps, values = points.column("step").to_numpy(), points.column("value").to_numpy()
            if not len(values):
                assert row[f"{stem}.count"] is None and row[f"{stem}.last"] is None
                continue
            ok = ~np.isnan(values)
            assert row[f"{stem}.count"] == len(values)
            np.testing.assert_equal([row[f"{stem}.first"], row[f"{stem}.last"]], [values[0], values[-1]])
            at_min = np.flatnonzero(ok & (values == values[ok].min()))[0]
            at_max = np.flatnonzero(ok & (values == values[ok].max()))[0]
            assert (row[f"{stem}.min"], row[f"{stem}.min_step"]) == (values[at_min], steps[at_min])
            assert (row[f"{stem}.max"], row[f"{stem}.max_step"]) == (values[at_max], steps[at_max])
            assert row[f"{stem}.mean"] == pytest.approx(values[ok].mean())
            assert row[f"{stem}.sum"] == pytest.approx(values[ok].sum())


def test_selection_params_and_contexts(sweep):
    table = sweep.analytics(where="params.lr < 0.05", experiment="sweep", metrics=["loss"], aggs=["min"],
                            contexts=[{}], params=["lr"])
    assert table.column("name").to_pylist() == ["r2", "r3", "r4"]
    assert [c for c in table.column_names if c.startswith(("params", "loss"))] == [
        "params.lr", "loss.min", "loss.min_step"]
    every = sweep.analytics(aggs=["count"])
    assert sorted(c for c in every.column_names if c.endswith(".count")) == [
        "acc.count", "loss.count", "loss{subset=val}.count"]


def test_errors(sweep):
    with pytest.raises(steplog.NotFoundError, match="'loss'"):
        sweep.analytics(metrics=["los"])
    with pytest.raises(steplog.InvalidArgumentError, match="aggs"):
        sweep.analytics(aggs=["median"])
    with pytest.raises(steplog.NotFoundError, match="experiment"):
        sweep.analytics(experiment="nope")


def test_run_flush_makes_points_count(open_store):
    store = open_store()
    run = store.start_run()
    run.log("x", 1.0, step=0)
    run.flush()
    run.log("x", -3.0, step=1)
    assert store.analytics(aggs=["last", "count"]).column("x.last").to_pylist() == [1.0]   # flushed state
    assert store.metrics(run.id).column("min").to_pylist() == [-3.0]   # metrics() counts unflushed points
    run.flush()
    assert store.analytics(aggs=["last", "count"]).column("x.count").to_pylist() == [2]
    run.end()


def test_params_keeps_the_keys_named_and_refuses_unknown_ones(tmp_path):
    """params= keeps the named keys (a nested dict's key keeps its leaves, a mixed key
    its text column) and a key no selected run has is NotFoundError with close names."""
    with steplog.open(tmp_path / "s") as store:
        with store.start_run(params={"lr": 0.1, "model": {"depth": 50}, "batch": 32}, capture=False) as run:
            run.log("loss", 1.0, step=0)
        store.start_run(params={"batch": "auto"}, capture=False).end()
        table = store.analytics(params=["model", "params.batch"])
        params = [n for n in table.column_names if n.startswith(("params.", "params_text."))]
        assert params == ["params.batch", "params_text.batch", "params.model.depth"]
        with pytest.raises(steplog.NotFoundError, match="did you mean 'lr'"):
            store.analytics(params=["lrr"])
