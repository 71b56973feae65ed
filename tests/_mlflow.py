"""Differential testing of MLflow tracking stores: the scenario environment, normalization, diff.

A scenario drives one tracking URI with real MlflowClient and fluent calls and returns a plain
structure of dicts, lists, strings and numbers. What two conforming stores may legitimately
disagree on is normalized here, so that they give equal structures:

- run ids become ``run#k`` (k = order of creation in the scenario), experiment ids ``exp:NAME``
  (the name the experiment had when the scenario first saw it);
- times that come from the clock become ``"<clock>"``; times the client passes lie far from the
  clock (``CLIENT_T0``, 2020) and are compared exactly;
- an artifact location the client did not choose becomes ``"<default>"``, and a run's artifact
  URI is written relative to its experiment's location;
- floats: NaN is ``"nan"``; |x| >= the largest float64 is ``"inf"``/``"-inf"`` (MLflow's SQLite
  store keeps +-inf as +-1.7976931348623157e308);
- a name MLflow generated for a run created without one becomes ``"<generated>"``;
- an exception becomes a ``Failure`` (type name and MLflow error code; the message is shown in a
  difference but never compared).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time

import mlflow
from mlflow.entities import Metric
from mlflow.environment_variables import MLFLOW_EXPERIMENT_ID
from mlflow.tracking import fluent
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

FLOAT64_MAX = 1.7976931348623157e308
# 2020-09-13: every time a scenario passes lies near this, years away from the clock.
CLIENT_T0 = 1_600_000_000_000
# Clock times lie between the import of this module and now, give or take this much.
_CLOCK_SLACK_MS = 10 * 60 * 1000
_IMPORTED_MS = int(time.time() * 1000)
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def tracking_schemes() -> set[str]:
    """The URI schemes MLflow's tracking store registry knows, plugins included."""
    from mlflow.tracking._tracking_service import utils

    return set(utils._tracking_store_registry._registry)


@dataclasses.dataclass(frozen=True)
class Failure:
    """An exception a call raised: compared by type name and error code only."""

    raised: str
    error_code: str | None
    message: str = dataclasses.field(default="", compare=False)

    def __repr__(self):
        return f"Failure({self.raised}, {self.error_code}: {self.message[:160]!r})"


def from_clock(value) -> bool:
    now = int(time.time() * 1000)
    return isinstance(value, int) and _IMPORTED_MS - _CLOCK_SLACK_MS <= value <= now + _CLOCK_SLACK_MS


def clock(value):
    return "<clock>" if from_clock(value) else value


def float_key(value: float):
    """A sort key for metric values that places NaN last and treats the inf stand-in as inf."""
    if math.isnan(value):
        return (1, 0.0)
    if abs(value) >= FLOAT64_MAX:
        return (0, math.copysign(math.inf, value))
    return (0, value)


