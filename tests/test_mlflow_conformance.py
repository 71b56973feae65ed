"""steplog as MLflow's tracking store behaves as MLflow's own SQLite store does.

Each scenario scripts real MlflowClient (and fluent) calls for one area and returns a normalized
structure (tests/_mlflow.py says what is normalized and why). It runs on a copy of a migrated
SQLite database, the reference, and on the candidate store; the two results must be equal, and
every difference is listed by path.

The candidate is ``steplog:///<tmp>/store`` wherever the ``steplog`` scheme is registered (the
``mlflow`` extra installs the entry point, and CI installs the extra). Where it is not, the
candidate is a second SQLite database, which still checks that every scenario is deterministic
and that the normalization hides nothing but run ids, clock times and locations. Setting
STEPLOG_MLFLOW_CANDIDATE to ``sqlite``, ``file`` or ``steplog`` picks the candidate by hand.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time

import pytest

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install steplog[mlflow])")

import numpy as np  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag, ViewType  # noqa: E402

from _mlflow import (  # noqa: E402
    CLIENT_T0,
    Failure,
    assert_conforms,
    differences,
    failures,
    fluent_api,
    metric,
    play,
    scrub,
    tracking_schemes,
)

pytestmark = [
    # MLflow's SQLite store configures its SQLAlchemy mappers with a strategy that SQLAlchemy
    # 2.1 deprecates; the warning comes from MLflow's import, not from anything tested here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

_CANDIDATE_URIS = {
    "steplog": lambda folder: f"steplog:///{folder}/store",
    "sqlite": lambda folder: f"sqlite:///{folder}/candidate.db",
    "file": lambda folder: (folder / "mlruns").as_uri(),
}
CANDIDATE = os.environ.get("STEPLOG_MLFLOW_CANDIDATE") or (
    "steplog" if "steplog" in tracking_schemes() else "sqlite"
)
_SCRUBBED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """One migrated SQLite database per module (a migration costs seconds); tests copy it."""
    folder = tmp_path_factory.mktemp("mlflow-reference")
    path = folder / "migrated.db"
    # The Default experiment's artifact location is made from the working directory.
    with contextlib.chdir(folder):
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def uris(migrated_db, tmp_path, monkeypatch):
    """(reference URI, candidate URI), both fresh stores in this test's tmp_path."""
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    # MLflow's async logging thread polls its queue once a second, so each flush and end_run
    # would wait up to a second; with buffering on, it waits on the stop event instead.
    monkeypatch.setenv("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    if CANDIDATE == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    shutil.copy(migrated_db, tmp_path / "reference.db")
    if CANDIDATE == "sqlite":
        shutil.copy(migrated_db, tmp_path / "candidate.db")
    return f"sqlite:///{tmp_path}/reference.db", _CANDIDATE_URIS[CANDIDATE](tmp_path)


def _pause():
    """Two creations in a row get distinct millisecond clocks, so orderings have no ties."""
    time.sleep(0.003)


def _pages(fetch, view, limit=50):
    """Every page of a paged search: (view of each page, whether a next-page token came)."""
    pages, token = [], None
    for _ in range(limit):
        page = fetch(token)
        token = page.token or None
        pages.append({"items": view(page), "more": token is not None})
        if token is None:
            break
    return pages


# ----------------------------------------------------------------------------------------------
# 1. experiments

_EXPERIMENT_SPECS = [
    ("exp-alpha", {"team": "a", "x": "1"}, "s3://conformance-bucket/alpha"),
    ("exp-beta", {"team": "b"}, None),
    ("exp-gamma", {}, None),
    ("EXP-Delta", {"x": "1"}, None),
    ("other", {"team": "a"}, None),
]
_EXPERIMENT_FILTERS = [
    "name LIKE 'exp-%'", "name ILIKE 'exp-%'", "name = 'exp-beta'", "name != 'exp-beta'",
    "tags.team = 'a'", "tags.x = '1'", "tags.team != 'a'", "tags.team LIKE 'a%'",
    "tags.`team` ILIKE 'A'", "name LIKE '%a' AND tags.x = '1'", "tags.missing = 'v'",
    "creation_time >= 0", "last_update_time > 0",
]
_EXPERIMENT_ORDERS = [
    ["name"], ["name DESC"], ["creation_time"], ["creation_time DESC"], ["experiment_id DESC"],
    ["last_update_time DESC"], ["last_update_time", "name DESC"],
]


def _experiment_searches(env):
    c = env.client
    names = env.experiment_names
    out = {f: env.attempt(lambda f=f: names(c.search_experiments(filter_string=f)))
           for f in _EXPERIMENT_FILTERS}
    out.update({",".join(o): env.attempt(lambda o=o: names(c.search_experiments(order_by=o)))
                for o in _EXPERIMENT_ORDERS})
    out["bad filter"] = env.attempt(c.search_experiments, filter_string="colour = 'red'")
    out["bad order"] = env.attempt(c.search_experiments, order_by=["name SIDEWAYS"])
    out["pages of 2 by name"] = env.attempt(_pages, lambda token: c.search_experiments(
        max_results=2, order_by=["name"], page_token=token), names)
    out["pages of 2, default order"] = env.attempt(_pages, lambda token: c.search_experiments(
        max_results=2, page_token=token), names)
    return out


def _experiment_lifecycle(env, ids):
    c, view = env.client, env.experiment
    out = {
        "rename": env.outcome(c.rename_experiment, ids["exp-beta"], "exp-beta-2"),
        "old name after rename": env.attempt(lambda: view(c.get_experiment_by_name("exp-beta"))),
        "new name after rename": env.attempt(lambda: view(c.get_experiment_by_name("exp-beta-2"))),
        "rename onto a taken name": env.outcome(c.rename_experiment, ids["other"], "exp-alpha"),
        "rename a missing experiment": env.outcome(c.rename_experiment, "987654", "nowhere"),
        "delete": env.outcome(c.delete_experiment, ids["exp-gamma"]),
        "deleted": env.attempt(lambda: view(c.get_experiment(ids["exp-gamma"]))),
        "deleted by name": env.attempt(lambda: view(c.get_experiment_by_name("exp-gamma"))),
        "create over a deleted name": env.attempt(c.create_experiment, "exp-gamma"),
        "delete again": env.outcome(c.delete_experiment, ids["exp-gamma"]),
        "delete a missing experiment": env.outcome(c.delete_experiment, "987654"),
    }
    for label, view_type in [("active", ViewType.ACTIVE_ONLY), ("deleted", ViewType.DELETED_ONLY),
                             ("all", ViewType.ALL)]:
        out[f"view {label}"] = env.attempt(lambda v=view_type: env.experiment_names(
            c.search_experiments(view_type=v, order_by=["name"])))
    out["restore"] = env.outcome(c.restore_experiment, ids["exp-gamma"])
    out["restored"] = env.attempt(lambda: view(c.get_experiment(ids["exp-gamma"])))
    out["restore an active experiment"] = env.outcome(c.restore_experiment, ids["exp-gamma"])
    return out


def _experiment_tags(env, ids):
    c, alpha = env.client, ids["exp-alpha"]
    before = c.get_experiment(alpha).last_update_time
    _pause()
    out = {
        "replace": env.outcome(c.set_experiment_tag, alpha, "team", "c"),
        "add": env.outcome(c.set_experiment_tag, alpha, "note", "hello"),
        "empty value": env.outcome(c.set_experiment_tag, alpha, "blank", ""),
        "delete": env.outcome(c.delete_experiment_tag, alpha, "x"),
        "delete a missing key": env.outcome(c.delete_experiment_tag, alpha, "never-set"),
        "on a missing experiment": env.outcome(c.set_experiment_tag, "987654", "k", "v"),
    }
    out["tags move last_update_time"] = env.attempt(lambda: c.get_experiment(alpha).last_update_time > before)
    _pause()
    out["tag another"] = env.outcome(c.set_experiment_tag, ids["other"], "late", "1")
    out["alpha"] = env.attempt(lambda: env.experiment(c.get_experiment(alpha)))
    return out


def _experiments_fluent(env, ids):
    view = env.experiment
    out = {}
    with fluent_api(env.uri):
        out["set new"] = env.attempt(lambda: view(mlflow.set_experiment("fluent-exp")))
        out["set again"] = env.attempt(lambda: view(mlflow.set_experiment("fluent-exp")))
        out["set by id"] = env.attempt(
            lambda: view(mlflow.set_experiment(experiment_id=ids["exp-alpha"])))
        out["get by name"] = env.attempt(lambda: view(mlflow.get_experiment_by_name("fluent-exp")))
        env.client.delete_experiment(ids["other"])
        out["set a deleted one"] = env.attempt(lambda: view(mlflow.set_experiment("other")))
    return out


def scenario_experiments(env):
    c = env.client
    out = {
        "default": env.attempt(lambda: env.experiment(c.get_experiment("0"))),
        "initial names": env.attempt(lambda: env.experiment_names(c.search_experiments())),
    }
    ids = {}
    for name, tags, location in _EXPERIMENT_SPECS:
        ids[name] = env.create_experiment(name, artifact_location=location, tags=tags)
        _pause()
    out["created"] = {name: env.attempt(lambda i=i: env.experiment(c.get_experiment(i)))
                      for name, i in ids.items()}
    out["by name"] = env.attempt(lambda: env.experiment(c.get_experiment_by_name("exp-beta")))
    out["by name, missing"] = env.attempt(c.get_experiment_by_name, "no-such-experiment")
    out["by name, other case"] = env.attempt(c.get_experiment_by_name, "exp-delta")
    out["get a missing id"] = env.attempt(c.get_experiment, "987654")
    out["duplicate name"] = env.attempt(c.create_experiment, "exp-alpha")
    out["empty name"] = env.attempt(c.create_experiment, "")
    out["search"] = _experiment_searches(env)
    out["lifecycle"] = _experiment_lifecycle(env, ids)
    out["tags"] = _experiment_tags(env, ids)
    out["search after changes"] = _experiment_searches(env)
    out["fluent"] = _experiments_fluent(env, ids)
    # Last: where deleting Default succeeds, it would change every search above.
    out["delete Default"] = env.outcome(c.delete_experiment, "0")
    out["Default afterwards"] = env.attempt(lambda: env.experiment(c.get_experiment("0")))
    return out


# ----------------------------------------------------------------------------------------------
# 2. runs

def _run_updates(env, full, bare, spare):
    c = env.client

    def view(run_id):
        return env.attempt(lambda: env.run(c.get_run(run_id)))

    out = {"update status": env.outcome(c.update_run, bare, status="FINISHED")}
    out["after update"] = view(bare)
    out["rename"] = env.outcome(c.update_run, bare, name="bare, renamed")
    out["after rename"] = view(bare)
    out["terminate with end time"] = env.outcome(c.set_terminated, full, "FAILED", CLIENT_T0 + 999)
    out["after terminate"] = view(full)
    out["kill"] = env.outcome(c.set_terminated, spare, "KILLED")
    out["after kill"] = view(spare)
    out["schedule"] = env.outcome(c.update_run, spare, status="SCHEDULED")
    out["after schedule"] = view(spare)
    out["bad status"] = env.outcome(c.update_run, spare, status="NAPPING")
    out["terminate, defaults"] = env.outcome(c.set_terminated, spare)
    out["after default terminate"] = view(spare)
    return out


def _run_lifecycle(env, full, exp):
    c = env.client
    out = {
        "delete": env.outcome(c.delete_run, full),
        "deleted": env.attempt(lambda: env.run(c.get_run(full))),
        "log to a deleted run": env.outcome(c.log_param, full, "late", "1"),
        "tag a deleted run": env.outcome(c.set_tag, full, "late", "1"),
        "delete again": env.outcome(c.delete_run, full),
        "restore": env.outcome(c.restore_run, full),
        "restored": env.attempt(lambda: env.run(c.get_run(full))),
        "delete tag": env.outcome(c.delete_tag, full, "a"),
        "delete a missing tag": env.outcome(c.delete_tag, full, "never-set"),
        "delete a tag of a missing run": env.outcome(c.delete_tag, "f" * 32, "a"),
        "get a missing run": env.attempt(c.get_run, "f" * 32),
        "delete a missing run": env.outcome(c.delete_run, "f" * 32),
        "create in a missing experiment": env.outcome(c.create_run, "987654"),
        "after tag deletion": env.attempt(lambda: env.run(c.get_run(full))),
    }
    c.delete_experiment(exp)
    out["create in a deleted experiment"] = env.outcome(c.create_run, exp)
    return out


def _runs_fluent(env):
    c = env.client
    with fluent_api(env.uri):
        mlflow.set_experiment("fluent-runs")
        with mlflow.start_run(run_name="outer", tags={"phase": "train"},
                              description="the outer run") as outer:
            env.adopt(outer)
            mlflow.log_param("lr", 0.01)
            mlflow.log_params({"layers": 3, "act": "relu"})
            mlflow.log_metric("loss", 0.5, step=1)
            mlflow.log_metric("loss", 0.25, step=2)
            mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=2)
            mlflow.set_tag("stage", "one")
            mlflow.set_tags({"k1": "v1", "k2": "v2"})
            with mlflow.start_run(run_name="inner", nested=True) as inner:
                env.adopt(inner)
                mlflow.log_metric("inner_m", 1.0)
        with mlflow.start_run() as unnamed:
            env.adopt(unnamed, named=False)
        mlflow.start_run(run_id=outer.info.run_id)
        mlflow.log_metric("loss", 0.125, step=3)
        mlflow.log_metrics({"async_a": 1.0, "async_b": 2.0}, step=4, synchronous=False)
        mlflow.log_param("resumed", "yes")
        mlflow.flush_async_logging()
        mlflow.end_run(status="KILLED")
    return {
        "outer": env.attempt(lambda: env.run(c.get_run(outer.info.run_id))),
        "inner": env.attempt(lambda: env.run(c.get_run(inner.info.run_id))),
        "unnamed": env.attempt(lambda: env.run(c.get_run(unnamed.info.run_id))),
        "parent of inner": env.attempt(lambda: c.get_parent_run(inner.info.run_id).info.run_id),
        "loss history": env.attempt(lambda: env.history(c.get_metric_history(outer.info.run_id, "loss"))),
        "async history": env.attempt(lambda: env.history(c.get_metric_history(outer.info.run_id, "async_b"))),
    }


