"""The public face: ``open()`` and ``Store`` (``Run`` lives in steplog.run).

Thread rules: a Store and its Runs may be used from many threads at once. Fork: a
Store belongs to the process that opened it; a child process opens the store again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import time as _time
import weakref
from typing import Iterable

import numpy as np
import pyarrow as pa

from . import _args
from .engine.errors import ClosedError, InvalidArgumentError, NotFoundError, StepLogError
from .engine.block import KIND_SCALAR, KIND_SUMMARY
from .engine.index import Heartbeat, Index
from .engine.layout import StoreLayout
from .engine.upgrade import open_index
from .engine.records import experiment_record, run_record
from .engine.recovery import cut_torn_tails
from .engine.segment import SegmentReader
from .engine.writer import DEFAULT_BLOCK_POINTS, DEFAULT_BUDGET_BYTES, DEFAULT_FLUSH_INTERVAL, SeriesKey, Writer
from .query import read as _read
from .query.downsample import empty_table as empty_bucket_table
from .query.reader import X_AXES, SeriesReader
from .query.runs import runs_table, series_table
from .run import Run

DURABILITY = ("fsync", "commit", "none")
_time_ns = _time.time_ns
_open_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """A store left open at interpreter exit is flushed, as users of other trackers expect."""
    for store in list(_open_stores):
        try:
            store.close()
        except StepLogError:
            pass  # nothing more can be done at exit; the next open cuts any torn tail


def open(path: str | os.PathLike, *, durability: str = "commit", budget_bytes: int = DEFAULT_BUDGET_BYTES,
         block_points: int = DEFAULT_BLOCK_POINTS, flush_interval: float | None = DEFAULT_FLUSH_INTERVAL) -> "Store":
    """Open the store at ``path`` (a directory), creating it if missing.

    durability: "fsync" makes ``flush()`` wait until points are on stable storage (they
    survive power loss); "commit" (default) until they are in the OS page cache (they
    survive a crash of the process); "none" is today the same as "commit".
    budget_bytes bounds the memory of all unflushed points of this store object;
    flush_interval (seconds, None for never) makes buffered points visible to other
    processes without an explicit flush.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise _args.InvalidTypeError("path", f"must be a str or path, got {type(path).__name__}")
    if durability not in DURABILITY:
        raise InvalidArgumentError("durability", f"must be one of {DURABILITY}, got {durability!r}")
    for argument, value in (("budget_bytes", budget_bytes), ("block_points", block_points)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgumentError(argument, f"must be a positive int, got {value!r}")
    if flush_interval is not None and (isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float))
                                       or not flush_interval > 0):   # NaN fails too; inf means never
        raise InvalidArgumentError("flush_interval", f"must be a positive number or None, got {flush_interval!r}")
    from .signals import install as install_sigterm_handler   # SIGTERM flushes, ends runs as killed, closes
    install_sigterm_handler()
    layout = StoreLayout(path)
    index = open_index(layout, fsync=durability == "fsync")
    cut_torn_tails(layout, index)
    writer = Writer(layout, index, fsync=durability == "fsync", budget_bytes=budget_bytes,
                    block_points=block_points, flush_interval=flush_interval)
    return Store(layout, index, writer)