class Env:
    """One tracking URI under test and what a scenario learned about it, for normalization."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = mlflow.MlflowClient(uri)
        self.run_ids: list[str] = []
        self.unnamed_runs: set[str] = set()
        self._experiment_names = {"0": "Default"}
        self._explicit_locations: set[str] = set()
        self._experiment_locations: dict[str, str] = {}

    @property
    def store(self):
        """The store object behind the client, for calls the client does not offer."""
        return self.client._tracking_client.store

    # --- recording what the scenario creates -------------------------------------------------
    def create_experiment(self, name, artifact_location=None, tags=None) -> str:
        experiment_id = self.client.create_experiment(name, artifact_location, tags)
        self._experiment_names[experiment_id] = name
        if artifact_location is not None:
            self._explicit_locations.add(experiment_id)
        return experiment_id

    def create_run(self, experiment_id, **kwargs):
        run = self.client.create_run(experiment_id, **kwargs)
        self.adopt(run, named=kwargs.get("run_name") is not None)
        return run

    def adopt(self, run, named=True):
        """Record a run created elsewhere (the fluent API): its id joins the order of creation."""
        self.run_ids.append(run.info.run_id)
        if not named:
            self.unnamed_runs.add(run.info.run_id)
        return run.info.run_id

    # --- calling -------------------------------------------------------------------------------
    @staticmethod
    def attempt(call, *args, **kwargs):
        """call's result, or the Failure it raised."""
        try:
            return call(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure is a result to compare
            code = getattr(error, "error_code", None)
            return Failure(type(error).__name__, code, str(error))

    def outcome(self, call, *args, **kwargs):
        """"ok" when call returns (whatever it returns), else the Failure it raised."""
        result = self.attempt(call, *args, **kwargs)
        return result if isinstance(result, Failure) else "ok"

    # --- entity views ----------------------------------------------------------------------------
    def experiment_ref(self, experiment_id):
        if experiment_id not in self._experiment_names:
            self._experiment_names[experiment_id] = self.client.get_experiment(experiment_id).name
        return f"exp:{self._experiment_names[experiment_id]}"

    def experiment(self, experiment):
        if experiment is None:
            return None
        location = experiment.artifact_location
        if experiment.experiment_id not in self._explicit_locations and isinstance(location, str):
            location = "<default>" if location else location
        return {
            "id": self.experiment_ref(experiment.experiment_id),
            "name": experiment.name,
            "lifecycle_stage": experiment.lifecycle_stage,
            "artifact_location": location,
            "tags": dict(experiment.tags),
            "creation_time": clock(experiment.creation_time),
            "last_update_time": clock(experiment.last_update_time),
        }

    def experiment_names(self, experiments):
        return [e.name for e in experiments]

    def _run_artifact_uri(self, info):
        if info.experiment_id not in self._experiment_locations:
            location = self.client.get_experiment(info.experiment_id).artifact_location
            self._experiment_locations[info.experiment_id] = location
        location = self._experiment_locations[info.experiment_id]
        uri = info.artifact_uri
        if isinstance(uri, str) and isinstance(location, str) and uri.startswith(location + "/"):
            return "<experiment>" + uri[len(location):]
        return uri

    def run(self, run):
        info, data = run.info, run.data
        name, tags = info.run_name, dict(data.tags)
        if info.run_id in self.unnamed_runs and isinstance(name, str) and name:
            if tags.get("mlflow.runName") == name:
                tags["mlflow.runName"] = "<generated>"
            name = "<generated>"
        return {
            "run_id": info.run_id,
            "experiment": self.experiment_ref(info.experiment_id),
            "run_name": name,
            "user_id": info.user_id,
            "status": info.status,
            "start_time": clock(info.start_time),
            "end_time": clock(info.end_time),
            "lifecycle_stage": info.lifecycle_stage,
            "artifact_uri": self._run_artifact_uri(info),
            "params": dict(data.params),
            "tags": tags,
            "metrics": dict(data.metrics),
            "datasets": self.dataset_inputs(run.inputs.dataset_inputs if run.inputs else []),
        }

    def run_refs(self, runs):
        """Run ids in the order a search returned them (scrub turns them into run#k)."""
        return [r.info.run_id for r in runs]

    @staticmethod
    def dataset_inputs(dataset_inputs):
        views = []
        for dataset_input in dataset_inputs:
            d = dataset_input.dataset
            views.append({
                "name": d.name, "digest": d.digest, "source_type": d.source_type,
                "source": d.source, "schema": d.schema, "profile": d.profile,
                "tags": {t.key: t.value for t in dataset_input.tags},
            })
        # MLflow promises no order of a run's inputs.
        return sorted(views, key=lambda v: (v["name"], v["digest"], sorted(v["tags"].items())))

    @staticmethod
    def metric(metric):
        return [metric.key, metric.step, clock(metric.timestamp), metric.value]

    def history(self, metrics):
        """Points sorted by (step, timestamp, value): stores may return them in any order."""
        ordered = sorted(metrics, key=lambda m: (m.step, m.timestamp, float_key(m.value)))
        return [self.metric(m) for m in ordered]


def scrub(value, run_ids):
    """Normalize what the entity views leave: run ids inside any string, and float specials."""
    if isinstance(value, Failure):
        return value
    if isinstance(value, dict):
        return {scrub(k, run_ids): scrub(v, run_ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, run_ids) for v in value]
    if isinstance(value, str):
        return _RUN_ID.sub(lambda m: run_ids.get(m.group(0), m.group(0)), value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) >= FLOAT64_MAX:
            return "inf" if value > 0 else "-inf"
    return value


@contextlib.contextmanager
def fluent_api(uri):
    """The fluent API on uri; no active run or experiment leaks out of the block."""
    with _use_tracking_uri(uri):
        try:
            yield
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            fluent._active_experiment_id = None
            MLFLOW_EXPERIMENT_ID.unset()


def play(scenario, uri):
    """Run scenario on a fresh store at uri and return its normalized result."""
    env = Env(uri)
    result = scenario(env)
    names = {run_id: f"run#{k}" for k, run_id in enumerate(env.run_ids)}
    return scrub(result, names)


def failures(result, kinds, path="$"):
    """(path, Failure) for every Failure in result whose exception type is one of kinds."""
    if isinstance(result, Failure):
        if result.raised in kinds:
            yield path, result
    elif isinstance(result, dict):
        for key, value in result.items():
            yield from failures(value, kinds, f"{path}.{key}")
    elif isinstance(result, list):
        for index, value in enumerate(result):
            yield from failures(value, kinds, f"{path}[{index}]")


def differences(expected, actual, path="$"):
    """One line per place where actual differs from expected, with both values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}"
            if key not in actual:
                yield f"{where}: missing; expected {_short(expected[key])}"
            elif key not in expected:
                yield f"{where}: unexpected {_short(actual[key])}"
            else:
                yield from differences(expected[key], actual[key], where)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (e, a) in enumerate(zip(expected, actual)):
            yield from differences(e, a, f"{path}[{index}]")
    elif type(expected) is not type(actual) or expected != actual:
        yield f"{path}: expected {_short(expected)}, got {_short(actual)}"


def _short(value, limit=400):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def assert_conforms(expected, actual, reference: str, candidate: str):
    found = list(differences(expected, actual))
    shown = "\n".join(found[:80])
    more = f"\n... and {len(found) - 80} more" if len(found) > 80 else ""
    assert not found, f"{candidate} differs from {reference} in {len(found)} places:\n{shown}{more}"


def metric(key, value, step, offset=0):
    """A Metric at a client-chosen time: CLIENT_T0 + offset ms."""
    return Metric(key, value, CLIENT_T0 + offset, step)
