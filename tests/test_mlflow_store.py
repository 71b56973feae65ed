"""The MLflow tracking store of the steplog:// scheme: registration, the methods MLflow
calls, and what it makes of stores steplog wrote itself. The behaviour next to MLflow's
own SQLite store is in test_mlflow_conformance.py; the server in test_mlflow_server.py."""

import os
import subprocess
import sys

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install steplog[mlflow])")

import steplog  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.store.tracking.abstract_store import AbstractStore  # noqa: E402
from steplog.bindings.mlflow.store import SteplogStore  # noqa: E402

from tests._helpers import copy_fixture  # noqa: E402

# Every method MLflow's client, fluent API, server and UI call: AbstractStore does not
# enforce its abstract methods, so a missing one would silently return None.
CALLED_METHODS = [
    "search_experiments", "create_experiment", "get_experiment", "get_experiment_by_name", "delete_experiment",
    "restore_experiment", "rename_experiment", "set_experiment_tag", "delete_experiment_tag",
    "get_run", "update_run_info", "create_run", "delete_run", "restore_run", "delete_tag",
    "get_metric_history", "get_metric_history_bulk", "get_metric_history_bulk_interval",
    "get_metric_history_bulk_interval_from_steps", "_search_runs", "log_batch", "log_metric", "log_param",
    "set_tag", "log_inputs", "link_traces_to_run", "search_logged_models", "search_traces", "_search_datasets",
    "flush_async_logging",
]


def client(path) -> MlflowClient:
    return MlflowClient(f"steplog://{os.path.abspath(path)}")


def test_every_method_mlflow_calls_is_implemented():
    missing = [name for name in CALLED_METHODS
               if getattr(SteplogStore, name) is getattr(AbstractStore, name, None)]
    assert missing == []


def test_import_mlflow_registers_the_scheme_without_importing_steplog(tmp_path):
    script = ("import sys, warnings\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    import mlflow\n"
              "    from mlflow.tracking._tracking_service.utils import _tracking_store_registry as r\n"
              "assert not [w for w in caught if 'register' in str(w.message)], [str(w.message) for w in caught]\n"
              "assert 'steplog' not in sys.modules, 'import mlflow imported steplog'\n"
              f"store = r.get_store('steplog://{tmp_path}/s')\n"
              "print(type(store).__name__, [e.name for e in store.search_experiments()])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SteplogStore", "['Default']"]


def test_uri_without_an_absolute_path_is_refused():
    for uri in ("steplog://relative/path", "steplog:", "sqlite:///x.db"):
        with pytest.raises(MlflowException, match="steplog:///absolute/path"):
            SteplogStore(store_uri=uri)


def test_a_store_steplog_wrote_reads_through_mlflow(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        with store.start_run(experiment="sweep", name="trial", params={"lr": 0.01, "model": {"depth": 4}},
                             tags={"team": "a"}, capture=False) as run:
            run.log_batch("loss", np.arange(10), np.linspace(1, 0.1, 10))
    c = client(tmp_path / "s")
    experiment = c.get_experiment_by_name("sweep")
    assert experiment is not None and experiment.experiment_id not in ("", "0")
    found = c.search_runs([experiment.experiment_id], "params.lr = '0.01' and metrics.loss < 0.2")
    assert [r.info.run_id for r in found] == [run.id]
    got = found[0]
    assert got.data.params == {"lr": "0.01", "model.depth": "4"}
    assert got.info.status == "FINISHED" and got.info.run_name == "trial"
    assert got.data.metrics["loss"] == pytest.approx(0.1)
    assert [m.step for m in c.get_metric_history(run.id, "loss")] == list(range(10))


def test_an_old_format_store_gets_experiment_ids_and_a_default(tmp_path):
    path, _ = copy_fixture(tmp_path, "store-v4")
    with steplog.open(path, "r") as store:
        before = {e["name"] for e in store.experiments()}
    c = client(path)
    experiments = c.search_experiments()
    assert {e.name for e in experiments} == before | {"Default"}
    assert len({e.experiment_id for e in experiments}) == len(experiments)
    assert c.get_experiment("0").name == "Default"


def test_points_keep_the_clients_timestamps_and_steps(tmp_path):
    c = client(tmp_path / "s")
    run = c.create_run("0", start_time=1_700_000_000_123)
    metrics = [Metric("m", v, 1_700_000_000_000 + i, s) for i, (v, s) in
               enumerate([(1.0, 5), (float("nan"), 3), (float("inf"), -2), (2.5, 5)])]
    c.log_batch(run.info.run_id, metrics=metrics, params=[Param("p", "1")], tags=[RunTag("t", "x")])
    history = sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(run.info.run_id, "m"))
    expected = sorted((m.step, m.timestamp, m.value) for m in metrics)
    assert [h[:2] for h in history] == [e[:2] for e in expected]
    mlflow_values = [sys.float_info.max if e[2] == float("inf") else e[2] for e in expected]   # as MLflow's SQL store
    assert np.array_equal([h[2] for h in history], mlflow_values, equal_nan=True)
    got = c.get_run(run.info.run_id)
    assert got.info.start_time == 1_700_000_000_123
    assert got.data.metrics == {"m": 2.5}   # the highest step, the later of its two points


