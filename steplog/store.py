"""The public face: ``open()`` and ``Store`` (``Run`` lives in steplog.run).

Thread rules: a Store and its Runs may be used from many threads at once. Fork: a
Store belongs to the process that opened it; a child process opens the store again.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import os
import secrets
import sys
import threading
import time as _time
from typing import Iterable, NamedTuple

import numpy as np
import pyarrow as pa

from . import _args
from .engine.errors import AlreadyExistsError, ClosedError, InvalidArgumentError, NotFoundError, ReadOnlyError, StepLogError
from .engine.block import KIND_SCALAR, KIND_SUMMARY
from .engine.index import RUN_FIELDS, Heartbeat, Index
from .engine.layout import StoreLayout
from .engine.upgrade import open_index
from .engine.records import artifact_record, experiment_record, run_record
from .engine.recovery import cut_torn_tails
from .engine.segment import SegmentReader
from .engine.writer import (DEFAULT_BLOCK_POINTS, DEFAULT_BUDGET_BYTES, DEFAULT_FLUSH_INTERVAL, KIND_NAMES,
                            SeriesBuffer, SeriesKey, Writer)
from .query import read as _read
from .query.downsample import empty_table as empty_bucket_table
from .query.reader import X_AXES, SeriesReader
from .query.runs import RUN_COLUMNS, series_table
from .run import RUN_STATUSES, Run, exit_status

DURABILITY = ("fsync", "commit", "none")
READ_METHODS = ("minmax", "lttb", "m4")
_UNFLUSHED_SEQ = 1 << 62   # block_seqs of the points not flushed yet, for their aggregates: after every stored one
MODES = ("a", "r")
_time_ns = _time.time_ns
_open_stores: "set[Store]" = set()   # kept until closed: a dropped handle is still flushed at exit
_shared_lock = threading.Lock()
_shared: "dict[str, _Shared]" = {}   # real path of a store directory -> what its handles share


@atexit.register
def _close_open_stores() -> None:
    """At interpreter exit every open store is flushed and its unended runs end, as in
    MLflow and W&B: "finished", or "failed" ("killed" for Ctrl-C) when an exception
    ended the program."""
    status = exit_status(getattr(sys, "last_type", None))
    for store in list(_open_stores):
        try:
            store._close(status)
        except StepLogError:
            pass  # nothing more can be done at exit; the next open cuts any torn tail


def open(path: str | os.PathLike, mode: str = "a", *, durability: str = "commit",
         budget_bytes: int = DEFAULT_BUDGET_BYTES, block_points: int = DEFAULT_BLOCK_POINTS,
         flush_interval: float | None = DEFAULT_FLUSH_INTERVAL) -> "Store":
    """Open the store at ``path`` (a directory; ``~`` is expanded).

    mode "a" (default): read and write, creating the store if the directory is missing
    or empty; "r": read only: the store must exist, nothing is written, no lock is
    taken, so it works on a read-only directory and beside processes that write.
    Opening a path that this process has open already shares it (one LMDB environment
    and one writer a process); each handle is closed on its own.
    durability: "fsync" makes ``flush()`` wait until points are on stable storage (they
    survive power loss); "commit" (default) until they are in the OS page cache (they
    survive a crash of the process); "none" is today the same as "commit".
    budget_bytes bounds the memory of all unflushed points of this store object;
    flush_interval (seconds, None for never) makes buffered points visible to other
    processes without an explicit flush.
    """
    if mode not in MODES:
        raise InvalidArgumentError("mode", f"must be 'a' (read and write) or 'r' (read only), got {mode!r}")
    if durability not in DURABILITY:
        raise InvalidArgumentError("durability", f"must be one of {DURABILITY}, got {durability!r}")
    for argument, value in (("budget_bytes", budget_bytes), ("block_points", block_points)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgumentError(argument, f"must be a positive int, got {value!r}")
    if flush_interval is not None and (isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float))
                                       or not flush_interval > 0):   # NaN fails too; inf means never
        raise InvalidArgumentError("flush_interval", f"must be a positive number or None, got {flush_interval!r}")
    root = _store_path(path, mode)
    options = (durability, budget_bytes, block_points, flush_interval)
    with _shared_lock:
        shared = _shared.get(os.path.realpath(root))
        if shared is None or shared.pid != os.getpid():
            shared = _Shared.open(StoreLayout(root), mode, options)
            _shared[shared.real_path] = shared
        else:
            shared.check_options(mode, options)
        shared.handles += 1
    return Store(shared, root, read_only=mode == "r")


def _store_path(path, mode: str) -> str:
    """The store directory ``path`` names, refused when it cannot be (or hold) a store."""
    if not isinstance(path, (str, os.PathLike)):
        raise _args.InvalidTypeError("path", f"must be a str or path, got {type(path).__name__}")
    root = os.path.expanduser(os.fspath(path))
    if not isinstance(root, str):
        raise _args.InvalidTypeError("path", "must be a str path, not bytes")
    if not root.strip():
        raise InvalidArgumentError("path", "must not be empty")
    if os.path.exists(root) and not os.path.isdir(root):
        raise InvalidArgumentError("path", f"{root} is a file; a store is a directory")
    layout = StoreLayout(root)
    if not os.path.isdir(root) or not os.listdir(root):
        if mode == "r":
            raise NotFoundError(f"path: no store at {root}")
        return root
    if not (os.path.isdir(layout.index_dir) or os.path.isdir(layout.segments_dir)):
        raise InvalidArgumentError("path", f"{root} holds other files and is not a steplog store; "
                                   "pass a new or empty directory")
    return root


class _Shared:
    """What every handle of one store directory in this process shares: the index, the
    segment reader and the writer (None when opened read-only). Guarded by _shared_lock."""

    def __init__(self, layout: StoreLayout, index: Index, writer: Writer | None, options: tuple):
        self.layout = layout
        self.real_path = os.path.realpath(layout.root)
        self.index = index
        self.writer = writer
        self.segments = SegmentReader(layout.segment_path)
        self.options = options
        self.handles = 0
        self.pid = os.getpid()
        self.catalog_lock = threading.Lock()
        self.catalog_view = None   # query.catalog.CatalogView, kept between queries
        self.blobs_kept: set[str] = set()   # environment blobs this process stored already
        self._blobs = None
        self.artifacts_cache = (None, None)   # (meta/next_artifact, table) of the last Store.artifacts()

    @property
    def blobs(self):
        """The blob store (engine.blobs), imported on first use: ``import steplog`` stays fast."""
        if self._blobs is None:
            from .engine.blobs import BlobStore

            self._blobs = BlobStore(self.layout)
        return self._blobs

    @classmethod
    def open(cls, layout: StoreLayout, mode: str, options: tuple) -> "_Shared":
        durability, budget_bytes, block_points, flush_interval = options
        if mode == "r":
            return cls(layout, _open_read_only(layout), None, options)
        from .signals import install as install_sigterm_handler   # SIGTERM flushes, ends runs as killed, closes
        install_sigterm_handler()
        try:
            index = open_index(layout, fsync=durability == "fsync")
        except PermissionError as exc:
            if isinstance(exc, StepLogError):
                raise
            raise ReadOnlyError(f"{layout.root}: this process may not write there ({exc.strerror}); open an "
                                "existing store with mode='r' to read it") from None
        try:
            cut_torn_tails(layout, index)
            writer = Writer(layout, index, fsync=durability == "fsync", budget_bytes=budget_bytes,
                            block_points=block_points, flush_interval=flush_interval)
        except BaseException:
            index.close()
            raise
        return cls(layout, index, writer, options)

    def check_options(self, mode: str, options: tuple) -> None:
        if mode == "r":
            return
        if self.writer is None:
            raise InvalidArgumentError("mode", f"{self.layout.root} is open read-only in this process; close "
                                       "those handles before opening it to write")
        if options != self.options:
            names = ("durability", "budget_bytes", "block_points", "flush_interval")
            diff = ", ".join(f"{n}={o!r}" for n, o, m in zip(names, self.options, options) if o != m)
            raise InvalidArgumentError("open", f"{self.layout.root} is open in this process with {diff}; "
                                       "open it again with the same options, or close it first")

    def release(self) -> None:
        """One handle fewer; the last one flushes and closes everything."""
        with _shared_lock:
            self.handles -= 1
            if self.handles > 0:
                return
            if _shared.get(self.real_path) is self:
                del _shared[self.real_path]
        if self.pid != os.getpid():
            return
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.segments.close()
            self.index.close()


def _open_read_only(layout: StoreLayout) -> Index:
    if not os.path.exists(os.path.join(layout.index_dir, "data.mdb")):
        raise NotFoundError(f"path: no store index at {layout.index_dir} (`steplog repair` rebuilds one "
                            "from the segments)")
    return Index(layout.index_dir, sync=False, create=False, readonly=True)


class Store:
    """An open store. Use ``steplog.open()``; close it (or use ``with``) to flush.
    The methods and their rules are those of steplog.protocol.StoreProtocol."""

    def __init__(self, shared: _Shared, path: str, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self._shared = shared
        self._layout = shared.layout
        self._index = shared.index
        self._writer = shared.writer or _NO_WRITER   # a read-only handle still sees this process's points
        self._segments = shared.segments
        self._closed = False
        self._pid = os.getpid()
        self._runs: "dict[bytes, Run]" = {}   # runs this handle started or resumed and has not ended
        _open_stores.add(self)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(exit_status(exc_type, exc))

    def __repr__(self) -> str:
        return f"<steplog.Store {self.path!r}{' closed' if self._closed else ''}>"

    # -- runs --------------------------------------------------------------------------

    def start_run(self, experiment: str = "default", name: str | None = None, params: dict | None = None,
                  tags: dict | None = None, parent: "str | Run | None" = None, kind: str | None = None,
                  resources: dict | None = None, capture: "bool | list | tuple | None" = True) -> "Run":
        """Create a run and return it; use it as a context manager to end it.
        kind: what the run does ("preprocess", "train", "evaluate", "deploy", any
        name); resources: what it ran on ({"gpus": 8, "node": "a100"}), checked like
        params. Both are kept in the run record. capture: the environment to record
        (steplog/environment.py: True, all of git, script, python, packages, machine,
        gpus, env; False, none; or a list of those parts); ``environment(run_id)``
        gives it back."""
        self._check_writable()
        experiment = _args.name_arg(experiment, "experiment")
        name = _args.optional_name_arg(name, "name")
        params = _args.mapping_arg(params, "params")
        tags = _args.mapping_arg(tags, "tags")
        kind = _args.optional_name_arg(kind, "kind")
        resources = _args.mapping_arg(resources, "resources")
        parent_id = None if parent is None else self._run_id_arg(parent.id if isinstance(parent, Run) else parent,
                                                                  "parent")
        environment = self._capture_environment(capture)
        run_id = secrets.token_bytes(16)
        now = _time_ns()

        def create(txn):
            if parent_id is not None and txn.get_run(parent_id) is None:
                raise NotFoundError(f"parent: no run {parent_id.hex()}")
            records = new_experiment_records(txn, experiment, now)
            records.append(run_record(txn, {"id": run_id.hex(), "experiment": experiment,
                                            "name": name or run_id.hex()[:8],
                                            "parent": parent_id.hex() if parent_id else None, "status": "running",
                                            "start_time": now, "end_time": None, "params": params, "tags": tags,
                                            "kind": kind, "resources": resources,
                                            "environment": environment}))
            txn.put_heartbeat(run_id, Heartbeat.now())
            return None, records

        self._writer.commit_records(create)
        self._writer.live_runs.add(run_id)
        return self._track(Run(self, run_id))

    def set_terminated(self, run_id: str, status: str = "finished") -> None:
        """End a run by its id, as MLflow's ``set_terminated`` does: a crashed run
        (its processes gone) marked failed, say. status: finished, failed or killed."""
        self._check_writable()
        key = self._existing_run(run_id)
        if status not in RUN_STATUSES[1:]:
            raise InvalidArgumentError("status", f"must be one of {RUN_STATUSES[1:]}, got {status!r}")
        self.end_run(key, status)

    def _capture_environment(self, capture) -> dict | None:
        """The run record's environment: small, its big parts (package list, diff,
        machine) stored as blobs first, once per content and process."""
        if capture is False:
            return None
        from . import environment   # here: `import steplog` does not pay for it

        captured = environment.capture(capture)
        kept = self._shared.blobs_kept
        for digest, data in captured.blobs.items():
            if digest not in kept:
                self._shared.blobs.put_bytes(data)
                kept.add(digest)
        return captured.record or None

    def environment(self, run_id: str) -> dict:
        """The environment a run recorded at start_run, its shared parts read back
        (steplog.environment.describe); {} for a run that recorded none."""
        from . import environment

        self._check_open()
        key = self._existing_run(run_id)
        with self._index.read() as txn:
            record = txn.get_run(key)
        found = record.get("environment")
        return environment.describe(found, self.get_blob) if found else {}

    def run(self, run_id: str, resume: bool = True) -> "Run":
        """Reopen a run to log more (a job resumed from a checkpoint); it is running again.
        A run this handle has open and not ended is returned as it is. resume=False
        (frontends that keep their own run life cycle, such as MLflow's): a Run to log
        to that leaves the record as it is and is not ended when the store closes."""
        self._check_writable()
        key = self._run_id_arg(run_id, "run_id")
        if key in self._runs:
            return self._runs[key]
        if not resume:
            self._existing_run(run_id)
            return Run(self, key)

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

    # -- experiments, and records as a frontend gives them -------------------------------

    def experiments(self) -> list[dict]:
        """Every experiment record: name, id, created (ns), and what frontends keep in
        it (tags, deleted, artifact_location, updated); by creation."""
        self._check_open()
        with self._index.read() as txn:
            found = list(txn.experiments())
        return sorted(found, key=lambda e: (e["created"], e["name"]))

    def create_experiment(self, name: str, tags: dict | None = None, artifact_location: str | None = None,
                          *, id: str | None = None) -> dict:
        """Create an experiment and return its record; one of that name raises
        AlreadyExistsError. id: a frontend's own id (MLflow's "0" for its Default
        experiment); by default the next number."""
        self._check_writable()
        name = _args.name_arg(name, "name")
        tags = _args.mapping_arg(tags, "tags")
        if artifact_location is not None and not isinstance(artifact_location, str):
            raise _args.InvalidTypeError("artifact_location", f"must be a str, got {type(artifact_location).__name__}")
        if id is not None and (not isinstance(id, str) or not id.strip()):
            raise InvalidArgumentError("id", f"must be a non-empty str, got {id!r}")

        def create(txn):
            if txn.get_experiment(name) is not None:
                raise AlreadyExistsError(f"name: an experiment named {name!r} exists")
            if id is not None and any(e.get("id") == id for e in txn.experiments()):
                raise AlreadyExistsError(f"id: an experiment has id {id!r}")
            now = _time_ns()
            record = {"name": name, "created": now, "id": id or new_experiment_id(txn),
                      "tags": tags, "artifact_location": artifact_location, "updated": now}
            return record, [experiment_record(txn, record)]

        return self._writer.commit_records(create)

    def update_experiment(self, name: str, change) -> dict:
        """Apply ``change(record)`` to an experiment's record in one transaction and return
        it. A changed "name" renames the experiment: its runs move with it, and a name
        in use raises AlreadyExistsError. A record kept without an id is given one."""
        self._check_writable()
        name = _args.lookup_name_arg(name, "name")

        def update(txn):
            record = txn.get_experiment(name)
            if record is None:
                raise NotFoundError(f"name: no experiment {name!r}")
            change(record)
            record["name"] = _args.name_arg(record["name"], "name")
            record.setdefault("id", None)
            record["id"] = record["id"] or new_experiment_id(txn)
            renamed = record["name"] != name
            if renamed and txn.get_experiment(record["name"]) is not None:
                raise AlreadyExistsError(f"name: an experiment named {record['name']!r} exists")
            if renamed:
                txn.delete_experiment(name)
            records = [experiment_record(txn, record)]
            if renamed:
                for run in txn.runs():
                    if run["experiment"] == name:
                        records.append(run_record(txn, {**run, "experiment": record["name"]}))
            return record, records

        return self._writer.commit_records(update)

    def run_records(self) -> list[dict]:
        """Every run record as stored (docs/FORMAT.md "Run record"), in id order."""
        self._check_open()
        with self._index.read() as txn:
            return list(txn.runs())

    def run_record(self, run_id: str) -> dict | None:
        """A run's record as stored, or None when the store holds no such run."""
        self._check_open()
        key = self._run_id_arg(run_id, "run_id")
        with self._index.read() as txn:
            return txn.get_run(key)

    def put_run_record(self, record: dict) -> None:
        """Store a run record as a frontend or an importer gives it (id, times, status),
        with its experiment's record if the store lacks one, in one transaction. No
        heartbeat is written and the run is not tracked by this handle: a "running"
        record reads as crashed in steplog's own views until a writer resumes it."""
        self._check_writable()
        missing = sorted(RUN_FIELDS - set(record))
        if missing:
            raise InvalidArgumentError("record", f"lacks {', '.join(missing)}")
        self._run_id_arg(record["id"], "record['id']")

        def put(txn):
            records = new_experiment_records(txn, record["experiment"], record["start_time"])
            records.append(run_record(txn, dict(record)))
            return None, records

        self._writer.commit_records(put)

    def _track(self, run: Run) -> Run:
        self._runs[run._key] = run
        return run

    # -- what a Run asks of its store (steplog.protocol.RunBackend) ----------------------

    def points_writer(self) -> Writer:
        """Where the Runs of this handle append points."""
        return self._writer

    def series_buffer(self, key: SeriesKey, kind: int) -> SeriesBuffer:
        """A buffer of the calling thread for the points of ``key``, a series of ``kind``."""
        self._check_writable()
        with self._index.read() as txn:
            entry = txn.get_series(key.run_id, key.name, key.context)
            last_step = txn.series_info(entry.series_id).last_step if entry is not None else -1
        if entry is not None and entry.kind != kind:
            raise InvalidArgumentError("name", f"{key.name!r} already holds {KIND_NAMES[entry.kind]}")
        return self._writer.buffer(key, last_step, kind)

    def update_run(self, run_id: bytes, change) -> None:
        """Apply ``change(record)`` to the stored record of a run, in one transaction."""
        self._check_writable()
        run_id = self._existing_run(run_id) if isinstance(run_id, str) else run_id

        def update(txn):
            record = txn.get_run(run_id)
            change(record)
            return None, [run_record(txn, record)]

        self._writer.commit_records(update)

    def end_run(self, run_id: bytes, status: str) -> None:
        """Flush the points of a run, then record its final status."""
        self._check_writable()
        run_id = self._existing_run(run_id) if isinstance(run_id, str) else run_id
        self._writer.flush(run_id)

        def finish(txn):
            record = txn.get_run(run_id)
            record.update(status=status, end_time=_time_ns())
            txn.delete_heartbeat(run_id)   # this process's; other writers of the run keep theirs
            return None, [run_record(txn, record)]

        self._writer.commit_records(finish)
        self._writer.live_runs.discard(run_id)
        self._runs.pop(run_id, None)

    def log_artifact(self, run_id: bytes, path_or_uri, role: str, name, copy: bool, hash) -> dict:
        """Hash what ``path_or_uri`` names, store its bytes when ``copy``, then record it
        (Run.log_artifact has the rules). The blobs are durable before the record
        that names them is committed."""
        from .engine.artifacts import ROLES, default_name, describe

        self._check_writable()
        if role not in ROLES:
            raise InvalidArgumentError("role", f"must be one of {ROLES}, got {role!r}")
        name = _args.optional_name_arg(name, "name")
        if not isinstance(copy, bool):
            raise _args.InvalidTypeError("copy", f"must be True or False, got {type(copy).__name__}")
        if hash is not None and not isinstance(hash, str):
            raise _args.InvalidTypeError("hash", f"must be a str (a SHA-256 or an ETag), got {type(hash).__name__}")
        found = describe(path_or_uri, hash)
        if found.manifest is not None:
            self._shared.blobs.put_bytes(found.manifest)   # a directory's file list, kept with or without copy
        stored = copy and found.fields["kind"] != "uri"
        if stored:
            for entry in found.files:
                self._shared.blobs.put_file(entry.source, entry.sha256, entry.size)
        record = {"run": run_id.hex(), "seq": 0, "name": name or default_name(found.fields), "role": role,
                  **found.fields, "stored": stored, "logged": _time_ns()}

        def commit(txn):
            if txn.get_run(run_id) is None:
                raise NotFoundError(f"run_id: no run {run_id.hex()}")
            return None, [artifact_record(txn, record)]

        self._writer.commit_records(commit)
        shown = {"run_id": record["run"], **{k: v for k, v in record.items() if k != "run"}}
        if found.manifest is None:
            return shown
        return {**shown, "manifest": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in found.files]}

    def runs(self, where: str | None = None, order_by=None, limit: int | None = None,
             experiment: "str | Iterable[str] | None" = None) -> pa.Table:
        """One row per run: id, experiment, name, parent, status, times, params.*, tags.*
        (query/runs.py types them), ordered by start time unless ``order_by``.

        where: a filter (query/search.py: ``"params.lr < 0.01 and metrics.val_loss.min
        < 0.2"``); order_by: "<name> [ASC|DESC]" or a list of them; limit: at most this
        many rows; experiment: a name or a list of names (NotFoundError, with the closest
        names, for one the store does not hold). Metric values are those of the flushed
        points: ``Run.flush()`` makes a run's latest count. With any of these, param and
        tag columns that no selected run holds are left out.
        Repeated calls are fast: the catalog is kept and brought up to date from the
        index's change log, so every committed change of every process is seen."""
        self._check_open()
        view, table, rows = self._select_runs(where, order_by, limit, experiment)
        if rows is None:
            return table
        picked = table.take(pa.array(rows, pa.int64()))
        fixed = {name for name, _ in RUN_COLUMNS}
        return picked.select([name for name in picked.column_names
                              if name in fixed or picked.column(name).null_count < picked.num_rows])

    def series(self, where: str | None = None, experiment: "str | Iterable[str] | None" = None,
               runs: "Iterable[str] | None" = None) -> pa.Table:
        """One row per series of the selected runs (``where`` and ``experiment`` as in
        ``runs()``; ``runs``: run ids), by run (start time), metric and context: run_id,
        metric, context (JSON text, null for none), kind ("scalar" or "tensor"), count,
        nan_count, step_min, step_max, first, first_step, last, last_step, min, min_step,
        max, max_step, mean, over the flushed points, from the kept aggregates (no point
        is decoded). min and max skip NaN (NaN, at a null step, when every value is
        NaN); mean = sum of the non-NaN values / their count. Tensor series have counts
        and steps only."""
        self._check_open()
        view, table, rows = self._select_runs(where, None, None, experiment)
        if runs is not None:
            wanted = [self._run_id_arg(r, "runs").hex() for r in _list_arg(runs, "runs")]
            ids = table.column("id").to_pylist()
            at = {run_id: i for i, run_id in enumerate(ids)}
            missing = [r for r in wanted if r not in at]
            if missing:
                raise NotFoundError("runs: no run " + ", ".join(missing))
            chosen = np.array(sorted({at[r] for r in wanted}), np.int64)
            rows = chosen if rows is None else np.intersect1d(rows, chosen)
        return view.series_table(rows)

    def analytics(self, where: str | None = None, metrics: "Iterable[str] | None" = None,
                  aggs: Iterable[str] = ("last", "min", "max", "mean", "count"),
                  contexts: "Iterable[dict] | None" = None, params: "Iterable[str] | None" = None,
                  experiment: "str | Iterable[str] | None" = None) -> pa.Table:
        """One row per selected run (``where``, ``experiment`` as in ``runs()``): id,
        experiment, name, status, start_time, end_time, the params (all, or the keys
        ``params`` names, "lr" or "params.lr"), then a column per series and aggregate,
        named ``val_loss.min`` (``loss{subset=val}.min`` for a series with a context);
        min and max also get ``.min_step`` / ``.max_step``. aggs: of last, first, min,
        max, mean, count, sum, nan_count. metrics: names (None: every scalar metric of
        the selected runs); contexts: context dicts to keep ({} is no context; None:
        every one). From the kept aggregates of the flushed points; no point is decoded.
        Null where a run has no such series. A metric no selected run holds raises
        NotFoundError with the closest names; an unknown aggregate InvalidArgumentError."""
        import pyarrow.compute as pc

        from .query.catalog import AGGS, context_label

        self._check_open()
        aggs = _list_arg(aggs, "aggs")
        unknown = [a for a in aggs if a not in AGGS]
        if unknown or not aggs:
            raise InvalidArgumentError("aggs", f"unknown aggregate {unknown[0]!r}; one of {', '.join(AGGS)}"
                                       if unknown else "name at least one aggregate")
        names = None if metrics is None else [_args.lookup_name_arg(m, "metrics") for m in _list_arg(metrics, "metrics")]
        wanted_contexts = None if contexts is None else {_args.context_arg(c, limits=False)
                                                         for c in _list_arg(contexts, "contexts")}
        keep = None if params is None else [p if p.startswith("params.") else f"params.{p}"
                                            for p in (_args.lookup_name_arg(p, "params")
                                                      for p in _list_arg(params, "params"))]
        view, table, rows = self._select_runs(where, None, None, experiment)
        rows = np.arange(table.num_rows, dtype=np.int64) if rows is None else rows
        take = pa.array(rows, pa.int64())
        picked = table.take(take)
        columns = {name: picked.column(name) for name in ("id", "experiment", "name", "status", "start_time",
                                                         "end_time")}
        as_param = {n: n.replace("params_text.", "params.", 1) for n in picked.column_names
                    if n.split(".", 1)[0] in ("params", "params_text")}

        def under(name: str, key: str) -> bool:   # "params.model" keeps "params.model.depth"
            return name == key or name.startswith(key + ".")

        for key in keep or ():
            if not any(under(p, key) for p in as_param.values()):
                bare = len("params.")
                raise NotFoundError(f"params: no selected run has a param {key[bare:]!r}"
                                    f"{_did_you_mean(key[bare:], [p[bare:] for p in as_param.values()])}")
        for name, param in as_param.items():
            if keep is None or any(under(param, key) for key in keep):
                columns[name] = picked.column(name)
        held = view.scalar_series_names(None if picked.num_rows == view.n else rows)
        if names is not None:
            missing = [n for n in names if n not in {m for m, _ in held}]
            if missing:
                raise NotFoundError(f"metrics: no selected run holds a metric {missing[0]!r}"
                                    f"{_did_you_mean(missing[0], [m for m, _ in held])}")
            held = [p for p in held if p[0] in names]
        if wanted_contexts is not None:
            held = [p for p in held if (p[1] or "") in wanted_contexts]
        for name, context in held:
            stem = context_label(name, context)
            for agg in aggs:
                columns[f"{stem}.{agg}"] = view.metric_column(name, context or "", agg).take(take)
                if agg in ("min", "max"):
                    columns[f"{stem}.{agg}_step"] = view.metric_column(name, context or "", f"{agg}_step").take(take)
        return pa.table(columns)

    def _select_runs(self, where, order_by, limit, experiment):
        """(catalog view, the runs table, the rows selected in it or None for all)."""
        import pyarrow.compute as pc

        from .query.search import parse_filter, parse_order_by, select

        filt, order = parse_filter(where), parse_order_by(order_by)
        experiments = None if experiment is None else [
            _args.lookup_name_arg(e, "experiment")
            for e in ([experiment] if isinstance(experiment, str) else _list_arg(experiment, "experiment"))]
        with self._index.read() as txn:
            view = self._catalog_view(txn)
            heartbeats = txn.heartbeats()
            for name in experiments or ():
                if txn.get_experiment(name) is None:
                    held = [e["name"] for e in txn.experiments()]
                    raise NotFoundError(f"experiment: no experiment {name!r}{_did_you_mean(name, held)}")
        table = view.table(heartbeats)
        if filt.keeps_all and not order and limit is None and experiments is None:
            return view, table, None
        subset = None
        if experiments is not None:
            subset = np.flatnonzero(pc.is_in(table.column("experiment").combine_chunks(),
                                             value_set=pa.array(experiments, pa.string())).to_numpy(zero_copy_only=False))

        def columns(ref):
            found = ([table.column(ref.key).combine_chunks()] if ref.kind == "attribute"
                     and ref.key in table.column_names else view.columns(ref))
            return found if subset is None else [a.take(pa.array(subset)) for a in found]

        rows = select(filt, order, limit, columns, table.num_rows if subset is None else len(subset))
        return view, table, rows if subset is None else subset[rows]

    def _catalog_view(self, txn):
        """The catalog as of ``txn``, kept by this process's handles of the store and
        brought up to date from the change log (query/catalog.py)."""
        from .engine.catalog import load, stored_aggregates
        from .query.catalog import CatalogView

        aggregates_of = None
        if not txn.has_table("aggregates"):   # a version-3 index, read-only: decode the blocks
            def aggregates_of(series_id):
                return stored_aggregates(txn, self._segments, self._layout.segment_path, series_id)
        shared = self._shared
        with shared.catalog_lock:
            view = shared.catalog_view
            found = load(txn, None if view is None else view.catalog, aggregates_of)
            if view is None or found is not view.catalog:
                view = shared.catalog_view = CatalogView(found)
            return view

    def metrics(self, run_id: str) -> pa.Table:
        """The series of a run: metric, context, kind, count, step_min, step_max, then the
        aggregates of ``series()`` (nan_count, first, first_step, last, last_step, min,
        min_step, max, max_step, mean), over the stored points and those this process
        logged and has not flushed yet."""
        from .engine.aggregates import merge, of_points
        from .engine.catalog import stored_aggregates

        self._check_open()
        key = self._existing_run(run_id)
        with self._writer.publish_lock:
            txn = self._index.read()
            logged = [k for kind in (KIND_SCALAR, KIND_SUMMARY) for k in self._writer.series_keys(kind, key)]
            unflushed = self._writer.unflushed_many(logged)
        with txn:
            rows = {}
            for entry, name, context in txn.run_series(key):
                info, found = txn.series_info(entry.series_id), None
                if entry.kind == KIND_SCALAR and info.count:
                    found = (txn.aggregates(entry.series_id) if txn.has_table("aggregates") else
                             stored_aggregates(txn, self._segments, self._layout.segment_path, entry.series_id))
                rows[(name, context)] = (entry.kind, info, found)
        for k, chunks in unflushed.items():
            chunks = [chunk for chunk in chunks if len(chunk[0])]
            if not chunks:
                continue
            kind, info, found = rows.get((k.name, k.context), (self._writer.kind_of(k), None, None))
            steps = [chunk[0] for chunk in chunks]
            count = sum(map(len, steps)) + (info.count if info else 0)
            lows, highs = [int(s.min()) for s in steps], [int(s.max()) for s in steps]
            if info and info.count:
                lows.append(info.step_min), highs.append(info.step_max)
            if kind == KIND_SCALAR:   # written after every stored point: numbered past them
                for i, chunk in enumerate(chunks):
                    found = merge(found, of_points(chunk[0], chunk[2], lambda _, i=i: _UNFLUSHED_SEQ + i))
            rows[(k.name, k.context)] = (kind, SeriesCounts(count, min(lows), max(highs)), found)
        return series_table([(name, context, *row) for (name, context), row in rows.items()])

    # -- reads -------------------------------------------------------------------------

    def read(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
             stop: int | None = None, buckets: int | None = None, method: str = "minmax",
             x: str = "step", missing_ok: bool = False) -> pa.Table:
        """One series, start <= step < stop, including points not yet flushed.

        Without ``buckets``: every point, a table of step, time (microseconds), value and
        time_ns (the exact nanoseconds logged) sorted by step (ties in write order). With ``buckets=N`` and method "minmax": at most N rows of
        ``{x}_start``, ``{x}_end`` (end exclusive), count, nan_count, min, max, mean, first,
        first_step, last, last_step, exact over the raw points (empty buckets left out;
        at least N/2 rows when the range holds N steps); x is "step" (from rollups),
        "time" or "relative" (time since the run started; both decode the range). With
        method "lttb": at most N raw points chosen by Largest-Triangle-Three-Buckets,
        first and last kept, and within N the first NaN or inf of each LTTB bucket; over
        time, in time order, for x="time" or "relative" (which adds a relative column).
        With method "m4": the real points (as without buckets) that hold the first,
        minimum, maximum and last value of each of N step buckets, and its first NaN: at
        most 4N, found from rollups in a time that does not grow with the series
        (query/m4.py), so that a chart of them shows every spike.
        A series the run does not hold raises NotFoundError naming the closest names;
        with ``missing_ok=True`` (code polling a live run) it reads as no rows.
        """
        self._check_open()
        key = SeriesKey(self._run_id_arg(run_id, "run_id"), _args.lookup_name_arg(name, "name"),
                        _args.context_arg(context, limits=False))
        start, stop, buckets, method, x = _range_args(start, stop, buckets, method, x)
        with self._snapshot([key]) as (txn, readers):
            run = txn.get_run(key.run_id)
            if run is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            kind = self._kind_of(key, readers[key])
            if kind is None and not missing_ok:
                raise _missing_series(txn, key, self._writer)
            if kind == KIND_SUMMARY:
                raise InvalidArgumentError("name", f"{name!r} holds tensor summaries; use Store.read_tensor")
            return _read_one(readers[key], run, start, stop, buckets, method, x)

    def read_many(self, runs: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                  experiment: str | None = None, start: int | None = None, stop: int | None = None,
                  buckets: int | None = None, method: str = "minmax", x: str = "step",
                  missing_ok: bool = False) -> pa.Table:
        """Several series in one long table: run_id, metric, context, then the columns of
        ``read`` with the same arguments. runs: run ids (default all, or all of
        ``experiment``); metrics: names (default all); every context of each is included.
        An experiment the store does not hold, or a metric name no selected run holds,
        raises NotFoundError naming the closest names, unless ``missing_ok``."""
        self._check_open()
        runs = None if runs is None else list(dict.fromkeys(_list_arg(runs, "runs")))   # once each, in order
        run_keys = None if runs is None else [self._run_id_arg(r, "runs") for r in runs]
        names = (None if metrics is None
                 else {_args.lookup_name_arg(m, "metrics") for m in _list_arg(metrics, "metrics")})
        experiment = None if experiment is None else _args.lookup_name_arg(experiment, "experiment")
        start, stop, buckets, method, x = _range_args(start, stop, buckets, method, x)
        with self._index.read() as txn:
            records = [txn.get_run(k) for k in run_keys] if run_keys is not None else list(txn.runs())
            if any(r is None for r in records):
                raise NotFoundError("runs: " + ", ".join(r for r, rec in zip(runs, records) if rec is None))
            if experiment is not None and not missing_ok and txn.get_experiment(experiment) is None:
                raise _missing_name("experiment", "experiment", experiment, [e["name"] for e in txn.experiments()])
            records = [r for r in records if experiment is None or r["experiment"] == experiment]
            held = [(SeriesKey(bytes.fromhex(r["id"]), name, context), entry.kind) for r in records
                    for entry, name, context in txn.run_series(bytes.fromhex(r["id"]))]
        by_run = {bytes.fromhex(r["id"]): r for r in records}
        stored = {key for key, _ in held}
        held += [(k, kind) for kind in (KIND_SCALAR, KIND_SUMMARY) for k in self._writer.series_keys(kind)
                 if k not in stored and k.run_id in by_run]
        keys = [key for key, kind in held if kind == KIND_SCALAR and (names is None or key.name in names)]
        missing = sorted(names - {key.name for key in keys}) if names is not None and not missing_ok else []
        if missing:
            if missing[0] in {key.name for key, kind in held if kind == KIND_SUMMARY}:
                raise InvalidArgumentError("metrics", f"{missing[0]!r} holds tensor summaries; use Store.read_tensor")
            raise _missing_name("metrics", "metric", missing[0], [key.name for key, _ in held])
        tables = []
        with self._snapshot(keys) as (_, readers):
            for key in keys:
                tables.append(_read_one(readers[key], by_run[key.run_id], start, stop, buckets, method, x))
        if tables:   # the labels in one go: a table of three columns for each series costs more than its rows
            rows = np.array([t.num_rows for t in tables])
            labels = [pa.array(np.repeat(np.array(column, object), rows), pa.string()) for column in
                      zip(*[(k.run_id.hex(), k.name, k.context or None) for k in keys])]
            data = pa.concat_tables(tables)
            return pa.Table.from_arrays(labels + data.columns,
                                        names=["run_id", "metric", "context"] + data.column_names)
        empty = _read_one(None, None, start, stop, buckets, method, x)
        return pa.Table.from_arrays([pa.array([], pa.string())] * 3 + empty.columns,
                                    names=["run_id", "metric", "context"] + empty.column_names)

    def last_points(self, runs: Iterable[str]) -> pa.Table:
        """The last point (highest step; ties, the latest written) of every scalar series of
        ``runs``, stored or logged here and not yet flushed: run_id, metric, context (JSON
        text or null), step, time_ns, value. One block decoded a series."""
        self._check_open()
        run_keys = [self._run_id_arg(r, "runs") for r in dict.fromkeys(_list_arg(runs, "runs"))]
        with self._index.read() as txn:
            keys = {SeriesKey(run_key, name, context): None for run_key in run_keys
                    for entry, name, context in txn.run_series(run_key) if entry.kind == KIND_SCALAR}
        for run_key in run_keys:
            keys.update(dict.fromkeys(self._writer.series_keys(KIND_SCALAR, run_key)))
        rows = []
        with self._snapshot(list(keys)) as (_, readers):
            for key, reader in readers.items():
                bounds = reader.step_bounds()
                if bounds is not None:
                    last = reader.points(bounds[1] - 1, bounds[1])
                    rows.append((key.run_id.hex(), key.name, key.context or None, int(last.steps[-1]),
                                 int(last.times[-1]), float(last.values[-1])))
        names = ("run_id", "metric", "context", "step", "time_ns", "value")
        types = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64(), pa.float64())
        columns = list(zip(*rows)) or [()] * len(names)
        return pa.table({n: pa.array(c, t) for n, c, t in zip(names, columns, types)})

    def read_tensor(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
                    stop: int | None = None, buckets: int | None = None, missing_ok: bool = False) -> pa.Table:
        """Tensor summaries of one series, start <= step < stop: step, time, count,
        nan_count, inf_count, min, max, mean, std, l2, zero_fraction, q01..q99 and the
        histogram as list columns hist_edges and hist_counts. ``buckets=N`` merges
        successive summaries into at most N rows (see steplog.query.tensors)."""
        self._check_open()
        key = SeriesKey(self._run_id_arg(run_id, "run_id"), _args.lookup_name_arg(name, "name"),
                        _args.context_arg(context, limits=False))
        start, stop, buckets, _, _ = _range_args(start, stop, buckets, "minmax", "step")
        with self._snapshot([key]) as (txn, readers):
            if txn.get_run(key.run_id) is None:
                raise NotFoundError(f"run_id: no run {run_id}")
            reader = readers[key]
            kind = self._kind_of(key, reader)
            if kind is None and not missing_ok:
                raise _missing_series(txn, key, self._writer)
            if kind == KIND_SCALAR:
                raise InvalidArgumentError("name", f"{name!r} holds scalar points; use Store.read")
            return reader.summaries(start, stop, buckets)

    def _kind_of(self, key: SeriesKey, reader: SeriesReader) -> int | None:
        """The kind of a series: stored, or logged here and not yet flushed (None: neither)."""
        if not reader.exists:
            return None
        return reader.entry.kind if reader.entry is not None else self._writer.kind_of(key)

    @contextlib.contextmanager
    def _snapshot(self, keys: list[SeriesKey]):
        """One index read transaction and the unflushed points of ``keys``, taken together."""
        with self._writer.publish_lock:
            txn = self._index.read()
            unflushed = self._writer.unflushed_many(keys)

        def entry_of(key: SeriesKey):
            """rollup_shift None while the series keeps no rollups: its buckets decode points."""
            entry = txn.get_series(key.run_id, key.name, key.context)
            if entry is not None and not txn.series_info(entry.series_id).keeps_rollups:
                entry = entry._replace(rollup_shift=None)
            return entry

        with txn:
            readers = {key: SeriesReader(txn, self._segments, self._layout.segment_path, entry_of(key),
                                         unflushed.get(key, []))
                       for key in keys}
            yield txn, readers

    # -- artifacts and blobs -------------------------------------------------------------

    def artifacts(self, run_id: str | None = None) -> pa.Table:
        """Every artifact logged (run_id=None) or those of one run, a row per log: run_id,
        seq (the order of logging in its run, from 1), name, role, kind ("file", "dir",
        "uri"), location, size, mtime, sha256 (null for a URI without hash), etag,
        stored (its bytes are in the store), logged. The whole store's table is in the
        order of logging (commit order), read a page of 1024 artifacts at a time and
        kept until an artifact is logged (one read to check); a run's, in seq order."""
        from .engine.artifacts import table, whole_table

        self._check_open()
        key = None if run_id is None else self._run_id_arg(run_id, "run_id")
        with self._index.read() as txn:
            if key is not None:
                return table(txn.artifact_values(key))
            stamp = txn.counter(b"next_artifact")
            cached_stamp, cached = self._shared.artifacts_cache
            if cached is not None and cached_stamp == stamp:
                return cached
            found = whole_table(txn.artifact_pages())
        self._shared.artifacts_cache = (stamp, found)
        return found

    def open_artifact(self, sha256: str):
        """A stored file's bytes as a binary file object (read(), iteration over lines,
        ``with``), decompressed as read; reading to the end checks the SHA-256
        (CorruptionError on a mismatch). A directory's SHA-256 opens its manifest (JSON:
        {"files": [{"path", "sha256", "size"}], "version"}), kept for every logged
        directory, copied or not. NotFoundError when the store does not hold it (a file
        logged without copy=True, or never logged)."""
        import io

        from .engine.blobs import sha256_arg

        self._check_open()
        return io.BufferedReader(self._shared.blobs.open(sha256_arg(sha256)))

    def restore_artifact(self, sha256: str, dest) -> str:
        """Write a stored artifact to ``dest`` (a path that must not exist): a file, or a
        directory rebuilt from its manifest; every byte is checked against its SHA-256
        before ``dest`` appears (the files are written under a temporary name beside it,
        then renamed). Returns ``dest``."""
        self._check_open()
        import pyarrow.compute as pc

        from .engine.artifacts import restore
        from .engine.blobs import sha256_arg

        sha256 = sha256_arg(sha256)
        logged = self.artifacts()
        kinds = logged.filter(pc.equal(logged.column("sha256"), sha256)).column("kind").to_pylist()
        return restore(self._shared.blobs, sha256, _dest_arg(dest), "dir" if "dir" in kinds else "file")

    def put_blob(self, data: bytes) -> str:
        """Keep ``data`` (small documents: package lists, diffs) once per content;
        returns its SHA-256 hex, by which ``get_blob`` reads it back."""
        self._check_writable()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _args.InvalidTypeError("data", f"must be bytes, got {type(data).__name__}")
        return self._shared.blobs.put_bytes(bytes(data))

    def get_blob(self, sha256: str) -> bytes:
        """The bytes ``put_blob`` (or a copied artifact) stored under ``sha256``, checked;
        NotFoundError when the store does not hold them."""
        from .engine.blobs import sha256_arg

        self._check_open()
        return self._shared.blobs.get(sha256_arg(sha256))

    # -- other tools -------------------------------------------------------------------

    def sql(self, query: str) -> pa.Table:
        """Run a DuckDB query over the views runs, series and points (needs
        ``steplog[sql]``); a filter on points by run_id and metric reads only those
        series (query/sql.py)."""
        from .query.sql import run_sql

        self._check_open()
        return run_sql(self, query)

    def export(self, dest: str | os.PathLike, format: str = "parquet", runs: Iterable[str] | None = None,
               where: str | None = None, progress=None) -> dict:
        """Write the runs (all, ``runs=`` ids, or those ``where=`` selects) to a
        Hive-partitioned Parquet dataset at ``dest`` (query/export.py); -> a summary."""
        from .query.export import export_store

        self._check_open()
        return export_store(self, dest, format, runs, where, progress)

    def lineage(self, artifact=None, run: str | None = None, depth: int | None = None):
        """The graph of runs and artifacts up- and downstream of an artifact (a path, a
        sha256 or a URI) or a run: runs, artifacts and edges tables (query/lineage.py)."""
        from .query.lineage import lineage

        self._check_open()
        return lineage(self, artifact, run, depth)

    def provenance(self, path_or_hash):
        """Where a file came from: the run that produced it, its data, code, params,
        environment, parent jobs and metrics; prints as a report (query/provenance.py)."""
        from .query.provenance import provenance

        self._check_open()
        return provenance(self, path_or_hash)

    def diff(self, a: str, b: str):
        """What differs between two runs: params, tags, code, packages, inputs, final
        metrics (query/rundiff.py)."""
        from .query.rundiff import diff_runs

        self._check_open()
        return diff_runs(self, a, b)

    # -- lifetime ----------------------------------------------------------------------

    def flush(self) -> None:
        """Return when every point logged so far is durable and visible to other processes."""
        self._check_open()
        self._writer.flush()

    def close(self) -> None:
        """End the runs this handle started or resumed and has not ended ("finished"),
        flush, and release the store. Other handles of the same path stay open. In a
        child process after fork() this only forgets it: the parent still owns it."""
        self._close("finished")

    def _close(self, status: str) -> None:
        """close(), ending unended runs with ``status``."""
        if self._closed:
            return
        unended = list(self._runs.values())
        try:
            if self._pid == os.getpid():
                self._end_runs(status)
        finally:
            self._closed = True
            _open_stores.discard(self)
            for run in unended:
                run._refuse("the store is closed; open it again and use Store.run() to log more")
            if self._pid == os.getpid():
                self._shared.release()

    def _end_runs(self, status: str) -> None:
        """End every run this handle started or resumed and has not ended."""
        errors = []
        for run in list(self._runs.values()):
            try:
                run.end(status)
            except StepLogError as exc:   # one run failing must not keep the others running
                errors.append(exc)
        if errors:
            raise errors[0]

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the store is closed")
        if self._pid != os.getpid():
            raise ClosedError("this store was opened before fork(); call steplog.open() again in the child process")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"{self.path} is open read-only (mode='r'); open it with mode='a' to write")

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