def scenario_runs(env):
    c = env.client
    exp = env.create_experiment("runs")
    full = env.create_run(exp, start_time=CLIENT_T0 + 123, run_name="all args",
                          tags={"a": "1", "mlflow.user": "alice", "empty": ""})
    bare = env.create_run(exp)
    spare = env.create_run(exp, run_name="spare")
    run_ids = full.info.run_id, bare.info.run_id, spare.info.run_id
    c.log_param(run_ids[0], "p", "v")
    c.set_tag(run_ids[0], "t", "tv")
    c.log_metric(run_ids[0], "m", 1.5, timestamp=CLIENT_T0 + 5, step=2)
    out = {
        "returned by create, all args": env.run(full),
        "returned by create, defaults": env.run(bare),
        "get, all args": env.attempt(lambda: env.run(c.get_run(run_ids[0]))),
        "get, defaults": env.attempt(lambda: env.run(c.get_run(run_ids[1]))),
    }
    out["updates"] = _run_updates(env, *run_ids)
    out["lifecycle"] = _run_lifecycle(env, run_ids[0], exp)
    out["fluent"] = _runs_fluent(env)
    return out


# ----------------------------------------------------------------------------------------------
# 3. validation of params, tags and metrics

def _param_cases(env, run_id):
    c = env.client
    return {
        "first value": lambda: c.log_param(run_id, "p", "1"),
        "same value again": lambda: c.log_param(run_id, "p", "1"),
        "same value as an int": lambda: c.log_param(run_id, "p", 1),
        "changed value": lambda: c.log_param(run_id, "p", "2"),
        "changed value in a batch": lambda: c.log_batch(run_id, params=[Param("p", "3")]),
        "one key twice in a batch": lambda: c.log_batch(run_id, params=[Param("q", "1"), Param("q", "2")]),
        "one pair twice in a batch": lambda: c.log_batch(run_id, params=[Param("r", "1"), Param("r", "1")]),
        "value of 6000": lambda: c.log_param(run_id, "long", "v" * 6000),
        "value of 6001": lambda: c.log_param(run_id, "too-long", "v" * 6001),
        "key of 250": lambda: c.log_param(run_id, "k" * 250, "1"),
        "key of 251": lambda: c.log_param(run_id, "k" * 251, "1"),
        "key with !": lambda: c.log_param(run_id, "bad!key", "1"),
        "key with ..": lambda: c.log_param(run_id, "a/../b", "1"),
        "empty key": lambda: c.log_param(run_id, "", "1"),
        "key with space, slash, colon": lambda: c.log_param(run_id, "a b/c:d-e.f", "1"),
        "None value": lambda: c.log_param(run_id, "none", None),
        "empty value": lambda: c.log_param(run_id, "blank", ""),
    }


