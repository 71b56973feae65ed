"""MLflow's tracking store on a steplog store: ``mlflow.set_tracking_uri("steplog:///path")``.

Every method MLflow's client, fluent API, server and UI call (../docs/MLFLOW.md lists
them with what differs from MLflow's SQL store). Semantics follow MLflow's own stores:
MLflow's validators, param immutability, soft delete, the Default experiment "0",
search filters, orderings and page tokens by MLflow's SearchUtils.

Durability: in a client process points are buffered and flushed within steplog's
flush_interval (5 s), by ``flush_async_logging``, ``update_run_info`` and at exit (a
forked worker's at its exit too); under ``mlflow server``
every write is flushed before its request returns, so that the next request, served by
another worker process, reads it.
"""

from __future__ import annotations

import errno
import multiprocessing.util
import os
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
from mlflow.entities import LifecycleStage, Metric, RunStatus, ViewType
from mlflow.entities.metric import MetricWithRunId
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (INVALID_PARAMETER_VALUE, INVALID_STATE, NOT_IMPLEMENTED,
                                          RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking import SEARCH_MAX_RESULTS_THRESHOLD
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.name_utils import _generate_random_name
from mlflow.utils.search_utils import SearchExperimentsUtils, SearchUtils
from mlflow.utils.validation import (_validate_batch_log_data, _validate_batch_log_limits, _validate_dataset_inputs,
                                     _validate_experiment_artifact_location_length, _validate_experiment_name,
                                     _validate_experiment_tag, _validate_metric, _validate_param,
                                     _validate_param_keys_unique, _validate_run_id, _validate_tag)

import steplog
from steplog.engine.errors import AlreadyExistsError

from . import records as rec
from .records import NS_PER_MS, STATUS_FROM_MLFLOW

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
ACTIVE_SECONDS = 1.0   # how long a run seen active is trusted to stay so, for per-call logging
HISTORY_KEPT_SECONDS = 30.0   # how long a paged history is kept for its next page
_FIRST_PID = os.getpid()


class SteplogStore(AbstractStore):
    """A tracking store on the steplog store at ``steplog:///abs/path`` (created if missing)."""

    def __init__(self, store_uri: str | None = None, artifact_uri: str | None = None):
        super().__init__()   # MLflow's async logging queue
        self.path = store_path(store_uri)
        self.artifact_root = artifact_uri or (Path(self.path) / "mlflow-artifacts").as_uri()
        self.flush_each_write = "mlflow.server.handlers" in sys.modules
        self._open()
        if not self._store.read_only:
            self._ensure_default_experiment()

    def _open(self) -> None:
        """Open the steplog store (read only when its files cannot be written, so that a
        read-only volume can still be browsed), in this process."""
        try:
            self._store = steplog.open(self.path)   # steplog's own options: a script may open it too
        except steplog.StepLogError as exc:
            if not _read_only_path(self.path):
                raise
            try:
                self._store = steplog.open(self.path, "r")
            except steplog.StepLogError:
                raise exc from None
        self._pid = os.getpid()
        self._runs: dict[str, tuple[steplog.Run, float]] = {}   # run id -> (logging handle, when seen active)
        self._kept_history = None   # ((run id, key), when, (steps, times, values)) of the last page read
        if self._pid != _FIRST_PID:   # a forked child (a worker of a pool): flush when it exits
            multiprocessing.util.Finalize(self, self._store.flush, exitpriority=10)

    @property
    def store(self) -> steplog.Store:
        """The steplog store, opened again in a child process: MLflow keeps one tracking
        store a process and hands it over fork() (a multiprocessing pool, say)."""
        if self._pid != os.getpid():
            self._open()
        return self._store

    def __repr__(self) -> str:
        return f"<SteplogStore {self.path!r}>"

    # -- experiments ---------------------------------------------------------------------

    def _ensure_default_experiment(self) -> None:
        found = self.store.experiments()
        for record in found:
            if not record.get("id"):   # made by steplog itself before it kept ids
                self.store.update_experiment(record["name"], lambda r: None)
        if not any(r.get("id") == DEFAULT_EXPERIMENT_ID for r in found):
            try:
                self.store.create_experiment(DEFAULT_EXPERIMENT_NAME, id=DEFAULT_EXPERIMENT_ID,
                                             artifact_location=self._artifact_location(DEFAULT_EXPERIMENT_ID))
            except AlreadyExistsError:
                pass   # another process made it first, or a steplog experiment has that name

    def _artifact_location(self, experiment_id: str) -> str:
        return f"{self.artifact_root.rstrip('/')}/{experiment_id}"

    def _experiment_records(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.store.experiments() if r.get("id")}

    def _experiment_record(self, experiment_id, stage: str | None = None) -> dict:
        """The record of an experiment (of that lifecycle stage, when given)."""
        found = self._experiment_records().get(str(experiment_id))
        if found is None or (stage is not None and rec.lifecycle(found) != stage):
            raise MlflowException(f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST)
        return found

    def search_experiments(self, view_type=ViewType.ACTIVE_ONLY, max_results=1000, filter_string=None,
                           order_by=None, page_token=None):
        _check_max_results(max_results)
        wanted = _stages(view_type)
        experiments = [rec.experiment_entity(r) for r in self._experiment_records().values()
                       if rec.lifecycle(r) in wanted]
        filtered = SearchExperimentsUtils.filter(experiments, filter_string)
        ordered = SearchExperimentsUtils.sort(filtered, order_by or ["creation_time DESC", "experiment_id ASC"])
        page, token = SearchUtils.paginate(ordered, page_token, max_results)
        return PagedList(page, token)

    def create_experiment(self, name, artifact_location=None, tags=None):
        _validate_experiment_name(name)
        if artifact_location:
            _validate_experiment_artifact_location_length(artifact_location)
        for tag in tags or []:
            _validate_experiment_tag(tag.key, tag.value)
        existing = self.get_experiment_by_name(name)
        if existing is not None:
            state = " in deleted state" if existing.lifecycle_stage == LifecycleStage.DELETED else ""
            raise MlflowException(f"Experiment '{name}' already exists{state}.", RESOURCE_ALREADY_EXISTS)
        try:
            record = self.store.create_experiment(name, tags={t.key: t.value for t in tags or []},
                                                  artifact_location=artifact_location or None)
        except AlreadyExistsError as exc:
            raise MlflowException(str(exc), RESOURCE_ALREADY_EXISTS) from None
        if not artifact_location:
            location = self._artifact_location(record["id"])
            self.store.update_experiment(name, lambda r: r.update(artifact_location=location))
        return record["id"]

    def get_experiment(self, experiment_id):
        return rec.experiment_entity(self._experiment_record(experiment_id))

    def get_experiment_by_name(self, experiment_name):
        for record in self._experiment_records().values():
            if record["name"] == experiment_name:
                return rec.experiment_entity(record)
        return None

    def delete_experiment(self, experiment_id):
        """Soft delete, with every run of the experiment (as MLflow's SQL store; the
        Default experiment too)."""
        record = self._experiment_record(experiment_id, LifecycleStage.ACTIVE)
        now = time.time_ns()
        for run in self._run_records(record["name"]):
            if not run.get("deleted"):
                self.store.update_run(run["id"], lambda r: r.update(deleted=now))
        self.store.update_experiment(record["name"], lambda r: r.update(deleted=now, updated=now))
        self._runs.clear()

    def restore_experiment(self, experiment_id):
        """Restore, with every run of the experiment (as MLflow's SQL store)."""
        record = self._experiment_record(experiment_id, LifecycleStage.DELETED)
        for run in self._run_records(record["name"]):
            if run.get("deleted"):
                self.store.update_run(run["id"], lambda r: r.update(deleted=None))
        self.store.update_experiment(record["name"], lambda r: r.update(deleted=None, updated=time.time_ns()))

    def rename_experiment(self, experiment_id, new_name):
        _validate_experiment_name(new_name)
        record = self._experiment_record(experiment_id)
        if record.get("deleted"):
            raise MlflowException("Cannot rename a non-active experiment.", INVALID_STATE)
        try:
            self.store.update_experiment(record["name"], lambda r: r.update(name=new_name, updated=time.time_ns()))
        except AlreadyExistsError:
            raise MlflowException(f"Experiment '{new_name}' already exists.", RESOURCE_ALREADY_EXISTS) from None

    def set_experiment_tag(self, experiment_id, tag):
        _validate_experiment_tag(tag.key, tag.value)
        record = self._experiment_record(experiment_id)
        if record.get("deleted"):
            raise MlflowException("The experiment must be in the 'active' state.", INVALID_STATE)
        self.store.update_experiment(record["name"], lambda r: r.update(tags={**(r.get("tags") or {}),
                                                                              tag.key: tag.value}))

    def delete_experiment_tag(self, experiment_id, key):
        record = self._experiment_record(experiment_id)
        if record.get("deleted"):
            raise MlflowException("The experiment must be in the 'active' state.", INVALID_STATE)
        if key not in (record.get("tags") or {}):
            raise MlflowException(f"No tag with name: {key} in experiment with id {experiment_id}",
                                  RESOURCE_DOES_NOT_EXIST)
        self.store.update_experiment(record["name"], lambda r: r["tags"].pop(key))

    # -- runs ----------------------------------------------------------------------------

    def _run_records(self, experiment_name: str) -> list[dict]:
        return [r for r in self.store.run_records() if r["experiment"] == experiment_name]

    def _run_record(self, run_id) -> dict:
        _validate_run_id(run_id)
        found = self.store.run_record(run_id) if len(run_id) == 32 else None
        if found is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        return found

    def _active_run_record(self, run_id) -> dict:
        record = self._run_record(run_id)
        if record.get("deleted"):
            raise MlflowException(f"The run {run_id} must be in the 'active' state. Current state is deleted.",
                                  INVALID_PARAMETER_VALUE)
        return record

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        experiment_id = DEFAULT_EXPERIMENT_ID if experiment_id is None else str(experiment_id)
        experiment = self._experiment_records().get(experiment_id)
        if experiment is None:
            raise MlflowException(f"Could not create run under experiment with ID {experiment_id} - no such "
                                  "experiment exists.", RESOURCE_DOES_NOT_EXIST)
        if experiment.get("deleted"):
            raise MlflowException(f"The experiment {experiment_id} must be in the 'active' state. Current state is "
                                  "deleted.", INVALID_PARAMETER_VALUE)
        tags = {t.key: t.value for t in tags or []}
        for key, value in tags.items():
            _validate_tag(key, value)
        named = tags.get(MLFLOW_RUN_NAME)
        if run_name and named and run_name != named:
            raise MlflowException("Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                                  f"different values (run_name='{run_name}', mlflow.runName='{named}').",
                                  INVALID_PARAMETER_VALUE)
        run_name = run_name or named or _generate_random_name()
        tags[MLFLOW_RUN_NAME] = run_name
        start = time.time_ns() if start_time is None else int(start_time) * NS_PER_MS
        record = {"id": _new_run_id(), "experiment": experiment["name"], "name": run_name, "parent": None,
                  "status": "running", "start_time": start, "end_time": None, "params": {}, "tags": tags,
                  "user": user_id or "", "kind": None, "resources": {}, "environment": None}
        self.store.put_run_record(record)
        return rec.run_entity(record, experiment, {})

    def get_run(self, run_id):
        record = self._run_record(run_id)
        experiment = self._experiment_of(record)
        return rec.run_entity(record, experiment, self._latest_metrics([run_id])[run_id])

    def _experiment_of(self, record: dict) -> dict:
        for experiment in self.store.experiments():
            if experiment["name"] == record["experiment"]:
                return experiment
        return {"id": "", "name": record["experiment"]}

    def update_run_info(self, run_id, run_status, end_time, run_name):
        self._active_run_record(run_id)
        status = STATUS_FROM_MLFLOW[RunStatus.to_string(run_status)]

        def change(record):
            record["status"] = status
            record["end_time"] = None if end_time is None else int(end_time) * NS_PER_MS
            if run_name:
                record["name"] = run_name
                record["tags"][MLFLOW_RUN_NAME] = run_name

        self.store.flush()
        self.store.update_run(run_id, change)
        return self.get_run(run_id).info

    def delete_run(self, run_id):
        self._run_record(run_id)
        self.store.update_run(run_id, lambda r: r.update(deleted=time.time_ns()))
        self._runs.pop(run_id, None)

    def restore_run(self, run_id):
        self._run_record(run_id)
        self.store.update_run(run_id, lambda r: r.update(deleted=None))

    def delete_tag(self, run_id, key):
        record = self._active_run_record(run_id)
        if key not in record["tags"]:
            raise MlflowException(f"No tag with name: {key} in run with id {run_id}", RESOURCE_DOES_NOT_EXIST)
        self.store.update_run(run_id, lambda r: r["tags"].pop(key, None))

    # -- logging -------------------------------------------------------------------------

    def _logging_run(self, run_id) -> steplog.Run:
        """The handle that logs points to a run, checked active at most ACTIVE_SECONDS ago."""
        found = self._runs.get(run_id)
        now = time.monotonic()
        if found is not None and now - found[1] < ACTIVE_SECONDS:
            return found[0]
        self._active_run_record(run_id)
        run = found[0] if found is not None else self.store.run(run_id, resume=False)
        self._runs[run_id] = (run, now)
        return run

    def log_metric(self, run_id, metric):
        _check_metric(metric, "")
        run = self._logging_run(run_id)
        run.log(metric.key, float(metric.value), step=int(metric.step or 0),
                time=int(metric.timestamp) * NS_PER_MS)
        if self.flush_each_write:
            self.store.flush()

    def log_param(self, run_id, param):
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id, tag):
        self.log_batch(run_id, [], [], [tag])

    def log_batch(self, run_id, metrics, params, tags):
        _validate_run_id(run_id)
        columns = _columns(metrics)
        _, params, tags = _validate_batch_log_data([], params, tags)
        _validate_batch_log_limits(metrics, params, tags)
        _validate_param_keys_unique(params)
        run = self._logging_run(run_id)
        if params or tags:
            self._log_params_and_tags(run_id, params, tags)
        for key, (steps, times, values) in columns.items():
            run.log_batch(key, steps, values, times)
        if self.flush_each_write and metrics:
            self.store.flush()

    def _log_params_and_tags(self, run_id, params, tags) -> None:
        def change(record):
            for param in params:
                stored = record["params"].get(param.key)
                value = rec.text(param.value)
                if stored is not None and rec.text(stored) != value:
                    raise MlflowException(
                        f"Changing param values is not allowed. Param with key='{param.key}' was already logged "
                        f"with value='{rec.text(stored)}' for run ID='{run_id}'. Attempted logging new value "
                        f"'{value}'.", INVALID_PARAMETER_VALUE)
                record["params"][param.key] = value
            for tag in tags:
                record["tags"][tag.key] = rec.text(tag.value)
                if tag.key == MLFLOW_RUN_NAME:
                    record["name"] = rec.text(tag.value)

        self.store.update_run(run_id, change)

    def log_inputs(self, run_id, datasets=None, models=None):
        _validate_run_id(run_id)
        if datasets:
            _validate_dataset_inputs(datasets)
        self._active_run_record(run_id)
        if not datasets:
            return
        added = [rec.dataset_record(d) for d in datasets]

        def change(record):
            inputs = record.setdefault("inputs", []) or []
            seen = {(i["name"], i["digest"]) for i in inputs}
            record["inputs"] = inputs + [d for d in added if (d["name"], d["digest"]) not in seen]

        self.store.update_run(run_id, change)

    def flush_async_logging(self):
        super().flush_async_logging()
        self.store.flush()

    # -- metric histories ----------------------------------------------------------------

    def _history(self, run_id: str, metric_key: str, start=None, stop=None, **how):
        """(steps, times ms, values) of a series as numpy arrays, in step order; empty for
        a run the store does not hold, as in MLflow's SQL store."""
        if not self._holds(run_id):
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
        table = self.store.read(run_id, metric_key, start=start, stop=stop, missing_ok=True, **how)
        return (table.column("step").to_numpy(), table.column("time_ns").to_numpy() // NS_PER_MS,
                table.column("value").to_numpy())

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        """A page of the history in step order. The client asks for the pages one after
        another: the history read for the first is kept for the next (HISTORY_KEPT_SECONDS)."""
        _validate_run_id(run_id)
        kept = self._kept_history
        if page_token and kept is not None and kept[0] == (run_id, metric_key) and \
                time.monotonic() - kept[1] < HISTORY_KEPT_SECONDS:
            steps, times, values = kept[2]
        else:
            steps, times, values = self._history(run_id, metric_key)
        self._kept_history = ((run_id, metric_key), time.monotonic(), (steps, times, values))
        offset = SearchUtils.parse_start_offset_from_page_token(page_token) if page_token else 0
        end = len(steps) if max_results is None else min(len(steps), offset + int(max_results))
        metrics = _metrics(metric_key, steps[offset:end], times[offset:end], values[offset:end])
        token = SearchUtils.create_page_token(end) if end < len(steps) else None
        if token is None:
            self._kept_history = None
        return PagedList(metrics, token)

    def get_metric_history_bulk(self, run_ids, metric_key, max_results):
        found = []
        for run_id in sorted(set(run_ids)):
            steps, times, values = self._history(run_id, metric_key)
            order = np.lexsort((values, steps, times))
            found += [MetricWithRunId(m, run_id) for m in
                      _metrics(metric_key, steps[order], times[order], values[order])]
        return found[:max_results]

    def get_metric_history_bulk_interval_from_steps(self, run_id, metric_key, steps, max_results):
        history_steps, times, values = self._history(run_id, metric_key)
        keep = np.isin(history_steps, np.asarray(list(steps), np.int64))
        order = np.lexsort((times[keep], history_steps[keep]))[:max_results]
        chosen = _metrics(metric_key, history_steps[keep][order], times[keep][order], values[keep][order])
        return [MetricWithRunId(m, run_id) for m in chosen]

    def _holds(self, run_id: str) -> bool:
        """Whether the store holds a run of that id (MLflow's SQL store reads an unknown
        run's histories as empty)."""
        return len(run_id) == 32 and self.store.run_record(run_id) is not None

    def _count(self, run_id: str, metric_key: str, start, stop) -> int:
        """How many points a series holds in [start, stop), from its rollups."""
        if not self._holds(run_id):
            return 0
        table = self.store.read(run_id, metric_key, start=start, stop=stop, buckets=1, missing_ok=True)
        return sum(table.column("count").to_pylist())

    def get_metric_history_bulk_interval(self, run_ids, metric_key, max_results, start_step, end_step):
        """Each run's history between start_step and end_step (inclusive): every point when
        at most max_results are there, else at most max_results real points holding the
        first, minimum, maximum and last point of each of max_results // 4 step buckets,
        so that spikes stay visible (MLflow's own stores sample steps evenly and drop
        them). Answered from rollups, in a time that does not grow with the history."""
        if (start_step is None) != (end_step is None):
            raise MlflowException.invalid_parameter_value("Both start_step and end_step must be provided together, "
                                                          "or neither should be provided.")
        max_results = max(1, int(max_results))
        stop = None if end_step is None else int(end_step) + 1
        found = []
        for run_id in run_ids:
            fits = self._count(run_id, metric_key, start_step, stop) <= max_results
            how = {} if fits else {"buckets": max(1, max_results // 4), "method": "m4"}
            steps, times, values = self._history(run_id, metric_key, start=start_step, stop=stop, **how)
            if len(steps) > max_results:   # fewer than 4 asked for: the first, the last, the largest
                largest = 0 if np.isnan(values).all() else int(np.nanargmax(values))
                keep = sorted(list(dict.fromkeys([0, len(steps) - 1, largest]))[:max_results])
                steps, times, values = steps[keep], times[keep], values[keep]
            found += [MetricWithRunId(m, run_id) for m in _metrics(metric_key, steps, times, values)]
        return found

    # -- search --------------------------------------------------------------------------

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
            raise MlflowException("Invalid value for request parameter max_results. It must be at most "
                                  f"{SEARCH_MAX_RESULTS_THRESHOLD}, but got value {max_results}",
                                  INVALID_PARAMETER_VALUE)
        experiments = self._experiment_records()
        by_name = {experiments[str(i)]["name"]: experiments[str(i)] for i in experiment_ids
                   if str(i) in experiments}
        wanted = _stages(run_view_type)
        self.store.flush()
        records = [r for r in self.store.run_records() if r["experiment"] in by_name and rec.lifecycle(r) in wanted]
        latest = self._latest_values([r["id"] for r in records]) if records else {}
        views = [rec.RunView(r, by_name[r["experiment"]], latest.get(r["id"], {})) for r in records]
        filtered = SearchUtils.filter(views, filter_string)
        ordered = SearchUtils.sort(filtered, order_by)
        page, token = SearchUtils.paginate(ordered, page_token, max_results)
        latest = self._latest_metrics([v.record["id"] for v in page])
        return [rec.run_entity(v.record, by_name[v.record["experiment"]], latest[v.record["id"]]) for v in page], token

    def _latest_values(self, run_ids: list[str]) -> dict[str, dict]:
        """run id -> {metric key: latest value} from the kept aggregates (no point decoded)."""
        table = self.store.series(runs=run_ids)
        found: dict[str, dict] = {}
        columns = [table.column(c).to_pylist() for c in ("run_id", "metric", "context", "kind", "last")]
        for run_id, key, context, kind, last in zip(*columns):
            if context is None and kind == "scalar":
                found.setdefault(run_id, {})[key] = rec.mlflow_value(last)
        return found

    def _latest_metrics(self, run_ids: list[str]) -> dict[str, dict]:
        """run id -> {metric key: (value, timestamp ms, step)} of MLflow's latest points: at
        the highest step, ties the latest written (MLflow breaks them by timestamp)."""
        table = self.store.last_points(run_ids)
        found: dict[str, dict] = {run_id: {} for run_id in run_ids}
        for run_id, key, context, step, time_ns, value in zip(*[c.to_pylist() for c in table.columns]):
            if context is None:
                found[run_id][key] = (rec.mlflow_value(value), time_ns // NS_PER_MS, step)
        return found

    # -- what steplog does not keep: traces, logged models and the other GenAI surfaces ----

    def search_traces(self, *args, **kwargs):
        return [], None

    def _search_datasets(self, experiment_ids):
        return []

    def link_traces_to_run(self, trace_ids, run_id):
        _not_kept("link_traces_to_run")


def _not_kept(method: str):
    raise MlflowException(f"{method}: the steplog tracking store keeps experiments, runs, params, tags, metrics and "
                          "dataset inputs, not traces, logged models, evaluation datasets, scorers, label schemas "
                          "or review queues; log a model file as an artifact instead", NOT_IMPLEMENTED)


def _refusing(method: str):
    def refuse(self, *args, **kwargs):
        _not_kept(method)

    refuse.__name__ = method
    return refuse


def _nothing(empty):
    def search(self, *args, **kwargs):
        return empty()

    return search


# Searches and lists of what is not kept answer empty, so that MLflow's UI pages show no
# error; every other call of those surfaces raises.
_EMPTY_PAGE = ("search_logged_models", "search_datasets", "search_issues", "query_trace_metrics",
               "list_label_schemas", "list_review_queues", "list_review_queue_items")
_EMPTY_LIST = ("batch_get_traces", "batch_get_trace_infos", "find_completed_sessions", "list_scorers",
               "list_scorer_versions", "get_online_scoring_configs", "get_active_online_scorers",
               "get_dataset_experiment_ids")
_REFUSED = ("start_trace", "_delete_traces", "get_trace_info", "get_trace", "archive_traces",
            "get_online_trace_details", "set_trace_tag", "delete_trace_tag", "get_assessment", "create_assessment",
            "update_assessment", "delete_assessment", "create_issue", "get_issue", "update_issue", "log_spans",
            "log_outputs", "record_logged_model", "create_logged_model", "finalize_logged_model",
            "set_logged_model_tags", "delete_logged_model_tag", "get_logged_model", "delete_logged_model",
            "log_logged_model_params", "create_dataset", "get_dataset", "delete_dataset", "upsert_dataset_records",
            "delete_dataset_records", "set_dataset_tags", "delete_dataset_tag", "_load_dataset_records",
            "add_dataset_to_experiments", "remove_dataset_from_experiments", "unlink_traces_from_run",
            "link_prompts_to_trace", "calculate_trace_filter_correlation", "register_scorer", "get_scorer",
            "delete_scorer", "upsert_online_scoring_config", "create_label_schema", "get_label_schema",
            "get_label_schema_by_name", "update_label_schema", "delete_label_schema", "create_review_queue",
            "get_or_create_user_queue", "get_review_queue", "get_review_queue_by_name", "update_review_queue",
            "delete_review_queue", "add_items_to_review_queue", "remove_items_from_review_queue",
            "set_review_queue_item_status")
for _name in _EMPTY_PAGE:
    setattr(SteplogStore, _name, _nothing(lambda: PagedList([], None)))
for _name in _EMPTY_LIST:
    setattr(SteplogStore, _name, _nothing(list))
for _name in _REFUSED:
    setattr(SteplogStore, _name, _refusing(_name))


def _read_only_path(path: str) -> bool:
    """Whether the store's index cannot be opened to write (a read-only file system or files)."""
    index = os.path.join(path, "index")
    if not os.path.isdir(index):
        return False
    try:
        probe = os.open(os.path.join(index, "data.mdb"), os.O_RDWR)
    except OSError as exc:
        return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    os.close(probe)
    return False


def store_path(store_uri: str | None) -> str:
    """The store directory a ``steplog:///abs/path`` URI names."""
    parsed = urllib.parse.urlparse(store_uri or "")
    if parsed.scheme != "steplog" or not parsed.path or parsed.netloc:
        raise MlflowException(f"A steplog tracking URI is steplog:///absolute/path/to/store, got {store_uri!r}",
                              INVALID_PARAMETER_VALUE)
    return urllib.parse.unquote(parsed.path)


def _new_run_id() -> str:
    import secrets

    return secrets.token_hex(16)


def _stages(view_type) -> tuple:
    if view_type == ViewType.DELETED_ONLY:
        return (LifecycleStage.DELETED,)
    if view_type == ViewType.ALL:
        return (LifecycleStage.ACTIVE, LifecycleStage.DELETED)
    return (LifecycleStage.ACTIVE,)


def _check_max_results(max_results) -> None:
    if not isinstance(max_results, int) or max_results < 1:
        raise MlflowException(f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a "
                              "positive integer", INVALID_PARAMETER_VALUE)
    if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
        raise MlflowException(f"Invalid value {max_results} for parameter 'max_results' supplied. It must be at "
                              f"most {SEARCH_MAX_RESULTS_THRESHOLD}", INVALID_PARAMETER_VALUE)


def _columns(metrics) -> dict:
    """metric key -> (steps, times ns, values) of a batch, in the batch's order, each
    metric checked as MLflow's _validate_metric does."""
    metrics = list(metrics)
    keys = [m.key for m in metrics]
    values, times, steps = [m.value for m in metrics], [m.timestamp for m in metrics], [m.step for m in metrics]
    plain = (_PLAIN_NUMBERS.issuperset(map(type, values)) and _INTS.issuperset(map(type, times))
             and _INTS.issuperset(map(type, steps)) and _checked_keys.issuperset(keys) and min(times, default=0) >= 0)
    if not plain:
        for i, m in enumerate(metrics):
            _check_metric(m, f"metrics[{i}]")
    columns = (np.array(steps, np.int64), np.array(times, np.int64) * NS_PER_MS, np.array(values, np.float64))
    names = dict.fromkeys(keys)
    if len(names) == 1:
        return {keys[0]: columns}
    at = {key: i for i, key in enumerate(names)}
    codes = np.fromiter((at[k] for k in keys), np.int64, len(keys))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {key: tuple(c[order[bounds[i]:bounds[i + 1]]] for c in columns) for i, key in enumerate(names)}


_checked_keys: set[str] = set()   # metric names MLflow's validator accepted (a name's check is all in the name)
_PLAIN_NUMBERS = frozenset([float, int])
_INTS = frozenset([int])


def _check_metric(m, path: str) -> None:
    """MLflow's _validate_metric, its name checks done once per name and its type
    checks short-cut for plain floats and ints: the same errors, at a fraction of the cost."""
    value, timestamp, step = m.value, m.timestamp, m.step
    if (m.key in _checked_keys and type(value) in _PLAIN_NUMBERS and type(timestamp) is int and timestamp >= 0
            and type(step) is int):
        return
    _validate_metric(m.key, value, timestamp, step, path=path)
    if len(_checked_keys) < 100_000:
        _checked_keys.add(m.key)


def _metrics(key: str, steps, times, values) -> list:
    values = np.where(np.isinf(values), np.copysign(rec.FLOAT_MAX, values), values)
    return [Metric(key, v, t, s) for s, t, v in zip(steps.tolist(), times.tolist(), values.tolist())]

