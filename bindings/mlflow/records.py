"""steplog records as MLflow entities, and back: the mapping docs/MLFLOW.md describes.

An experiment is a steplog experiment record (its MLflow id in "id", tags, "deleted",
"artifact_location"); a run is a steplog run record ("user", "deleted", "inputs" added);
a metric point is a point of the scalar series named by the key, its MLflow timestamp
(ms) kept as time_ns = ms * 1e6.
"""

from __future__ import annotations

import json
import math
import sys

from mlflow.entities import (Dataset, DatasetInput, Experiment, ExperimentTag, InputTag, LifecycleStage, Metric,
                             Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunTag)

from steplog.engine.catalog import flatten

NS_PER_MS = 1_000_000
FLOAT_MAX = sys.float_info.max   # what MLflow's SQL store gives for inf: MLflow's UI (GraphQL) cannot show inf
STATUS_TO_MLFLOW = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED",
                    "scheduled": "SCHEDULED", "crashed": "RUNNING"}
STATUS_FROM_MLFLOW = {value: key for key, value in STATUS_TO_MLFLOW.items() if key != "crashed"}


def mlflow_value(value: float) -> float:
    """A metric value as MLflow's clients get it: +-inf as +-FLOAT_MAX (kept as inf in steplog)."""
    return math.copysign(FLOAT_MAX, value) if math.isinf(value) else value


def ms(ns: int | None) -> int | None:
    return None if ns is None else ns // NS_PER_MS


def lifecycle(record: dict) -> str:
    return LifecycleStage.DELETED if record.get("deleted") else LifecycleStage.ACTIVE


def experiment_entity(record: dict) -> Experiment:
    tags = record.get("tags") or {}
    return Experiment(experiment_id=record["id"], name=record["name"],
                      artifact_location=record.get("artifact_location") or "",
                      lifecycle_stage=lifecycle(record),
                      tags=[ExperimentTag(key, str(value)) for key, value in tags.items()],
                      creation_time=ms(record["created"]), last_update_time=ms(record.get("updated", record["created"])))


def run_info(record: dict, experiment: dict) -> RunInfo:
    return RunInfo(run_id=record["id"], experiment_id=experiment["id"], user_id=record.get("user") or "",
                   status=STATUS_TO_MLFLOW.get(record["status"], "RUNNING"), start_time=ms(record["start_time"]),
                   end_time=ms(record["end_time"]), lifecycle_stage=lifecycle(record),
                   artifact_uri=artifact_uri(record, experiment), run_name=record["name"])


def artifact_uri(record: dict, experiment: dict) -> str:
    """The run's own (kept by the importer), else under its experiment's location."""
    if record.get("artifact_uri"):
        return record["artifact_uri"]
    root = (experiment.get("artifact_location") or "").rstrip("/")
    return f"{root}/{record['id']}/artifacts"


def run_entity(record: dict, experiment: dict, latest: dict) -> Run:
    """latest: metric key -> (value, timestamp ms, step)."""
    metrics = [Metric(key, value, timestamp, step) for key, (value, timestamp, step) in latest.items()]
    data = RunData(metrics=metrics, params=[Param(k, v) for k, v in texts(record["params"]).items()],
                   tags=[RunTag(k, v) for k, v in run_tags(record).items()])
    return Run(run_info(record, experiment), data, run_inputs(record), RunOutputs(model_outputs=[]))


def run_inputs(record: dict) -> RunInputs:
    inputs = []
    for found in record.get("inputs") or ():
        dataset = Dataset(name=found["name"], digest=found["digest"], source_type=found["source_type"],
                          source=found["source"], schema=found.get("schema"), profile=found.get("profile"))
        inputs.append(DatasetInput(dataset, [InputTag(k, v) for k, v in found.get("tags", {}).items()]))
    return RunInputs(dataset_inputs=inputs, model_inputs=[])


def dataset_record(dataset_input: DatasetInput) -> dict:
    dataset = dataset_input.dataset
    return {"name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type,
            "source": dataset.source, "schema": dataset.schema, "profile": dataset.profile,
            "tags": {tag.key: tag.value for tag in dataset_input.tags}}


def run_tags(record: dict) -> dict[str, str]:
    """A run's tags as MLflow shows them; a run steplog's own API logged gets the tags
    MLflow would have given it (its name, its parent run)."""
    tags = texts(record["tags"])
    tags.setdefault("mlflow.runName", record["name"])
    if record.get("parent"):
        tags.setdefault("mlflow.parentRunId", record["parent"])
    return tags


def texts(mapping: dict) -> dict[str, str]:
    """Params or tags as MLflow keeps them: flat keys (steplog's nested dicts dotted), str values."""
    return {key: text(value) for key, value in flatten(mapping, "").items()}


def text(value) -> str:
    """A param or tag value as MLflow keeps it: a str (steplog's own runs may hold numbers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


class RunView:
    """What MLflow's SearchUtils.filter and sort read of a run (run.info attributes,
    run.data dicts, run.inputs), each part made when first read: a search builds no
    entity for the runs it leaves out."""

    __slots__ = ("record", "_experiment", "_metrics", "_info", "_data")

    def __init__(self, record: dict, experiment: dict, metrics: dict):
        self.record, self._experiment, self._metrics = record, experiment, metrics
        self._info = self._data = None

    @property
    def info(self) -> "_Info":
        if self._info is None:
            self._info = _Info(self.record, self._experiment)
        return self._info

    @property
    def data(self) -> "_Data":
        if self._data is None:
            self._data = _Data(self._metrics, texts(self.record["params"]), run_tags(self.record))
        return self._data

    @property
    def inputs(self) -> RunInputs:
        return run_inputs(self.record)


class _Info:
    """RunInfo's searchable attributes, as plain values."""

    __slots__ = ("run_id", "run_uuid", "experiment_id", "user_id", "status", "start_time", "end_time",
                 "lifecycle_stage", "artifact_uri", "run_name")

    def __init__(self, record: dict, experiment: dict):
        self.run_id = self.run_uuid = record["id"]
        self.experiment_id = experiment["id"]
        self.user_id = record.get("user") or ""
        self.status = STATUS_TO_MLFLOW.get(record["status"], "RUNNING")
        self.start_time, self.end_time = ms(record["start_time"]), ms(record["end_time"])
        self.lifecycle_stage = lifecycle(record)
        self.artifact_uri = artifact_uri(record, experiment)
        self.run_name = record["name"]


class _Data:
    __slots__ = ("metrics", "params", "tags")

    def __init__(self, metrics: dict, params: dict, tags: dict):
        self.metrics, self.params, self.tags = metrics, params, tags