def test_a_param_cannot_change_and_a_batch_that_tries_changes_nothing(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0").info.run_id
    c.log_param(run_id, "lr", "0.1")
    c.log_param(run_id, "lr", "0.1")   # the same value again is fine
    with pytest.raises(MlflowException, match="Changing param values is not allowed") as caught:
        c.log_batch(run_id, params=[Param("other", "1"), Param("lr", "0.2")])
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert c.get_run(run_id).data.params == {"lr": "0.1"}


def test_bad_metrics_get_mlflows_errors_and_store_nothing(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0").info.run_id
    good = Metric("ok", 1.0, 1, 0)
    for bad in (Metric("x", "text", 1, 0), Metric("x", 1.0, -1, 0), Metric("x", 1.0, 1, None),
                Metric("../x", 1.0, 1, 0), Metric("x" * 300, 1.0, 1, 0)):
        with pytest.raises(MlflowException) as caught:
            c.log_batch(run_id, metrics=[good, bad])
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert c.get_metric_history(run_id, "ok") == []
    assert c.get_run(run_id).data.metrics == {}


def test_logging_to_a_deleted_run_is_refused(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0").info.run_id
    c.log_metric(run_id, "m", 1.0)
    c.delete_run(run_id)
    with pytest.raises(MlflowException, match="active"):
        c.log_metric(run_id, "m", 2.0)
    c.restore_run(run_id)
    c.log_metric(run_id, "m", 3.0, step=1)
    assert [m.value for m in c.get_metric_history(run_id, "m")] == [1.0, 3.0]


def test_renaming_an_experiment_moves_its_runs_in_steplog_too(tmp_path):
    c = client(tmp_path / "s")
    experiment_id = c.create_experiment("before")
    run_id = c.create_run(experiment_id).info.run_id
    c.rename_experiment(experiment_id, "after")
    assert c.get_run(run_id).info.experiment_id == experiment_id
    with steplog.open(tmp_path / "s", "r") as store:
        assert store.runs().column("experiment").to_pylist() == ["after"]
    with pytest.raises(MlflowException) as caught:
        c.rename_experiment(c.create_experiment("other"), "after")
    assert caught.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_bulk_interval_keeps_a_one_step_spike(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0").info.run_id
    values = np.sin(np.arange(200_000) / 5000.0)
    values[123_457] = 50.0
    with steplog.open(tmp_path / "s") as store:
        store.run(run_id, resume=False).log_batch("loss", np.arange(len(values)), values)
    store = c._tracking_client.store
    found = store.get_metric_history_bulk_interval([run_id], "loss", max_results=320, start_step=None, end_step=None)
    assert 0 < len(found) <= 320
    assert (123_457, 50.0) in {(m.step, m.value) for m in found}
    assert all(values[m.step] == m.value for m in found)
    assert {0, len(values) - 1} <= {m.step for m in found}


def test_what_is_not_kept_searches_empty_and_refuses_writes(tmp_path):
    store = SteplogStore(store_uri=f"steplog://{tmp_path}/s")
    assert store.search_logged_models(["0"]).to_list() == [] and store.search_traces(["0"]) == ([], None)
    assert store.list_scorers("0") == [] and store.search_datasets(["0"]).to_list() == []
    with pytest.raises(MlflowException, match="not traces, logged models") as caught:
        store.create_logged_model("0")
    assert caught.value.error_code == "NOT_IMPLEMENTED"
    with pytest.raises(MlflowException, match="start_trace"):
        store.start_trace(None)


def test_the_registry_of_the_scheme_searches_empty_and_says_where_a_registry_lives(tmp_path):
    c = client(tmp_path / "s")
    assert c.search_registered_models() == [] and c.search_model_versions("run_id='x'") == []
    with pytest.raises(MlflowException, match="--registry-store-uri") as caught:
        c.create_registered_model("model")
    assert caught.value.error_code == "NOT_IMPLEMENTED"
    with pytest.raises(MlflowException) as caught:
        c.get_registered_model("model")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def _forked_trial(args):
    uri, lr = args
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=f"lr={lr}", experiment_id=mlflow.get_experiment_by_name("sweep").experiment_id):
        mlflow.log_param("lr", lr)
        for step in range(20):
            mlflow.log_metric("loss", lr * step, step=step)
    return lr


def _forked_unended(args):
    uri, name = args
    c = MlflowClient(uri)
    run_id = c.create_run("0", run_name=name).info.run_id
    for step in range(20):
        c.log_metric(run_id, "m", float(step), step=step)
    return run_id   # neither ended nor flushed: the store flushes as the worker exits


def test_a_pool_forked_after_the_parent_used_the_store_logs_every_point(tmp_path):
    import multiprocessing

    uri = f"steplog://{tmp_path}/s"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sweep")   # the parent builds MLflow's store before the fork
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(_forked_trial, [(uri, 0.1), (uri, 0.01)]) == [0.1, 0.01]
            unended = pool.map(_forked_unended, [(uri, "a"), (uri, "b")])
            pool.close()
            pool.join()   # the workers exit as processes do: their finalizers run
        c = MlflowClient(uri)
        runs = c.search_runs([c.get_experiment_by_name("sweep").experiment_id])
        assert sorted(r.data.params["lr"] for r in runs) == ["0.01", "0.1"]
        assert all(len(c.get_metric_history(r.info.run_id, "loss")) == 20 for r in runs)
        assert [len(c.get_metric_history(run_id, "m")) for run_id in unended] == [20, 20]
    finally:
        mlflow.set_tracking_uri(None)


def test_inf_reaches_mlflow_as_its_sql_store_gives_it_and_stays_inf_in_steplog(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0").info.run_id
    c.log_batch(run_id, metrics=[Metric("up", float("inf"), 1, 0), Metric("down", float("-inf"), 1, 0),
                                 Metric("nan", float("nan"), 1, 0)])
    got = c.get_run(run_id).data.metrics
    assert got["up"] == sys.float_info.max and got["down"] == -sys.float_info.max and np.isnan(got["nan"])
    assert [m.value for m in c.get_metric_history(run_id, "up")] == [sys.float_info.max]
    assert [r.info.run_id for r in c.search_runs(["0"], "metrics.up > 1e308")] == [run_id]
    with steplog.open(tmp_path / "s", "r") as store:
        assert store.read(run_id, "up").column("value").to_pylist() == [float("inf")]


def test_runs_of_steplogs_own_api_carry_mlflows_name_and_parent_tags(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        parent = store.start_run(experiment="e", name="sweep", capture=False)
        child = store.start_run(experiment="e", name="trial", parent=parent, capture=False)
        child.end(), parent.end()
    tags = client(tmp_path / "s").get_run(child.id).data.tags
    assert tags["mlflow.runName"] == "trial" and tags["mlflow.parentRunId"] == parent.id


def test_a_read_only_store_is_browsed(tmp_path):
    c = client(tmp_path / "s")
    run_id = c.create_run("0", run_name="kept").info.run_id
    c.log_metric(run_id, "m", 1.0)
    mlflow.MlflowClient(f"steplog://{tmp_path}/s")._tracking_client.store.store.close()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {tmp_path}/s {tmp_path}/s && "
         f"{sys.executable} -c \"import mlflow; c = mlflow.MlflowClient('steplog://{tmp_path}/s'); "
         f"print(c.get_run('{run_id}').info.run_name, len(c.get_metric_history('{run_id}', 'm')))\""],
        capture_output=True, text=True, timeout=120)
    if "unshare" in done.stderr and "Operation not permitted" in done.stderr:
        pytest.skip(f"this machine refuses a mount namespace: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["kept", "1"]