def new_experiment_records(txn, name: str, now: int) -> list:
    """The experiment record of ``name`` when the store lacks it (stored), as a list of
    segment records to append."""
    if txn.get_experiment(name) is not None:
        return []
    return [experiment_record(txn, {"name": name, "created": now, "id": new_experiment_id(txn)})]


def new_experiment_id(txn) -> str:
    """The next number of meta/next_experiment that no experiment holds as its id (a
    frontend or an importer may have given one its own)."""
    used = {e.get("id") for e in txn.experiments()}
    found = str(txn.next_ids(b"next_experiment"))
    while found in used:
        found = str(txn.next_ids(b"next_experiment"))
    return found


class SeriesCounts(NamedTuple):
    count: int
    step_min: int
    step_max: int


class _ReadOnlyWriter:
    """The writer of a read-only store: nothing unflushed, nothing to flush."""

    def __init__(self):
        self.publish_lock = threading.Lock()
        self.live_runs: set[bytes] = set()

    def unflushed_many(self, keys) -> dict:
        return {}

    def kind_of(self, key: SeriesKey) -> None:
        return None

    def series_keys(self, kind: int, run_id: bytes | None = None) -> list:
        return []

    def flush(self, run_id: bytes | None = None) -> None:
        pass


_NO_WRITER = _ReadOnlyWriter()