class Store:
    """An open store. Use ``steplog.open()``; close it (or use ``with``) to flush."""

    def __init__(self, layout: StoreLayout, index: Index, writer: Writer):
        self.path = layout.root
        self._layout = layout
        self._index = index
        self._writer = writer
        self._segments = SegmentReader(layout.segment_path)
        self._closed = False
        self._pid = os.getpid()
        self._runs: "weakref.WeakSet[Run]" = weakref.WeakSet()
        _open_stores.add(self)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<steplog.Store {self.path!r}{' closed' if self._closed else ''}>"

    # -- runs --------------------------------------------------------------------------

    def start_run(self, experiment: str = "default", name: str | None = None, params: dict | None = None,
                  tags: dict | None = None, parent: "str | Run | None" = None) -> "Run":
        """Create a run and return it; use it as a context manager to end it."""
        self._check_open()
        experiment = _args.name_arg(experiment, "experiment")
        name = _args.optional_name_arg(name, "name")
        params = _args.mapping_arg(params, "params")
        tags = _args.mapping_arg(tags, "tags")
        parent_id = None if parent is None else self._run_id_arg(parent.id if isinstance(parent, Run) else parent,
                                                                  "parent")
        run_id = secrets.token_bytes(16)
        now = _time_ns()

        def create(txn):
            if parent_id is not None and txn.get_run(parent_id) is None:
                raise NotFoundError(f"parent: no run {parent_id.hex()}")
            records = []
            if txn.get_experiment(experiment) is None:
                records.append(experiment_record(txn, {"name": experiment, "created": now}))
            records.append(run_record(txn, {"id": run_id.hex(), "experiment": experiment,
                                            "name": name or run_id.hex()[:8],
                                            "parent": parent_id.hex() if parent_id else None, "status": "running",
                                            "start_time": now, "end_time": None, "params": params, "tags": tags}))
            txn.put_heartbeat(run_id, Heartbeat.now())
            return None, records

        self._writer.commit_records(create)
        self._writer.live_runs.add(run_id)
        return self._track(Run(self, run_id))

    def run(self, run_id: str) -> "Run":
        """Reopen a run to log more (a job resumed from a checkpoint); it is running again."""
        self._check_open()
        key = self._run_id_arg(run_id, "run_id")

        def resume(txn):
            record = txn.get_run(key)
            if record is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            record.update(status="running", end_time=None)
            txn.put_heartbeat(key, Heartbeat.now())
            return None, [run_record(txn, record)]

        self._writer.commit_records(resume)
        self._writer.live_runs.add(key)
        return self._track(Run(self, key))

    def _track(self, run: Run) -> Run:
        self._runs.add(run)
        return run

    def runs(self) -> pa.Table:
        """One row per run: id, experiment, name, parent, status, times, params.*, tags.*."""
        self._check_open()
        with self._index.read() as txn:
            return runs_table(list(txn.runs()), txn.heartbeats())

    def metrics(self, run_id: str) -> pa.Table:
        """The series of a run: metric, context, count, step_min, step_max (flushed points)."""
        self._check_open()
        key = self._existing_run(run_id)
        with self._index.read() as txn:
            rows = [(name, context, entry.kind, txn.series_info(entry.series_id))
                    for entry, name, context in txn.run_series(key)]
        return series_table(rows)

    # -- reads -------------------------------------------------------------------------

    def read(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
             stop: int | None = None, buckets: int | None = None, method: str = "minmax",
             x: str = "step") -> pa.Table:
        """One series, start <= step < stop, including points not yet flushed.

        Without ``buckets``: every point, a table of step, time, value sorted by step (ties
        in write order). With ``buckets=N`` and method "minmax": at most N rows of
        ``{x}_start``, ``{x}_end`` (end exclusive), count, nan_count, min, max, mean, first,
        first_step, last, last_step, exact over the raw points (empty buckets left out);
        x is "step" (from rollups), "time" or "relative" (time since the run started; both
        decode the range). With method "lttb": N raw points chosen by
        Largest-Triangle-Three-Buckets, first and last always kept.
        """
        self._check_open()
        key = SeriesKey(self._run_id_arg(run_id, "run_id"), _args.name_arg(name, "name"),
                        _args.context_arg(context))
        start, stop, buckets, method, x = _range_args(start, stop, buckets, method, x)
        with self._snapshot([key]) as (txn, readers):
            run = txn.get_run(key.run_id)
            if run is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            if self._kind_of(key, readers[key]) == KIND_SUMMARY:
                raise InvalidArgumentError("name", f"{name!r} holds tensor summaries; use Store.read_tensor")
            return _read_one(readers[key], run, start, stop, buckets, method, x)

    def read_many(self, runs: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                  experiment: str | None = None, start: int | None = None, stop: int | None = None,
                  buckets: int | None = None, method: str = "minmax", x: str = "step") -> pa.Table:
        """Several series in one long table: run_id, metric, context, then the columns of
        ``read`` with the same arguments. runs: run ids (default all, or all of
        ``experiment``); metrics: names (default all); every context of each is included."""
        self._check_open()
        runs = None if runs is None else list(dict.fromkeys(_list_arg(runs, "runs")))   # once each, in order
        run_keys = None if runs is None else [self._run_id_arg(r, "runs") for r in runs]
        names = None if metrics is None else {_args.name_arg(m, "metrics") for m in _list_arg(metrics, "metrics")}
        experiment = _args.optional_name_arg(experiment, "experiment")
        start, stop, buckets, method, x = _range_args(start, stop, buckets, method, x)
        with self._index.read() as txn:
            records = [txn.get_run(k) for k in run_keys] if run_keys is not None else list(txn.runs())
            if any(r is None for r in records):
                raise NotFoundError("runs: " + ", ".join(r for r, rec in zip(runs, records) if rec is None))
            records = [r for r in records if experiment is None or r["experiment"] == experiment]
            keys = [SeriesKey(bytes.fromhex(r["id"]), name, context) for r in records
                    for entry, name, context in txn.run_series(bytes.fromhex(r["id"]))
                    if entry.kind == KIND_SCALAR and (names is None or name in names)]
        keys += [k for k in self._writer.series_keys(KIND_SCALAR) if k not in set(keys)
                 and k.run_id in {bytes.fromhex(r["id"]) for r in records} and (names is None or k.name in names)]
        by_run = {bytes.fromhex(r["id"]): r for r in records}
        tables = []
        with self._snapshot(keys) as (_, readers):
            for key in keys:
                table = _read_one(readers[key], by_run[key.run_id], start, stop, buckets, method, x)
                n = table.num_rows
                labels = [pa.array([key.run_id.hex()] * n, pa.string()), pa.array([key.name] * n, pa.string()),
                          pa.array([key.context or None] * n, pa.string())]
                tables.append(pa.Table.from_arrays(labels + table.columns,
                                                   names=["run_id", "metric", "context"] + table.column_names))
        if not tables:
            empty = _read_one(None, None, start, stop, buckets, method, x)
            return pa.Table.from_arrays([pa.array([], pa.string())] * 3 + empty.columns,
                                        names=["run_id", "metric", "context"] + empty.column_names)
        return pa.concat_tables(tables)

    def read_tensor(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
                    stop: int | None = None, buckets: int | None = None) -> pa.Table:
        """Tensor summaries of one series, start <= step < stop: step, time, count,
        nan_count, inf_count, min, max, mean, std, l2, zero_fraction, q01..q99 and the
        histogram as list columns hist_edges and hist_counts. ``buckets=N`` merges
        successive summaries into at most N rows (see steplog.query.tensors)."""
        self._check_open()
        key = SeriesKey(self._run_id_arg(run_id, "run_id"), _args.name_arg(name, "name"),
                        _args.context_arg(context))
        start, stop, buckets, _, _ = _range_args(start, stop, buckets, "minmax", "step")
        with self._snapshot([key]) as (txn, readers):
            if txn.get_run(key.run_id) is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            reader = readers[key]
            if self._kind_of(key, reader) == KIND_SCALAR:
                raise InvalidArgumentError("name", f"{name!r} holds scalar points; use Store.read")
            return reader.summaries(start, stop, buckets)

    def _kind_of(self, key: SeriesKey, reader: SeriesReader) -> int | None:
        """The kind of a series: stored, or logged here and not yet flushed (None: neither)."""
        return reader.entry.kind if reader.entry is not None else self._writer.kind_of(key)

    @contextlib.contextmanager
    def _snapshot(self, keys: list[SeriesKey]):
        """One index read transaction and the unflushed points of ``keys``, taken together."""
        with self._writer.publish_lock:
            txn = self._index.read()
            unflushed = {key: self._writer.unflushed(key) for key in keys}
        with txn:
            readers = {key: SeriesReader(txn, self._segments, self._layout.segment_path,
                                         txn.get_series(key.run_id, key.name, key.context),
                                         unflushed[key])
                       for key in keys}
            yield txn, readers

    # -- lifetime ----------------------------------------------------------------------

    def flush(self) -> None:
        """Return when every point logged so far is durable and visible to other processes."""
        self._check_open()
        self._writer.flush()

    def close(self) -> None:
        """Flush and release the store. In a child process after fork() this only
        forgets it: the parent still owns its files and threads."""
        if self._closed:
            return
        self._closed = True
        _open_stores.discard(self)
        for run in list(self._runs):
            run._refuse("the store is closed; open it again and use Store.run() to log more")
        if self._pid != os.getpid():
            return
        try:
            self._writer.close()
        finally:
            self._segments.close()
            self._index.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the store is closed")
        if self._pid != os.getpid():
            raise ClosedError("this store was opened before fork(); call steplog.open() again in the child process")

    @staticmethod
    def _run_id_arg(run_id, argument: str) -> bytes:
        if not isinstance(run_id, str):
            raise _args.InvalidTypeError(argument, f"must be a run id str, got {type(run_id).__name__}")
        try:
            key = bytes.fromhex(run_id)
        except ValueError:
            key = b""
        if len(key) != 16:
            raise InvalidArgumentError(argument, f"{run_id!r} is not a run id (32 hex digits)")
        return key

    def _existing_run(self, run_id) -> bytes:
        key = self._run_id_arg(run_id, "run_id")
        with self._index.read() as txn:
            if txn.get_run(key) is None:
                raise NotFoundError(f"run_id: no run {run_id}")
        return key