def _tag_cases(env, run_id, exp):
    c = env.client
    return {
        "empty value": lambda: c.set_tag(run_id, "empty", ""),
        "replace": lambda: (c.set_tag(run_id, "swap", "1"), c.set_tag(run_id, "swap", "2")),
        "value of 8000": lambda: c.set_tag(run_id, "long", "v" * 8000),
        "value of 8001": lambda: c.set_tag(run_id, "too-long", "v" * 8001),
        "key of 251": lambda: c.set_tag(run_id, "k" * 251, "1"),
        "key with !": lambda: c.set_tag(run_id, "bad!key", "1"),
        "experiment tag of 20001": lambda: c.set_experiment_tag(exp, "big", "v" * 20001),
    }


def _metric_cases(env, run_id):
    c = env.client
    return {
        "string value": lambda: c.log_metric(run_id, "m", "abc"),
        "numeric string": lambda: c.log_metric(run_id, "m", "1.5"),
        "None value": lambda: c.log_metric(run_id, "m", None),
        "bool value": lambda: c.log_metric(run_id, "flag", True),
        "numpy float32": lambda: c.log_metric(run_id, "np32", np.float32(2.5), step=1),
        "int value": lambda: c.log_metric(run_id, "int", 3, step=1),
        "float step": lambda: c.log_metric(run_id, "m", 1.0, step=1.5),
        "string step": lambda: c.log_metric(run_id, "m", 1.0, step="3"),
        "string timestamp": lambda: c.log_metric(run_id, "m", 1.0, timestamp="soon"),
        "key of 251": lambda: c.log_metric(run_id, "k" * 251, 1.0),
        "key with !": lambda: c.log_metric(run_id, "m!", 1.0),
    }


