"""Copy an MLflow tracking store into a steplog store (``steplog import-mlflow``), so that
``MlflowClient("steplog:///PATH")`` then reads what the source's client read.

The source is MLflow's SQLite store (``sqlite:///mlflow.db``) or its ./mlruns file store
(a path, or a ``file:`` URI), read through MLflow's own client; only metric histories of
an SQLite store are read a faster way: the columns of MLflow's own ``metrics`` table
model, without a Metric object a point (MlflowClient.get_metric_history reads about
10,000 points/s). The copy writes the records the steplog
tracking store (store.py) writes itself:

- experiments by name; one the target already holds is kept as it is, and the runs go
  into it (each run keeps its own artifact URI). A new one keeps its MLflow id unless the target uses
  that id already (then it gets the number after every id in use), its creation and
  last update times, tags, artifact location and deleted state (deleted at its last
  update time);
- runs by MLflow run id, every view type (deleted ones stay deleted: at the time their
  deleted experiment was, else at their end time, as MLflow's client does not show
  when); params, tags, status, times, user, dataset inputs; every point of every
  metric, NaN and infinities as they are. MLflow's SQL store keeps +-inf as
  +-1.7976931348623157e308 (the largest float64): values of that size read from an
  SQLite source become +-inf again;
- points of a step are written in MLflow's (timestamp, value) order, so that the
  latest metric (highest step, ties the last written) is the one MLflow reports.

A run is written as running first, then its points, then its final record, which
alone carries ``"imported_from"`` (the source URI). A re-run skips every run whose
record carries it; a run that lacks it was left by an interrupted import with part of
its points, and the import refuses to go on (steplog keeps no way to remove one run:
import into a new store). At the end every count is compared with the source:
experiments, runs, params, tags, and the points of every metric of every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, ViewType
from mlflow.exceptions import MlflowException

import steplog
from steplog.engine.errors import InvalidArgumentError, StepLogError

from . import records as rec
from .records import NS_PER_MS, STATUS_FROM_MLFLOW

FLOAT64_MAX = 1.7976931348623157e308
PAGE = 1000                 # experiments and runs a search asks for
HISTORY_CHUNK = 250_000     # points of a run read and logged at a time (SQL stores)
MAX_LISTED = 10             # differences a failed verification names
SQLITE_PREFIX = "sqlite:///"
SQLITE_MAGIC = b"SQLite format 3\x00"
MLFLOW_TABLES = {"experiments", "runs", "metrics", "latest_metrics", "params", "tags", "alembic_version"}

Progress = Callable[[int, "int | None"], None]   # progress(runs done, runs in the source)


class IncompleteRunError(StepLogError):
    """The target holds runs that an interrupted import left with part of their points."""


class MismatchError(StepLogError):
    """After the copy, the target's counts differ from the source's."""


@dataclasses.dataclass(frozen=True)
class Source:
    uri: str    # the tracking URI MLflow reads, with an absolute path
    kind: str   # "sqlite" or "file"


@dataclasses.dataclass
class Summary:
    source: str
    target: str
    experiments: int = 0           # created in the target
    experiments_existing: int = 0  # there already (by name)
    runs: int = 0                  # copied
    runs_skipped: int = 0          # imported before
    params: int = 0                # of the copied runs
    tags: int = 0
    series: int = 0
    points: int = 0
    seconds: float = 0.0

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0


def import_mlflow(source: str, target: str | os.PathLike, progress: Progress | None = None) -> Summary:
    """Copy the MLflow store ``source`` (``sqlite:///PATH``, a ./mlruns path or a
    ``file:`` URI) into the steplog store at ``target`` (created if missing) and verify
    the copy. Bad arguments raise InvalidArgumentError (argument "source" or "target")
    before anything is written."""
    started = time.perf_counter()
    found = parse_source(source)
    path = check_target(target)
    with reading(found) as client:
        reader = Reader(client)
        experiments = reader.experiments()
        runs = {e.experiment_id: reader.runs(e.experiment_id) for e in experiments}
        total = sum(len(r) for r in runs.values())
        _refuse_incomplete(path, [run for found_runs in runs.values() for run in found_runs])
        summary = Summary(source=found.uri, target=path)
        with contextlib.closing(steplog.open(path)) as store:
            names = _import_experiments(store, experiments, summary)
            counts = _import_runs(store, reader, experiments, runs, names, found.uri, summary, progress, total)
            _verify(store, reader, experiments, runs, names, counts)
    summary.seconds = time.perf_counter() - started
    return summary


# -- arguments ----------------------------------------------------------------------------

def parse_source(text: str) -> Source:
    """The MLflow store ``text`` names, checked to be one without opening it: MLflow
    would create a missing database or ./mlruns, or the tables of an empty file."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError("source", f"must be sqlite:///PATH or a ./mlruns directory, got {text!r}")
    if text.startswith("sqlite:"):
        return _sqlite_source(text)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    elif not scheme or os.path.exists(text):
        path = text
    else:
        raise InvalidArgumentError("source", f"{text!r}: unknown scheme {scheme!r}; the MLflow stores read are "
                                             "sqlite:///PATH (an SQLite database) and a ./mlruns directory "
                                             "(a path or file:///PATH)")
    path = os.path.abspath(os.path.expanduser(path))
    _check_file_store(path)
    return Source(Path(path).as_uri(), "file")


