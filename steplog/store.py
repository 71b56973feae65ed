"""The public face: ``open()``, ``Store`` and ``Run``.

Thread rules: a Store and its Runs may be used from many threads at once. Fork: a
Store belongs to the process that opened it; a child process opens the store again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import threading
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
from .engine.recovery import cut_torn_tails
from .engine.segment import SegmentReader
from .engine.writer import (DEFAULT_BLOCK_POINTS, DEFAULT_BUDGET_BYTES, DEFAULT_FLUSH_INTERVAL, KIND_NAMES,
                            SeriesBuffer, SeriesKey, SummaryRow, Writer)
from .query import read as _read
from .query.downsample import empty_table as empty_bucket_table
from .query.reader import X_AXES, SeriesReader
from .query.runs import runs_table, series_table

DURABILITY = ("fsync", "commit", "none")
RUN_STATUSES = ("running", "finished", "failed", "killed")
INT64_MIN, INT64_MAX = _args.INT64_MIN, _args.INT64_MAX
_time_ns = _time.time_ns
_FLOAT_ONLY = frozenset([float])
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
    survive a crash of the process); "none" lets LMDB write through its memory map
    asynchronously (fastest; still survives a crash of the process, not of the OS).
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
    if flush_interval is not None and (not isinstance(flush_interval, (int, float)) or flush_interval <= 0):
        raise InvalidArgumentError("flush_interval", f"must be a positive number or None, got {flush_interval!r}")
    layout = StoreLayout(path)
    layout.create_dirs()
    index = Index(layout.index_dir, sync=durability == "fsync", writemap=durability == "none")
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
            if txn.get_experiment(experiment) is None:
                txn.put_experiment({"name": experiment, "created": now})
            txn.put_run(run_id, {"id": run_id.hex(), "experiment": experiment, "name": name or run_id.hex()[:8],
                                 "parent": parent_id.hex() if parent_id else None, "status": "running",
                                 "start_time": now, "end_time": None, "params": params, "tags": tags})
            txn.put_heartbeat(run_id, Heartbeat.now())

        self._index.write(create)
        self._writer.live_runs.add(run_id)
        return Run(self, run_id)

    def run(self, run_id: str) -> "Run":
        """Reopen a run to log more (a job resumed from a checkpoint); it is running again."""
        self._check_open()
        key = self._run_id_arg(run_id, "run_id")

        def resume(txn):
            record = txn.get_run(key)
            if record is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            record.update(status="running", end_time=None)
            txn.put_run(key, record)
            txn.put_heartbeat(key, Heartbeat.now())

        self._index.write(resume)
        self._writer.live_runs.add(key)
        return Run(self, key)

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
            return _read_one(readers[key], run, start, stop, buckets, method, x)

    def read_many(self, runs: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                  experiment: str | None = None, start: int | None = None, stop: int | None = None,
                  buckets: int | None = None, method: str = "minmax", x: str = "step") -> pa.Table:
        """Several series in one long table: run_id, metric, context, then the columns of
        ``read`` with the same arguments. runs: run ids (default all, or all of
        ``experiment``); metrics: names (default all); every context of each is included."""
        self._check_open()
        run_keys = None if runs is None else [self._run_id_arg(r, "runs") for r in _list_arg(runs, "runs")]
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
            if reader.entry is not None and reader.entry.kind != KIND_SUMMARY:
                raise InvalidArgumentError("name", f"{name!r} holds scalar points; use Store.read")
            return reader.summaries(start, stop, buckets)

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


class Run:
    """A run being logged to. Obtain one from ``Store.start_run`` or ``Store.run``.

    ``log`` and ``log_batch`` buffer points in memory and return at once; ``flush``
    makes them durable. Thread-safe.
    """

    def __init__(self, store: Store, run_id: bytes):
        self._store = store
        self._key = run_id
        self.id = run_id.hex()
        self._writer = store._writer
        self._local = threading.local()   # .series: name or (name, context items) -> SeriesBuffer
        self._ended = False

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._ended:
            self.end("failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        return f"<steplog.Run {self.id}>"

    # -- metrics -----------------------------------------------------------------------

    def log(self, name, value=None, step: int | None = None, context: dict | None = None) -> None:
        """Log one point, or several metrics at one step when ``name`` is a dict.
        step=None logs at the next step of each series (its last step + 1, from 0)."""
        if self._ended:
            raise ClosedError(f"run {self.id} has ended; reopen it with Store.run() to log more")
        if type(name) is dict:
            return self._log_dict(name, value, step, context)
        try:
            buf = self._local.series.get(name if context is None else (name, _context_items(context)))
        except AttributeError:
            buf = None
        if buf is None:
            buf = self._open_series(name, context)
        if type(value) is not float:
            value = _args.value_arg(value)
        if step is None:
            step = buf.next_step()
        elif type(step) is not int or step > INT64_MAX or step < INT64_MIN:
            step = _args.step_arg(step)
        steps, times, values = buf.cols
        steps.append(step)
        times.append(_time_ns())
        values.append(value)  # last: len(values) counts complete points
        if len(values) >= self._writer.seal_at:
            self._writer.seal_full(buf)

    def _log_dict(self, metrics: dict, value, step, context) -> None:
        if value is not None:
            raise InvalidArgumentError("value", "pass either a dict of metrics or one name and a value")
        if step is not None and (type(step) is not int or step > INT64_MAX or step < INT64_MIN):
            step = _args.step_arg(step)
        try:
            series = self._local.series
        except AttributeError:
            series = self._local.series = {}
        names = tuple(metrics)
        group = names if context is None else (names, _context_items(context))
        bufs = series.get(group)  # the buffers of a dict's keys, looked up once per key set
        if bufs is None:
            bufs = series[group] = [self._open_series(name, context) for name in names]
        values = metrics.values()
        if not _FLOAT_ONLY.issuperset(map(type, values)):  # check all before appending any
            values = [_args.value_arg(v, f"value of {n!r}") for n, v in zip(names, values)]
        now = _time_ns()
        seal_at = self._writer.seal_at
        full = []
        for buf, value in zip(bufs, values):
            steps, times, column = buf.cols
            steps.append(buf.next_step() if step is None else step)
            times.append(now)
            column.append(value)
            if len(column) >= seal_at:
                full.append(buf)
        for buf in full:
            self._writer.seal_full(buf)

    def log_batch(self, name: str, steps, values, times=None, context: dict | None = None) -> None:
        """Log many points of one series from arrays. times (int64 ns since the epoch)
        default to now for every point."""
        if self._ended:
            raise ClosedError(f"run {self.id} has ended; reopen it with Store.run() to log more")
        try:
            buf = self._local.series.get(name if context is None else (name, _context_items(context)))
        except AttributeError:
            buf = None
        if buf is None:
            buf = self._open_series(name, context)
        steps = _args.column_arg(steps, "steps", np.int64)
        values = _args.column_arg(values, "values", np.float64)
        if len(values) != len(steps):
            raise InvalidArgumentError("values", f"has {len(values)} points but steps has {len(steps)}")
        if times is None:
            times = np.full(len(steps), _time_ns(), np.int64)
        else:
            times = _args.column_arg(times, "times", np.int64)
            if len(times) != len(steps):
                raise InvalidArgumentError("times", f"has {len(times)} points but steps has {len(steps)}")
        chunk = self._writer.block_points
        for lo in range(0, len(steps), chunk):
            self._writer.seal_for_batch(buf, steps[lo:lo + chunk], times[lo:lo + chunk], values[lo:lo + chunk])

    def _open_series(self, name, context, kind: int = KIND_SCALAR) -> SeriesBuffer:
        name = _args.name_arg(name, "name")
        key = SeriesKey(self._key, name, _args.context_arg(context))
        with self._store._index.read() as txn:
            entry = txn.get_series(key.run_id, key.name, key.context)
            last_step = txn.series_info(entry.series_id).step_max if entry is not None else -1
        if entry is not None and entry.kind != kind:
            raise InvalidArgumentError("name", f"{name!r} already holds {KIND_NAMES[entry.kind]}")
        buf = self._writer.buffer(key, last_step, kind)
        cache = "series" if kind == KIND_SCALAR else "tensors"
        try:
            series = getattr(self._local, cache)
        except AttributeError:
            series = {}
            setattr(self._local, cache, series)
        series[name if context is None else (name, _context_items(context))] = buf
        return buf

    # -- tensor summaries --------------------------------------------------------------

    def log_tensor(self, name: str, tensor, step: int | None = None, context: dict | None = None,
                   bins: int = 64, edges=None) -> None:
        """Log the summary of a tensor (numpy array, or anything with ``__array__`` or
        ``__dlpack__``, such as a torch tensor): counts, min, max, mean, std, l2 norm,
        zero fraction, quantiles and a histogram of ``bins`` bins over [min, max], or
        over the caller's ``edges`` (so that successive histograms share bins)."""
        self.log_tensors({name: tensor}, step, context, bins, edges)

    def log_tensors(self, tensors: dict, step: int | None = None, context: dict | None = None,
                    bins: int = 64, edges=None) -> None:
        """Log the summaries of several tensors at one step (a state_dict, gradients)."""
        from .engine.summary import summarize_many

        if self._ended:
            raise ClosedError(f"run {self.id} has ended; reopen it with Store.run() to log more")
        if not isinstance(tensors, dict):
            raise _args.InvalidTypeError("tensors", f"must be a dict of name to tensor, got {type(tensors).__name__}")
        if step is not None:
            step = _args.step_arg(step)
        bufs = [self._tensor_buffer(name, context) for name in tensors]
        arrays = [_args.tensor_arg(t, f"tensor {name!r}") for name, t in tensors.items()]
        shared = None if edges is None else _args.edges_arg(edges)
        many = summarize_many(arrays, bins, shared)
        now = _time_ns()
        seal_at = self._writer.summary_seal_at
        for i, buf in enumerate(bufs):
            steps, times, rows = buf.cols
            steps.append(buf.next_step() if step is None else step)
            times.append(now)
            rows.append(SummaryRow(many.stats[i], many.counts[i], shared))
            if len(rows) >= seal_at:
                self._writer.seal_full(buf)

    def _tensor_buffer(self, name, context) -> SeriesBuffer:
        try:
            buf = self._local.tensors.get(name if context is None else (name, _context_items(context)))
        except AttributeError:
            buf = None
        return buf if buf is not None else self._open_series(name, context, KIND_SUMMARY)

    # -- metadata ----------------------------------------------------------------------

    def log_params(self, params: dict) -> None:
        """Add or replace parameters (nested dicts allowed)."""
        self._update_record("params", _args.mapping_arg(params, "params"))

    def set_tags(self, tags: dict) -> None:
        """Add or replace tags."""
        self._update_record("tags", _args.mapping_arg(tags, "tags"))

    def _update_record(self, field: str, values: dict) -> None:
        self._store._check_open()

        def update(txn):
            record = txn.get_run(self._key)
            record[field].update(values)
            txn.put_run(self._key, record)

        self._store._index.write(update)

    def flush(self) -> None:
        """Return when every point logged so far (by this store object) is durable."""
        self._store.flush()

    def end(self, status: str = "finished") -> None:
        """Flush, then record the final status ("finished", "failed" or "killed")."""
        if status not in RUN_STATUSES[1:]:
            raise InvalidArgumentError("status", f"must be one of {RUN_STATUSES[1:]}, got {status!r}")
        if self._ended:
            return
        self._store.flush()
        self._ended = True

        def finish(txn):
            record = txn.get_run(self._key)
            record.update(status=status, end_time=_time_ns())
            txn.put_run(self._key, record)

        self._store._index.write(finish)
        self._writer.live_runs.discard(self._key)


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


def _context_items(context) -> tuple:
    try:
        items = tuple(sorted(context.items()))
        hash(items)
        return items
    except (AttributeError, TypeError):
        _args.context_arg(context)  # raises the typed error
        raise
