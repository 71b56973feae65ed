"""The Store protocol: the face every steplog store shows, embedded or remote.

``steplog.Store`` (the embedded store) implements ``StoreProtocol``; a binding (MLflow,
TensorBoard) is written against it, and a remote store implements it too. A ``Run``
talks to its store only through ``RunBackend``.

Rules that hold for every implementation:

* Threads: every method may be called from any thread, at the same time. A Run may be
  logged to from many threads; each thread appends to its own buffers, and step=None
  takes the next step of one counter per series shared by the threads of a process.
  Across processes (ranks of one run) there is no shared counter: pass ``step``, or a
  context such as ``{"rank": rank}`` that makes each rank's points a series of its own.
* Fork: a store belongs to the process that opened it. In a child of fork() every
  method raises ClosedError, except close(), which only forgets the handle; the child
  calls ``steplog.open()`` again.
* Lifetime: ``open()`` of a path this process has open already gives a new handle on
  the same store (shared environment, reference-counted). ``close()`` ends the runs the
  handle started or resumed and did not end ("finished"; leaving ``with`` by an
  exception: "failed", by Ctrl-C: "killed"), flushes, and releases the handle; other
  handles stay open. At interpreter exit every open handle is closed the same way.
  After close() every method raises ClosedError; close() again does nothing.
* Read-only handles (``mode="r"``) take no lock and write nothing; start_run, run and
  logging raise ReadOnlyError.
* Reads see every point logged through this process's handles, flushed or not, and the
  points other processes flushed. Results are pyarrow Tables.
* Errors are steplog.StepLogError subclasses: InvalidTypeError / InvalidArgumentError
  name the bad argument, NotFoundError names what is missing and the closest names.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

import pyarrow as pa


class StoreProtocol(Protocol):
    path: str
    read_only: bool

    def start_run(self, experiment: str = "default", name: str | None = None, params: dict | None = None,
                  tags: dict | None = None, parent=None, kind: str | None = None,
                  resources: dict | None = None): ...
    def run(self, run_id: str): ...
    def runs(self) -> pa.Table: ...
    def metrics(self, run_id: str) -> pa.Table: ...
    def read(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
             stop: int | None = None, buckets: int | None = None, method: str = "minmax", x: str = "step",
             missing_ok: bool = False) -> pa.Table: ...
    def read_many(self, runs: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                  experiment: str | None = None, start: int | None = None, stop: int | None = None,
                  buckets: int | None = None, method: str = "minmax", x: str = "step",
                  missing_ok: bool = False) -> pa.Table: ...
    def read_tensor(self, run_id: str, name: str, context: dict | None = None, start: int | None = None,
                    stop: int | None = None, buckets: int | None = None, missing_ok: bool = False) -> pa.Table: ...
    def artifacts(self, run_id: str | None = None) -> pa.Table: ...
    def open_artifact(self, sha256: str): ...
    def restore_artifact(self, sha256: str, dest) -> str: ...
    def put_blob(self, data: bytes) -> str: ...
    def get_blob(self, sha256: str) -> bytes: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self): ...
    def __exit__(self, exc_type, exc, tb) -> None: ...


class RunBackend(Protocol):
    """What a Run needs of its store: where to append points, and run records."""

    def points_writer(self):
        """The object whose buffers a Run appends points to (steplog.engine.writer.Writer
        or one with its logging side: buffer(), seal_full(), seal_for_batch(), seal_at,
        summary_seal_at, block_points)."""

    def series_buffer(self, key, kind: int):
        """The calling thread's buffer of series ``key`` (engine.writer.SeriesKey) of
        ``kind``; refuses a name that holds the other kind."""

    def update_run(self, run_id: bytes, change: Callable[[dict], None]) -> None:
        """Apply ``change`` to the run's record (params, tags) atomically."""

    def end_run(self, run_id: bytes, status: str) -> None:
        """Flush the run's points, then record its final status and end time."""

    def log_artifact(self, run_id: bytes, path_or_uri, role: str, name, copy: bool, hash) -> dict:
        """Hash (and with ``copy``, store) a file, directory or URI, then record it for
        the run; returns the record (Run.log_artifact has the rules)."""