def _batch_cases(env, run_id):
    c, store = env.client, env.store
    many = [metric("bulk", float(i), i, offset=i) for i in range(2500)]
    return {
        "2500 metrics through the client": lambda: c.log_batch(run_id, metrics=many),
        "150 params and 150 tags through the client": lambda: c.log_batch(
            run_id, params=[Param(f"bp{i}", str(i)) for i in range(150)],
            tags=[RunTag(f"bt{i}", str(i)) for i in range(150)]),
        "1001 metrics in one store call": lambda: store.log_batch(
            run_id, metrics=[metric("over", 1.0, i) for i in range(1001)], params=[], tags=[]),
        "101 params in one store call": lambda: store.log_batch(
            run_id, metrics=[], params=[Param(f"sp{i}", "1") for i in range(101)], tags=[]),
        "empty batch": lambda: c.log_batch(run_id),
        "to a missing run": lambda: c.log_batch("f" * 32, metrics=[metric("m", 1.0, 0)]),
    }


def scenario_validation(env):
    c = env.client
    exp = env.create_experiment("validation")
    run_id = env.create_run(exp, run_name="checked").info.run_id
    groups = {"params": _param_cases(env, run_id), "tags": _tag_cases(env, run_id, exp),
              "metrics": _metric_cases(env, run_id), "batches": _batch_cases(env, run_id)}
    out = {group: {label: env.outcome(call) for label, call in cases.items()}
           for group, cases in groups.items()}
    out["run afterwards"] = env.attempt(lambda: env.run(c.get_run(run_id)))
    out["bulk history"] = env.attempt(lambda: env.history(c.get_metric_history(run_id, "bulk")))
    return out