def _range_args(start, stop, buckets, method, x) -> tuple:
    start = None if start is None else _args.step_arg(start, "start")
    stop = None if stop is None else _args.step_arg(stop, "stop")
    if buckets is not None:
        if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)):
            raise _args.InvalidTypeError("buckets", f"must be an int, got {type(buckets).__name__}")
        if buckets < 1:
            raise InvalidArgumentError("buckets", f"must be at least 1, got {buckets}")
        buckets = int(buckets)
    if method not in ("minmax", "lttb"):
        raise InvalidArgumentError("method", f"must be 'minmax' or 'lttb', got {method!r}")
    if x not in X_AXES:
        raise InvalidArgumentError("x", f"must be one of {X_AXES}, got {x!r}")
    if method == "lttb" and buckets is None:
        raise InvalidArgumentError("buckets", "method='lttb' needs the number of points to keep")
    return start, stop, buckets, method, x


def _list_arg(values, argument: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _args.InvalidTypeError(argument, f"must be a list, got {type(values).__name__}")
    return list(values)


def _read_one(reader: "SeriesReader | None", run: dict | None, start, stop, buckets, method, x) -> pa.Table:
    """The table ``Store.read`` returns for one series (reader None: its empty schema)."""
    run_start = run["start_time"] if run else 0
    if buckets is None or method == "lttb":
        if reader is None:
            return _read.Points.empty().to_arrow()
        if buckets is None:
            return reader.points(start, stop).to_arrow()
        return reader.lttb(start, stop, buckets, x, run_start).to_arrow()
    if reader is None:
        return empty_bucket_table(x)
    return reader.buckets(start, stop, buckets, x, run_start)