def _sqlite_source(text: str) -> Source:
    rest = text[len(SQLITE_PREFIX):].split("?", 1)[0] if text.startswith(SQLITE_PREFIX) else ""
    if not rest:
        raise InvalidArgumentError("source", f"an MLflow SQLite store is sqlite:///PATH (sqlite:////ABS/PATH for an "
                                             f"absolute path), got {text!r}")
    path = os.path.abspath(os.path.expanduser(urllib.parse.unquote(rest)))
    if os.path.isdir(path):
        raise InvalidArgumentError("source", f"{path} is a directory; pass a ./mlruns store as its path, "
                                             "without sqlite:///")
    if not os.path.isfile(path):
        raise InvalidArgumentError("source", f"no MLflow SQLite database at {path}")
    tables = _sqlite_tables(path)
    if not MLFLOW_TABLES <= tables:
        raise InvalidArgumentError("source", f"{path} is an SQLite database but not MLflow's (it lacks the tables "
                                             f"{', '.join(sorted(MLFLOW_TABLES - tables))})")
    return Source(SQLITE_PREFIX + path, "sqlite")


def _sqlite_tables(path: str) -> set[str]:
    """The tables of an SQLite file, read without writing to it (read-only open)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise InvalidArgumentError("source", f"{path} does not read as an SQLite database: {exc}") from None


def _check_file_store(path: str) -> None:
    if os.path.isfile(path):
        with open(path, "rb") as stream:
            is_sqlite = stream.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
        hint = f"; for an MLflow SQLite database pass sqlite:///{path}" if is_sqlite else ""
        raise InvalidArgumentError("source", f"{path} is a file, not an MLflow ./mlruns directory{hint}")
    if not os.path.isdir(path):
        raise InvalidArgumentError("source", f"no MLflow store at {path} (no such directory)")
    if not any(p.is_file() for p in Path(path).glob("*/meta.yaml")):
        raise InvalidArgumentError("source", f"{path} holds no MLflow experiment (no */meta.yaml): not an MLflow "
                                             "./mlruns store")


def check_target(target) -> str:
    """The absolute path of ``target``: a steplog store, or a new or empty directory (or
    the tracking URI steplog:///abs/path of one)."""
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target).strip():
        raise InvalidArgumentError("target", f"must be a directory path, got {target!r}")
    target = os.fspath(target)
    if target.startswith("steplog:"):
        from .store import store_path

        try:
            target = store_path(target)
        except MlflowException:
            raise InvalidArgumentError("target", f"a steplog URI is steplog:///absolute/path, got {target!r}") from None
    path = os.path.abspath(os.path.expanduser(target))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidArgumentError("target", f"{path} is a file; a steplog store is a directory")
    if os.path.isdir(path) and os.listdir(path):
        try:
            steplog.open(path, mode="r").close()
        except InvalidArgumentError:
            raise InvalidArgumentError("target", f"{path} holds other files and is not a steplog store; pass a "
                                                 "steplog store or a new directory") from None
    return path