# ----------------------------------------------------------------------------------------------
# 4. metric values, steps, timestamps and history paging

_SERIES = {
    "nan": [(math.nan, 0, 0)],
    "plus inf": [(math.inf, 0, 0)],
    "minus inf": [(-math.inf, 0, 0)],
    "specials in one series": [(1.0, 0, 0), (math.nan, 1, 1), (math.inf, 2, 2), (-math.inf, 3, 3),
                               (1.7976931348623157e308, 4, 4), (-0.0, 5, 5), (5e-324, 6, 6)],
    "negative steps": [(float(s), s, 10 + s) for s in range(-5, 0)],
    "repeated step": [(0.1, 3, 1), (0.2, 3, 2), (0.3, 3, 3)],
    "out of order steps": [(float(s), s, k) for k, s in enumerate([5, 1, 4, 2, 3])],
    "late step early time": [(1.0, 9, 100), (2.0, 10, 50)],
    "big steps": [(1.0, 2**40, 0), (2.0, -(2**40), 1)],
    "paged": [(i * 0.5, i // 2, i) for i in range(31)],
}


def _store_pages(env, run_id, key, max_results):
    """Page through the store's own get_metric_history (the client always asks for 25,000)."""
    sizes, points, token = [], [], None
    for _ in range(100):
        page = env.store.get_metric_history(run_id, key, max_results=max_results, page_token=token)
        sizes.append(len(page))
        points.extend(page)
        token = page.token or None
        if token is None:
            break
    return {"page sizes": sizes, "all points": env.history(points)}


def scenario_metrics(env):
    c = env.client
    exp = env.create_experiment("metrics")
    run_id = env.create_run(exp, run_name="values").info.run_id
    for key, points in _SERIES.items():
        for value, step, offset in points:
            c.log_metric(run_id, key, value, timestamp=CLIENT_T0 + offset, step=step)
    c.log_metric(run_id, "clock and step 0", 7.0)
    c.log_metric(run_id, "clock and step 0", 8.0)
    out = {key: env.attempt(lambda k=key: env.history(c.get_metric_history(run_id, k)))
           for key in [*_SERIES, "clock and step 0"]}
    out["latest"] = env.attempt(lambda: env.run(c.get_run(run_id))["metrics"])
    out["unknown key"] = env.attempt(lambda: env.history(c.get_metric_history(run_id, "absent")))
    out["missing run"] = env.attempt(c.get_metric_history, "f" * 32, "nan")
    out["store pages of 7"] = env.attempt(_store_pages, env, run_id, "paged", 7)
    out["store pages of 31"] = env.attempt(_store_pages, env, run_id, "paged", 31)
    out["store pages of 1"] = env.attempt(_store_pages, env, run_id, "repeated step", 1)
    out["store, no max_results"] = env.attempt(
        lambda: env.history(env.store.get_metric_history(run_id, "paged")))
    with fluent_api(env.uri):
        mlflow.set_experiment(experiment_id=exp)
        with mlflow.start_run(run_name="fluent steps") as run:
            env.adopt(run)
            for step in range(4):
                mlflow.log_metrics({"a": step * 1.5, "b": -step}, step=step)
            mlflow.log_metric("c", math.nan, step=2)
    out["fluent"] = env.attempt(lambda: env.run(c.get_run(run.info.run_id))["metrics"])
    out["fluent history"] = env.attempt(lambda: env.history(c.get_metric_history(run.info.run_id, "a")))
    return out


# ----------------------------------------------------------------------------------------------
# 5. search_runs

_RUN_FILTERS = [
    "", "metrics.x < 2", "metrics.x >= 3.5", "metrics.x = 2.5", "metrics.x != 2.5",
    "metrics.y > 3", "metrics.y <= 2", "metrics.`loss` < 0.1", "metrics.missing > 0",
    "params.p = 'a'", "params.p != 'a'", "params.p LIKE 'b%'", "params.lr IS NULL",
    "params.lr IS NOT NULL", "params.missing = 'x'",
    "tags.t LIKE '%a%'", "tags.t ILIKE 'alpha%'", "tags.t != 'beta'", "tags.nowhere IS NULL",
    "tags.`mlflow.runName` LIKE 'run-0%'",
    "attributes.status = 'FINISHED'", "attributes.status != 'RUNNING'",
    "attributes.status IN ('FAILED', 'KILLED')",
    "attributes.run_name ILIKE 'run-1%'", "attributes.run_name LIKE '%Special'",
    "run_name = 'run-03'",
    f"attributes.start_time > {CLIENT_T0 + 10_000}", f"attributes.end_time <= {CLIENT_T0 + 12_500}",
    f"attributes.created >= {CLIENT_T0 + 20_000}",
    "attributes.run_id IN ('{r3}', '{r5}', '{r7}', '{r25}')", "attributes.run_id = '{r4}'",
    "attributes.run_id NOT IN ('{r0}', '{r1}')",
    "metrics.x > 1 AND params.p = 'b'",
    "metrics.x > 0 AND tags.t != 'beta' AND attributes.status = 'FINISHED'",
]
_BAD_RUN_FILTERS = ["metrics.x ~ 1", "bogus.x = 1", "params.p > 'a'", "metrics.x = 'one'"]
_RUN_ORDERS = [
    [], ["metrics.x DESC"], ["metrics.x"], ["metrics.y DESC"], ["metrics.y"],
    ["params.p", "attributes.start_time"], ["params.p DESC", "metrics.x ASC"], ["params.lr"],
    ["attributes.start_time"], ["attributes.run_name DESC"], ["tags.t", "metrics.x DESC"],
    ["attributes.end_time DESC"], ["attributes.status"], ["metrics.`loss`"],
]
_STATUSES = ["FINISHED", "FAILED", "RUNNING", "KILLED"]


def _search_fixture(env):
    """30 runs over two experiments; start times are distinct, so orderings have no ties."""
    c = env.client
    experiments = env.create_experiment("search-a"), env.create_experiment("search-b")
    run_ids = []
    for i in range(30):
        name = f"Run-{i:02d}-Special" if i % 5 == 0 else f"run-{i:02d}"
        start = CLIENT_T0 + 1000 * i
        run_id = env.create_run(experiments[i >= 24], start_time=start, run_name=name,
                                tags={"t": ["alpha", "beta", "gamma", "Alphabet"][i % 4]}).info.run_id
        y = [0.0, 1.0, 2.0, math.nan, math.inf, 5.0, 6.0][i % 7]
        metrics = [metric("loss", 1.0 / (i + 1), 0, i), metric("loss", 0.5 / (i + 1), 1, i + 1),
                   metric("y", y, 0, i)]
        if i % 6 != 5:
            metrics.append(metric("x", (i * 7) % 11 * 0.5, 0, i))
        params = [Param("p", "abc"[i % 3])] + ([Param("lr", str(0.001 * (i + 1)))] if i % 2 == 0 else [])
        c.log_batch(run_id, metrics=metrics, params=params)
        if _STATUSES[i % 4] != "RUNNING":
            c.set_terminated(run_id, _STATUSES[i % 4], end_time=start + 500)
        run_ids.append(run_id)
    for i in (7, 19):
        c.delete_run(run_ids[i])
    return experiments, run_ids


def scenario_search(env):
    c = env.client
    experiments, run_ids = _search_fixture(env)
    both = list(experiments)
    refs = {f"r{i}": run_id for i, run_id in enumerate(run_ids)}

    def search(**kwargs):
        return env.attempt(lambda: env.run_refs(c.search_runs(both, **kwargs)))

    out = {"filter": {f: search(filter_string=f.format(**refs)) for f in _RUN_FILTERS}}
    out["bad filter"] = {f: search(filter_string=f) for f in _BAD_RUN_FILTERS}
    out["order"] = {",".join(o) or "default": search(order_by=o) for o in _RUN_ORDERS}
    out["bad order"] = search(order_by=["metrics.x SIDEWAYS"])
    out["filter and order"] = search(filter_string="params.p != 'c'", order_by=["metrics.y DESC"])
    for view_type in (ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL):
        out[f"view type {view_type}"] = search(run_view_type=view_type)
    for size, order in [(7, ["metrics.x DESC"]), (7, []), (28, []), (50, [])]:
        out[f"pages of {size} by {order}"] = env.attempt(_pages, lambda token, s=size, o=order: c.search_runs(
            both, max_results=s, order_by=o, page_token=token), env.run_refs)
    out["max_results 50001"] = search(max_results=50001)
    out["one experiment"] = env.attempt(lambda: env.run_refs(c.search_runs([experiments[1]])))
    out["missing experiment"] = env.attempt(lambda: env.run_refs(c.search_runs(["987654"])))
    out["entities"] = env.attempt(lambda: [env.run(r) for r in c.search_runs(both, run_view_type=ViewType.ALL)])
    with fluent_api(env.uri):
        out["fluent"] = env.attempt(lambda: env.run_refs(mlflow.search_runs(
            experiment_names=["search-a"], filter_string="params.p = 'b'", output_format="list")))
    return out


# ----------------------------------------------------------------------------------------------
# 6. dataset inputs

def _eval_dataset(**overrides):
    fields = dict(name="eval", digest="abc123", source_type="local", source='{"uri": "/data/eval"}',
                  schema='{"x": "double"}', profile='{"rows": 2}')
    fields.update(overrides)
    return Dataset(**fields)


def _context(value):
    return InputTag("mlflow.data.context", value)


def _logged_fluently(env):
    import mlflow.data

    array = np.arange(12, dtype=np.float64).reshape(4, 3)
    train = mlflow.data.from_numpy(array, source="s3://conformance-bucket/train.npy", name="train")
    with fluent_api(env.uri):
        mlflow.set_experiment("datasets")
        with mlflow.start_run(run_name="trainer") as run:
            env.adopt(run)
            mlflow.log_input(train, context="training", tags={"split": "a"})
            mlflow.log_input(train, context="training", tags={"split": "a"})
            mlflow.log_input(train, context="validation")
    return run.info.run_id


def scenario_datasets(env):
    c = env.client
    trainer = _logged_fluently(env)
    exp = c.get_experiment_by_name("datasets").experiment_id
    first, second = (env.create_run(exp, run_name=name, start_time=CLIENT_T0 + k).info.run_id
                     for k, name in enumerate(("first", "second")))
    log = env.outcome
    out = {
        "client": log(c.log_inputs, first, [DatasetInput(_eval_dataset(), [_context("eval")])]),
        "same dataset, other run": log(c.log_inputs, second, [DatasetInput(_eval_dataset(), [_context("eval")])]),
        "no schema or profile": log(c.log_inputs, second, [DatasetInput(
            _eval_dataset(name="bare", digest="d1", schema=None, profile=None), [])]),
        "empty list": log(c.log_inputs, first, []),
        "None": log(c.log_inputs, first, None),
        "missing run": log(c.log_inputs, "f" * 32, [DatasetInput(_eval_dataset(), [])]),
        "name of 501": log(c.log_inputs, first, [DatasetInput(_eval_dataset(name="n" * 501), [])]),
        "digest of 37": log(c.log_inputs, first, [DatasetInput(_eval_dataset(digest="d" * 37), [])]),
        "input tag value of 501": log(c.log_inputs, first, [DatasetInput(
            _eval_dataset(name="tagged"), [InputTag("long", "v" * 501)])]),
    }
    out["runs"] = {run_id: env.attempt(lambda r=run_id: env.run(c.get_run(r)))
                   for run_id in (trainer, first, second)}
    for f in ["datasets.name = 'train'", "datasets.context = 'eval'", "datasets.digest = 'abc123'",
              "datasets.name IN ('train', 'bare')", "datasets.context LIKE 'valid%'"]:
        out[f] = env.attempt(lambda f=f: env.run_refs(c.search_runs([exp], filter_string=f)))
    return out


# ----------------------------------------------------------------------------------------------
# 7. get_metric_history_bulk_interval: stores choose points differently (steplog keeps each
# bucket's minimum and maximum), so only properties every conforming answer has are compared.

def _bulk_fixture(env):
    c = env.client
    exp = env.create_experiment("bulk")
    dense, sparse, repeated = (env.create_run(exp, run_name=n).info.run_id
                               for n in ("dense", "sparse", "repeated"))
    values = [50.0 if i == 250 else math.sin(i / 20) for i in range(500)]
    c.log_batch(dense, metrics=[metric("m", v, i, i) for i, v in enumerate(values)])
    c.log_batch(sparse, metrics=[metric("m", float(s), s, s) for s in range(0, 73, 2)])
    c.log_batch(repeated, metrics=[metric("m", float(i), i // 3, i) for i in range(60)])
    return dense, sparse, repeated


def _point(m):
    return (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)


def _interval_properties(points, history, max_results, start, end):
    """Each property is True or a short account of how the answer breaks it."""
    in_range = [p for p in history if start is None or start <= p[0] <= end]
    steps = {p[0] for p in points}
    bad = {
        "at most max_results": len(points) <= max_results or f"{len(points)} points",
        "real points": [p for p in points if p not in history][:5] or True,
        "within the range": sorted(s for s in steps if start is not None and not start <= s <= end)[:5] or True,
        "something when the range has points": bool(points) or not in_range,
    }
    if in_range and max_results > 1:
        ends = {in_range[0][0], in_range[-1][0]}
        bad["first and last step"] = ends <= steps or f"missing steps {sorted(ends - steps)}"
    if len(in_range) <= max_results:
        missing = sorted(set(in_range) - set(points), key=str)
        bad["all points when they fit"] = missing[:5] or True
    return bad


def _bulk_interval(env, histories, run_ids, max_results, start=None, end=None, key="m"):
    answer = env.store.get_metric_history_bulk_interval(run_ids, key, max_results, start, end)
    by_run = {run_id: [] for run_id in run_ids}
    foreign = []
    for item in answer:
        (by_run[item.run_id] if item.run_id in by_run else foreign).append(_point(item))
    result = {run_id: _interval_properties(points, histories.get((run_id, key), []), max_results, start, end)
              for run_id, points in by_run.items()}
    result["points of other runs"] = foreign[:5]
    return result


def scenario_bulk_interval(env):
    c, store = env.client, env.store
    dense, sparse, repeated = runs = _bulk_fixture(env)
    histories = {(r, "m"): sorted((_point(m) for m in c.get_metric_history(r, "m")), key=lambda p: p[:2])
                 for r in runs}
    calls = {
        "all runs, 50": (list(runs), 50),
        "steps 100..300, 40": ([dense, sparse], 40, 100, 300),
        "max_results 1": ([dense, sparse], 1),
        "max_results 2": ([dense], 2),
        "more than the history": ([sparse, repeated], 100),
        "range past the end": ([sparse], 10, 60, 1000),
        "range without points": ([dense], 10, 1000, 2000),
        "unknown key": ([dense], 10, None, None, "absent"),
    }
    out = {label: env.attempt(_bulk_interval, env, histories, *args) for label, args in calls.items()}

    def raw(*args):
        return env.attempt(lambda: [_point(m) for m in store.get_metric_history_bulk_interval(*args)][:5])

    out["start without end"] = raw([dense], "m", 10, 5, None)
    out["missing run"] = raw(["f" * 32], "m", 10, None, None)
    out["from steps"] = {
        f"{name} {steps}": env.attempt(lambda r=run_id, s=steps: env.history(
            store.get_metric_history_bulk_interval_from_steps(r, "m", s, 100)))
        for name, run_id, steps in [("dense", dense, [0, 10, 250, 499, 1000]),
                                    ("repeated", repeated, [1, 5]), ("sparse", sparse, [1, 3])]
    }
    out["has get_metric_history_bulk"] = hasattr(store, "get_metric_history_bulk")
    if out["has get_metric_history_bulk"]:
        out["history bulk"] = env.attempt(lambda: _history_bulk(env, [sparse, repeated]))
    return out


def _history_bulk(env, run_ids):
    by_run = {run_id: [] for run_id in run_ids}
    for item in env.store.get_metric_history_bulk(run_ids, "m", 10_000):
        by_run.setdefault(item.run_id, []).append(item)
    return {run_id: env.history(points) for run_id, points in by_run.items()}


# ----------------------------------------------------------------------------------------------

_SCENARIO_BUGS = {"AttributeError", "TypeError", "NameError", "KeyError", "IndexError", "ValueError"}
SCENARIOS = [scenario_experiments, scenario_runs, scenario_validation, scenario_metrics,
             scenario_search, scenario_datasets, scenario_bulk_interval]


@pytest.mark.parametrize("scenario", SCENARIOS,
                         ids=[f"{CANDIDATE}-{s.__name__.removeprefix('scenario_')}" for s in SCENARIOS])
def test_behaves_as_sqlite(scenario, uris):
    reference, candidate = uris
    expected = play(scenario, reference)
    # Equal failures on both sides would hide a scenario that no longer tests anything.
    broken = list(failures(expected, _SCENARIO_BUGS))
    assert not broken, f"the scenario fails on the reference store itself: {broken[:5]}"
    actual = play(scenario, candidate)
    if CANDIDATE == "steplog":
        set_aside_documented(expected, actual)
    assert_conforms(expected, actual, "sqlite", CANDIDATE)


# Where steplog answers otherwise on purpose (docs/MLFLOW.md), each difference checked
# exactly, then left out of the comparison.
DOCUMENTED = {
    # MLflow's SQLite store passes on its database's IntegrityError as BAD_REQUEST.
    ("lifecycle", "rename onto a taken name"): ("BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"),
}


def set_aside_documented(expected: dict, actual: dict) -> None:
    for path, (want_expected, want_actual) in DOCUMENTED.items():
        *parents, leaf = path
        got_expected, got_actual = expected, actual
        for key in parents:
            got_expected, got_actual = got_expected.get(key, {}), got_actual.get(key, {})
        if leaf in got_expected:
            assert (got_expected[leaf].error_code, got_actual[leaf].error_code) == (want_expected, want_actual)
            del got_expected[leaf], got_actual[leaf]


def test_normalization_keeps_real_differences():
    """What the comparison forgives (NaN, the inf stand-in, messages) and what it reports."""
    ids = {"a" * 32: "run#0"}
    sqlite_like = scrub({"v": [math.nan, 1.7976931348623157e308, -1.7976931348623157e308, 1.0],
                         "id": "a" * 32, "e": Failure("MlflowException", "INVALID_PARAMETER_VALUE", "x")}, ids)
    steplog_like = scrub({"v": [math.nan, math.inf, -math.inf, 1.0],
                          "id": "a" * 32, "e": Failure("MlflowException", "INVALID_PARAMETER_VALUE", "y")}, ids)
    assert list(differences(sqlite_like, steplog_like)) == []
    changed = scrub(dict(steplog_like, v=[math.nan, math.inf, math.inf, 1], e=Failure("MlflowException", None)), ids)
    assert list(differences(sqlite_like, changed)) == [
        "$.e: expected Failure(MlflowException, INVALID_PARAMETER_VALUE: 'x'), got Failure(MlflowException, None: '')",
        "$.v[2]: expected '-inf', got 'inf'",
        "$.v[3]: expected 1.0, got 1",
    ]