def _missing_name(argument: str, what: str, name: str, held) -> NotFoundError:
    """The error for a name that nothing selected holds, naming the closest ones."""
    return NotFoundError(f"{argument}: no {what} {name!r}{_did_you_mean(name, held)} "
                         "(missing_ok=True reads it as empty)")


def _did_you_mean(name: str, held) -> str:
    close = difflib.get_close_matches(name, sorted(set(held)), n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def _missing_series(txn, key: SeriesKey, writer) -> NotFoundError:
    """The error for a series the run does not hold, naming what it does hold closest."""
    held = {(name, context) for _, name, context in txn.run_series(key.run_id)}
    held.update((k.name, k.context) for kind in (KIND_SCALAR, KIND_SUMMARY)
                for k in writer.series_keys(kind, key.run_id))
    where = f"run {key.run_id.hex()}"
    contexts = sorted(context for name, context in held if name == key.name)
    if contexts:
        shown = ", ".join(c or "none" for c in contexts[:10])
        return NotFoundError(f"name: {where} has no series {key.name!r} with context {key.context or 'none'}; "
                             f"its contexts: {shown}")
    hint = _did_you_mean(key.name, [name for name, _ in held]) if held else "; it holds no series yet"
    return NotFoundError(f"name: {where} has no series {key.name!r}{hint} (missing_ok=True reads it as empty)")


def _dest_arg(dest) -> str:
    if not isinstance(dest, (str, os.PathLike)):
        raise _args.InvalidTypeError("dest", f"must be a path, got {type(dest).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(dest)))
    if os.path.lexists(path):
        raise InvalidArgumentError("dest", f"{path} exists; restore writes a new file or directory")
    parent = os.path.dirname(path)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise InvalidArgumentError("dest", f"{parent} is not a directory")
    os.makedirs(parent, exist_ok=True)   # as `cp` into a new folder would need by hand
    return path


def _range_args(start, stop, buckets, method, x) -> tuple:
    start = None if start is None else _args.step_arg(start, "start")
    stop = None if stop is None else _args.step_arg(stop, "stop")
    if buckets is not None:
        if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)):
            raise _args.InvalidTypeError("buckets", f"must be an int, got {type(buckets).__name__}")
        if buckets < 1:
            raise InvalidArgumentError("buckets", f"must be at least 1, got {buckets}")
        buckets = int(buckets)
    if method not in READ_METHODS:
        raise InvalidArgumentError("method", f"must be one of {READ_METHODS}, got {method!r}")
    if x not in X_AXES:
        raise InvalidArgumentError("x", f"must be one of {X_AXES}, got {x!r}")
    if method != "minmax" and buckets is None:
        raise InvalidArgumentError("buckets", f"method={method!r} needs the number of buckets")
    if method == "m4" and x != "step":
        raise InvalidArgumentError("x", "method='m4' buckets steps: x must be 'step'")
    return start, stop, buckets, method, x


def _list_arg(values, argument: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _args.InvalidTypeError(argument, f"must be a list, got {type(values).__name__}")
    return list(values)


def _read_one(reader: "SeriesReader | None", run: dict | None, start, stop, buckets, method, x) -> pa.Table:
    """The table ``Store.read`` returns for one series (reader None: its empty schema)."""
    run_start = run["start_time"] if run else 0
    if buckets is None or method == "m4":
        if reader is None:
            return _read.Points.empty().to_arrow()
        if buckets is None:
            return reader.points(start, stop).to_arrow()
        from .query.m4 import m4_points

        return m4_points(reader, start, stop, buckets).to_arrow()
    if method == "lttb":
        if reader is None:
            return _read.empty_points_table(x)
        return reader.lttb(start, stop, buckets, x, run_start).to_arrow()
    if reader is None:
        return empty_bucket_table(x)
    return reader.buckets(start, stop, buckets, x, run_start)