@contextlib.contextmanager
def reading(source: Source) -> Iterator[MlflowClient]:
    """MLflow's client on the source. MLflow 3 refuses to open a file store unless
    MLFLOW_ALLOW_FILE_STORE is set (and earlier versions warn that it is deprecated):
    reading one to move off it is what that message asks for, so both are allowed here."""
    with contextlib.ExitStack() as stack:
        if source.kind == "file":
            stack.enter_context(_environment("MLFLOW_ALLOW_FILE_STORE", "true"))
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=r"(?i).*file ?(system|store).*(deprecated|maintenance)")
        try:
            client = MlflowClient(tracking_uri=source.uri)
        except MlflowException as exc:
            raise InvalidArgumentError("source", f"MLflow cannot open {source.uri}: {exc.message}") from None
        yield client


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


# -- reading the source -------------------------------------------------------------------

class Reader:
    """What the copy reads of the source, through MLflow's client."""

    def __init__(self, client: MlflowClient):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self.client = client
        store = client._tracking_client.store
        self.sql = store if isinstance(store, SqlAlchemyStore) else None

    def experiments(self) -> list:
        found, token = [], None
        while True:
            page = self.client.search_experiments(view_type=ViewType.ALL, max_results=PAGE, page_token=token)
            found += page
            token = page.token
            if not token:
                return found

    def runs(self, experiment_id: str) -> list:
        found, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=PAGE,
                                           page_token=token)
            found += page
            token = page.token
            if not token:
                return found

    def point_counts(self, run) -> dict[str, int]:
        """metric key -> points of one run."""
        if self.sql is None:
            return {key: len(self.client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
        with self.sql.engine.connect() as connection:
            return _sql_counts(connection, run.info.run_id)

    def histories(self, run) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """(metric key, steps, timestamps ms, values) of every metric of a run, in chunks,
        each metric's points ordered by (step, timestamp, value), NaN after the numbers
        of its (step, timestamp)."""
        if self.sql is not None:
            yield from self._sql_histories(run.info.run_id)
            return
        for key in run.data.metrics:
            points = self.client.get_metric_history(run.info.run_id, key)
            steps = np.fromiter((m.step for m in points), np.int64, len(points))
            times = np.fromiter((m.timestamp for m in points), np.int64, len(points))
            values = np.fromiter((m.value for m in points), np.float64, len(points))
            order = np.lexsort((values, times, steps))
            yield key, steps[order], times[order], values[order]

    def _sql_histories(self, run_id: str):
        """Read by the (run_uuid, key, step) index of MLflow's metrics table, in its
        order: ordering by more columns makes SQLite take the primary key's index on key
        instead and scan every run's points of that key. Rows come from the DBAPI cursor
        as plain tuples (SQLAlchemy's Row objects cost more than the read)."""
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from sqlalchemy import bindparam, select

        query = (select(SqlMetric.step, SqlMetric.timestamp, SqlMetric.value, SqlMetric.is_nan)
                 .where(SqlMetric.run_uuid == run_id, SqlMetric.key == bindparam("metric_key"))
                 .order_by(SqlMetric.step))
        with self.sql.engine.connect() as connection:
            for key in _sql_counts(connection, run_id):
                cursor = connection.execute(query, {"metric_key": key}).cursor
                for steps, times, values in _step_ordered(cursor):
                    yield key, steps, times, values


SQL_POINT = np.dtype([("step", np.int64), ("timestamp", np.int64), ("value", np.float64), ("is_nan", np.bool_)])


def _sql_counts(connection, run_id: str) -> dict[str, int]:
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import func, select

    query = select(SqlMetric.key, func.count()).where(SqlMetric.run_uuid == run_id).group_by(SqlMetric.key)
    return {key: int(count) for key, count in connection.execute(query)}


def _step_ordered(cursor) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(steps, timestamps, values) in chunks from a cursor of rows in step order, each
    chunk ordered by (step, timestamp, value); the points of a chunk's last step wait
    for the next chunk, which may hold more of them."""
    held = np.empty(0, SQL_POINT)
    while True:
        rows = cursor.fetchmany(HISTORY_CHUNK)
        points = np.concatenate([held, np.fromiter(rows, SQL_POINT, len(rows))]) if rows else held
        if rows:
            cut = int(np.searchsorted(points["step"], points["step"][-1]))
            points, held = points[:cut], points[cut:]
        if len(points):
            yield _sql_ordered(points)
        if not rows:
            return


def _sql_ordered(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = points["value"].copy()
    values[points["is_nan"]] = np.nan
    huge = np.abs(values) >= FLOAT64_MAX   # how MLflow's SQL store keeps +-inf
    values[huge] = np.copysign(np.inf, values[huge])
    order = np.lexsort((values, points["timestamp"], points["step"]))
    return points["step"][order], points["timestamp"][order], values[order]


# -- writing the target -------------------------------------------------------------------

def _refuse_incomplete(path: str, runs: list) -> None:
    if not os.path.isdir(path) or not os.listdir(path):
        return
    with contextlib.closing(steplog.open(path, mode="r")) as store:
        left = [run for run in runs if (found := store.run_record(run.info.run_id)) is not None
                and not found.get("imported_from")]
    if left:
        named = ", ".join(f"{r.info.run_id} ({r.info.run_name!r})" for r in left[:MAX_LISTED])
        more = f" and {len(left) - MAX_LISTED:,} more" if len(left) > MAX_LISTED else ""
        raise IncompleteRunError(
            f"{path} holds {counted(len(left), 'run')} of this MLflow store that an earlier import did not finish "
            f"(their points may be partly copied): {named}{more}. steplog cannot remove a single run; import into a "
            "new store instead. Nothing was written.")


def counted(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _import_experiments(store, experiments: list, summary: Summary) -> dict[str, str]:
    """MLflow experiment id -> the name of its experiment in the target. Experiments
    that keep their id are created first, so that those that need a new one take none
    of theirs."""
    held = {r["name"]: r for r in store.experiments()}
    ids = {r.get("id") for r in held.values()}
    names = {}
    new = [e for e in experiments if e.name not in held]
    new.sort(key=lambda e: e.experiment_id in ids)
    for experiment in experiments:
        names[experiment.experiment_id] = experiment.name
        summary.experiments_existing += experiment.name in held
    for experiment in new:
        wanted = experiment.experiment_id if experiment.experiment_id not in ids else _free_id(ids)
        store.create_experiment(experiment.name, tags=dict(experiment.tags),
                                artifact_location=experiment.artifact_location or None, id=wanted)
        ids.add(wanted)
        store.update_experiment(experiment.name, _experiment_change(experiment))
        summary.experiments += 1
    return names


def _free_id(ids: set) -> str:
    """The number after every numeric id in use: steplog's own counter does not skip the
    ids given explicitly, so it is not asked."""
    return str(max((int(i) for i in ids if isinstance(i, str) and i.isdigit()), default=-1) + 1)


def _experiment_change(experiment):
    def change(record):
        if experiment.creation_time is not None:
            record["created"] = int(experiment.creation_time) * NS_PER_MS
        if experiment.last_update_time is not None:
            record["updated"] = int(experiment.last_update_time) * NS_PER_MS
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            record["deleted"] = _deleted_ns(experiment)

    return change


def _deleted_ns(experiment) -> int:
    """When MLflow deleted an experiment: it sets the last update time then."""
    updated = experiment.last_update_time or experiment.creation_time
    return int(updated) * NS_PER_MS if updated is not None else time.time_ns()


def _import_runs(store, reader: Reader, experiments: list, runs: dict, names: dict, source_uri: str,
                 summary: Summary, progress: Progress | None, total: int) -> dict[str, dict[str, int]]:
    """Copy every run not imported before; returns run id -> metric key -> points copied."""
    copied: dict[str, dict[str, int]] = {}
    done = 0
    if progress is not None:
        progress(0, total)
    for experiment in experiments:
        deleted = _deleted_ns(experiment) if experiment.lifecycle_stage == LifecycleStage.DELETED else None
        for run in runs[experiment.experiment_id]:
            found = store.run_record(run.info.run_id)
            if found is not None and found.get("imported_from"):
                summary.runs_skipped += 1
            else:
                counts = _copy_run(store, reader, run, names[experiment.experiment_id], deleted, source_uri)
                copied[run.info.run_id] = counts
                summary.runs += 1
                summary.params += len(run.data.params)
                summary.tags += len(run.data.tags)
                summary.series += len(counts)
                summary.points += sum(counts.values())
            done += 1
            if progress is not None:
                progress(done, total)
    return copied


def _copy_run(store, reader: Reader, run, experiment_name: str, experiment_deleted: int | None,
              source_uri: str) -> dict[str, int]:
    """Running record, points, flush, final record: a run cut short keeps no
    "imported_from" and is seen by the next import."""
    record = run_record(run, experiment_name, experiment_deleted)
    run_id = record["id"]
    store.put_run_record({**record, "status": "running", "end_time": None})
    handle = store.run(run_id, resume=False)
    counts: dict[str, int] = {}
    for key, steps, times, values in reader.histories(run):
        handle.log_batch(key, steps, values, times * NS_PER_MS)
        counts[key] = counts.get(key, 0) + len(steps)
    store.flush()
    store.put_run_record({**record, "imported_from": source_uri})
    return counts


def run_record(run, experiment_name: str, experiment_deleted: int | None = None) -> dict:
    """The steplog run record of an MLflow run, as the steplog tracking store writes it."""
    info = run.info
    record = {"id": info.run_id, "experiment": experiment_name, "name": info.run_name or "", "parent": None,
              "status": STATUS_FROM_MLFLOW.get(info.status, "running"), "start_time": _ns(info.start_time),
              "end_time": _ns(info.end_time), "params": {k: rec.text(v) for k, v in run.data.params.items()},
              "tags": {k: rec.text(v) for k, v in run.data.tags.items()}, "user": info.user_id or "", "kind": None,
              "resources": {}, "environment": None, "artifact_uri": info.artifact_uri or None}
    if info.lifecycle_stage == LifecycleStage.DELETED:
        # MLflow's client does not show when a run was deleted; one of a deleted
        # experiment most likely went with it
        record["deleted"] = experiment_deleted or record["end_time"] or time.time_ns()
    inputs = [rec.dataset_record(d) for d in (run.inputs.dataset_inputs if run.inputs else [])]
    if inputs:
        record["inputs"] = inputs
    return record


def _ns(milliseconds) -> int | None:
    return None if milliseconds is None else int(milliseconds) * NS_PER_MS


# -- verification -------------------------------------------------------------------------

def _verify(store, reader: Reader, experiments: list, runs: dict, names: dict, copied: dict) -> None:
    """Compare the target with the source, count for count; MismatchError names what differs."""
    store.flush()
    held = {r["name"]: r for r in store.experiments()}
    differences = [f"experiment {e.name!r} (MLflow id {e.experiment_id}) is not in the target"
                   for e in experiments if e.name not in held]
    every_run = ((run, names[e.experiment_id]) for e in experiments for run in runs[e.experiment_id])
    for run, experiment_name in every_run:
        if len(differences) > MAX_LISTED:
            break
        differences += _run_differences(store, reader, run, experiment_name, copied.get(run.info.run_id))
    if differences:
        shown = "; ".join(differences[:MAX_LISTED])
        more = " (and more)" if len(differences) > MAX_LISTED else ""
        raise MismatchError(f"the copy differs from the source: {shown}{more}")


def _run_differences(store, reader: Reader, run, experiment_name: str, copied: dict | None) -> list[str]:
    run_id = run.info.run_id
    found = store.run_record(run_id)
    if found is None or not found.get("imported_from"):
        return [f"run {run_id} is not in the target"]
    differences = []
    if found["experiment"] != experiment_name:
        differences.append(f"run {run_id} is in experiment {found['experiment']!r}, not {experiment_name!r}")
    for what, source_items in (("params", run.data.params), ("tags", run.data.tags)):
        if len(found[what]) != len(source_items):
            differences.append(f"run {run_id}: {len(source_items):,} {what} in the source, "
                               f"{len(found[what]):,} in the target")
    # a file store has no count but the history itself: the points just read are its count
    expected = copied if copied is not None and reader.sql is None else reader.point_counts(run)
    held = _target_counts(store, run_id)
    for key in sorted(set(expected) | set(held)):
        if expected.get(key, 0) != held.get(key, 0):
            differences.append(f"run {run_id}: metric {key!r}: {expected.get(key, 0):,} points in the source, "
                               f"{held.get(key, 0):,} in the target")
    return differences


def _target_counts(store, run_id: str) -> dict[str, int]:
    table = store.metrics(run_id)
    columns = [table.column(c).to_pylist() for c in ("metric", "context", "kind", "count")]
    return {key: count for key, context, kind, count in zip(*columns) if context is None and kind == "scalar"}
