"""steplog as MLflow's tracking store, at small sizes: what benchmarks/mlflow_figures.py measures
side by side with MLflow's SQLite store (the issue 12 table), here on steplog alone so
that CI checks every path in seconds.

    .venv/bin/python -m pytest benchmarks/test_mlflow.py --benchmark-only
    .venv/bin/python benchmarks/mlflow_figures.py                 # the issue's sizes, next to SQLite
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install steplog[mlflow])")

from mlflow import MlflowClient  # noqa: E402

import steplog  # noqa: E402

import mlflow_figures as figures  # noqa: E402  (benchmarks/ is on the path under pytest)

HISTORY_POINTS = 100_000
LONG_POINTS = 1_000_000
SEARCH_RUNS = 1_000
SPIKE = 1000.0


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-bench")
    return figures.Context("steplog", str(folder), str(folder), figures.Options.make(quick=True))


@pytest.fixture(scope="module")
def client(context):
    return MlflowClient(context.uri)


def test_log_batch(benchmark, context, client, record_rate):
    """MlflowClient.log_batch(run_id, metrics=[1,000 Metric]), the Metric list built
    beforehand; every round's points are read back. Target at full scale: >= 80,000 points/s."""
    run_id = client.create_run(client.create_experiment("batch")).info.run_id
    steps, times, values = (c.tolist() for c in figures.curve(100 * figures.BATCH))
    starts = itertools.count(0, figures.BATCH)

    def setup():
        return (figures.metric_batch(next(starts), values, times),), {}

    benchmark.pedantic(lambda metrics: client.log_batch(run_id, metrics=metrics), setup=setup,
                       rounds=1 if benchmark.disabled else 50)
    record_rate(figures.BATCH)
    figures.store_of(context.uri).flush_async_logging()
    logged = next(starts)
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(logged))
    assert [m.value for m in history] == values[:logged]


def test_get_metric_history(benchmark, context, client, record_rate):
    """MlflowClient.get_metric_history of 100,000 points written by steplog's log_batch
    into a run MLflow created. Target at 1 M points: <= 6 s."""
    _, run_id = figures.history_run(context, HISTORY_POINTS)
    history = benchmark(client.get_metric_history, run_id, "loss")
    record_rate(HISTORY_POINTS)
    steps, times, values = figures.curve(HISTORY_POINTS)
    assert [m.step for m in history] == steps.tolist()
    assert [m.timestamp for m in history] == times.tolist()
    assert [m.value for m in history] == values.tolist()


@pytest.fixture(scope="module")
def spiked_run(context, client):
    """A run of 1 M points with one spike MLflow's even sampling would miss."""
    run_id = client.create_run(client.create_experiment("spike")).info.run_id
    steps, times, values = figures.curve(LONG_POINTS)
    spike = 400_123
    values[spike] = SPIKE
    with steplog.open(Path(context.folder, "s")) as store:
        store.run(run_id, resume=False).log_batch("loss", steps, values, times * figures.NS_PER_MS)
    return run_id, spike


def test_bulk_interval(benchmark, context, spiked_run):
    """The store call behind get-history-bulk-interval: 320 points of a 1 M-point history,
    its spike among them. Target: <= 20 ms at any history length."""
    run_id, spike = spiked_run
    store = figures.store_of(context.uri)
    found = benchmark(store.get_metric_history_bulk_interval, run_ids=[run_id], metric_key="loss",
                      max_results=figures.CHART_POINTS, start_step=None, end_step=None)
    steps = [m.step for m in found]
    assert 0 < len(found) <= figures.CHART_POINTS and steps == sorted(steps)
    assert steps[0] == 0 and steps[-1] == LONG_POINTS - 1
    assert (spike, SPIKE) in [(m.step, m.value) for m in found]
    assert {m.run_id for m in found} == {run_id}


def test_search_runs(benchmark, context, client):
    """MlflowClient.search_runs with a metric and a param clause over 1,000 runs made by
    create_run and one log_batch each (3 metrics, 5 params, 3 tags). Target at 10,000
    runs: <= 300 ms."""
    experiment, made, _ = figures.populate_runs(context.uri, SEARCH_RUNS, seconds=600)
    assert made == SEARCH_RUNS
    found = benchmark(client.search_runs, [experiment], figures.SEARCH_FILTER, max_results=figures.SEARCH_MAX_RESULTS)
    fields = [figures.run_fields(i) for i in range(SEARCH_RUNS)]
    expected = {f"run-{i}" for i, (metrics, params, _) in enumerate(fields)
                if metrics["loss"] < 0.5 and params["opt"] == "adam"}
    assert 0 < len(expected) < SEARCH_RUNS
    assert {r.info.run_name for r in found} == expected
    first = min(found, key=lambda r: r.info.run_name)
    metrics, params, tags = fields[int(first.info.run_name.split("-")[1])]
    assert first.data.metrics == pytest.approx(metrics)
    assert first.data.params == params
    assert tags.items() <= first.data.tags.items()
