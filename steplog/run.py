"""A run being logged to: metrics, tensor summaries, params and tags.

Thread rules: a Run may be used from many threads at once; each thread appends to its
own buffers (see steplog.engine.writer), so logging takes no lock.
"""

from __future__ import annotations

import threading
import time as _time
from typing import TYPE_CHECKING

import numpy as np

from . import _args
from .engine.block import KIND_SCALAR, KIND_SUMMARY
from .engine.errors import ClosedError, InvalidArgumentError
from .engine.points import SummaryRow
from .engine.tensorstats.validate import edges_array, tensor_array
from .engine.writer import SeriesBuffer, SeriesKey

if TYPE_CHECKING:
    from .protocol import RunBackend

RUN_STATUSES = ("running", "finished", "failed", "killed")
INT64_MIN, INT64_MAX = _args.INT64_MIN, _args.INT64_MAX
_time_ns = _time.time_ns
_FLOAT_ONLY = frozenset([float])


class Run:
    """A run being logged to. Obtain one from ``Store.start_run`` or ``Store.run``.

    ``log`` and ``log_batch`` buffer points in memory and return at once; ``flush``
    makes them durable. Thread-safe.
    """

    def __init__(self, store: "RunBackend", run_id: bytes):
        self._store = store
        self._key = run_id
        self.id = run_id.hex()
        self._writer = store.points_writer()
        self._local = threading.local()   # this thread's buffers, see _caches()
        self._stop: str | None = None     # why logging is refused, once the run ended or the store closed
        self._store_closed = False

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._stop is None:
            self.end(exit_status(exc_type, exc))

    def __repr__(self) -> str:
        return f"<steplog.Run {self.id}>"

    def _refuse(self, reason: str) -> None:
        """Called by the store on close: logging must raise, not buffer points that would be lost."""
        self._store_closed = True
        if self._stop is None:
            self._stop = reason

    # -- metrics -----------------------------------------------------------------------

    def log(self, name, value=None, step: int | None = None, context: dict | None = None,
            time: int | None = None) -> None:
        """Log one point, or several metrics at one step when ``name`` is a dict.
        step=None logs at the next step of each series: one past the latest step any
        thread of this process logged to it (from 0). Ranks in other processes pass
        ``step``, or a context such as {"rank": rank}. time: when the point was
        measured (int ns since the epoch, or an aware datetime), if not now."""
        if self._stop is not None:
            raise ClosedError(self._stop)
        if time is not None and (type(time) is not int or time > INT64_MAX or time < INT64_MIN):
            time = _args.time_arg(time)
        if type(name) is dict:
            return self._log_dict(name, value, step, context, time)
        try:
            if context is None:
                buf = self._local.plain.get(name)
            else:
                buf = self._local.contexts.get((name, _context_key(context)))
        except (AttributeError, TypeError):   # a new thread, or a name or context to check
            buf = None
        if buf is None:
            buf = self._open_series(name, context)
        if type(value) is not float:
            value = _args.value_arg(value)
        if step is None:
            buf.append_next(_time_ns() if time is None else time, value)
            values = buf.cols[2]
        else:
            if type(step) is not int or step > INT64_MAX or step < INT64_MIN:
                step = _args.step_arg(step)
            steps, times, values = buf.cols
            steps.append(step)
            times.append(_time_ns() if time is None else time)
            values.append(value)  # last: len(values) counts complete points
        if len(values) >= self._writer.seal_at:
            self._writer.seal_full(buf)

    def _log_dict(self, metrics: dict, value, step, context, time) -> None:
        if value is not None:
            raise InvalidArgumentError("value", "pass either a dict of metrics or one name and a value")
        if step is not None and (type(step) is not int or step > INT64_MAX or step < INT64_MIN):
            step = _args.step_arg(step)
        names = tuple(metrics)
        try:
            group = names if context is None else (names, _context_key(context))
            bufs = self._local.groups.get(group)  # the buffers of a dict's keys, found once per key set
        except (AttributeError, TypeError):
            group, bufs = None, None
        if bufs is None:
            bufs = [self._buffer(name, context) for name in names]
            if group is not None:
                self._local.groups[group] = bufs
        values = metrics.values()
        if not _FLOAT_ONLY.issuperset(map(type, values)):  # check all before appending any
            values = [_args.value_arg(v, f"value of {n!r}") for n, v in zip(names, values)]
        if step is None:
            for buf in bufs:
                buf.next_step()   # may refuse: before appending any
        now = _time_ns() if time is None else time
        seal_at = self._writer.seal_at
        full = []
        for buf, value in zip(bufs, values):
            buf.append(step, now, value)
            if len(buf.cols[2]) >= seal_at:
                full.append(buf)
        for buf in full:
            self._writer.seal_full(buf)

    def log_batch(self, name: str, steps, values, times=None, context: dict | None = None) -> None:
        """Log many points of one series from arrays. times (int64 ns since the epoch)
        default to now for every point."""
        if self._stop is not None:
            raise ClosedError(self._stop)
        steps = _args.column_arg(steps, "steps", np.int64)
        values = _args.column_arg(values, "values", np.float64)
        if len(values) != len(steps):
            raise InvalidArgumentError("values", f"has {len(values)} points but steps has {len(steps)}")
        if times is None:
            times = np.full(len(steps), _time_ns(), np.int64)
        else:
            times = _args.times_arg(times)
            if len(times) != len(steps):
                raise InvalidArgumentError("times", f"has {len(times)} points but steps has {len(steps)}")
        if not len(steps):   # nothing to log: the series is not created
            _args.name_arg(name, "name"), _args.context_arg(context)
            return
        buf = self._buffer(name, context)
        chunk = self._writer.block_points
        for lo in range(0, len(steps), chunk):
            self._writer.seal_for_batch(buf, steps[lo:lo + chunk], times[lo:lo + chunk], values[lo:lo + chunk])

    def _caches(self):
        """This thread's buffer caches: plain (name), contexts ((name, context key)),
        groups (a dict's key set, with its context key), tensors ((name, context key))."""
        local = self._local
        if not hasattr(local, "plain"):
            local.plain, local.contexts, local.groups, local.tensors = {}, {}, {}, {}
        return local

    def _cache_slot(self, name, context, kind: int) -> tuple[dict, object]:
        """The cache and key under which this thread keeps a series' buffer (Run.log
        repeats the scalar case inline: it is the hot path)."""
        caches = self._caches()
        if kind == KIND_SUMMARY:
            return caches.tensors, (name, None if context is None else _context_key(context))
        if context is None:
            return caches.plain, name
        return caches.contexts, (name, _context_key(context))

    def _buffer(self, name, context, kind: int = KIND_SCALAR) -> SeriesBuffer:
        """This thread's buffer of a series, from the caches or opened."""
        try:
            cache, key = self._cache_slot(name, context, kind)
            buf = cache.get(key)
        except (AttributeError, TypeError):   # a name or context to check
            buf = None
        return buf if buf is not None else self._open_series(name, context, kind)

    def _open_series(self, name, context, kind: int = KIND_SCALAR) -> SeriesBuffer:
        key = SeriesKey(self._key, _args.name_arg(name, "name"), _args.context_arg(context))
        buf = self._store.series_buffer(key, kind)
        if context is None or _args.context_hashes_by_value(context):   # a tensor would key a new entry each call
            cache, cache_key = self._cache_slot(name, context, kind)
            cache[cache_key] = buf
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

        if self._stop is not None:
            raise ClosedError(self._stop)
        if not isinstance(tensors, dict):
            raise _args.InvalidTypeError("tensors", f"must be a dict of name to tensor, got {type(tensors).__name__}")
        if step is not None:
            step = _args.step_arg(step)
        bufs = [self._buffer(name, context, KIND_SUMMARY) for name in tensors]
        arrays = [tensor_array(t, f"tensor {name!r}") for name, t in tensors.items()]
        shared = None if edges is None else edges_array(edges)
        many = summarize_many(arrays, bins, shared)
        now = _time_ns()
        seal_at = self._writer.summary_seal_at
        for i, buf in enumerate(bufs):
            buf.append(step, now, SummaryRow(many.stats[i], many.counts[i], shared))
            if len(buf.cols[2]) >= seal_at:
                self._writer.seal_full(buf)

    # -- metadata ----------------------------------------------------------------------

    def log_params(self, params: dict) -> None:
        """Add or replace parameters; nested dicts merge into the stored ones."""
        params = _args.mapping_arg(params, "params")
        self._store.update_run(self._key, lambda record: record.update(
            params=_args.merge_params(record["params"], params, "params")))

    def set_tags(self, tags: dict) -> None:
        """Add or replace tags; nested dicts merge into the stored ones."""
        tags = _args.mapping_arg(tags, "tags")
        self._store.update_run(self._key, lambda record: record.update(
            tags=_args.merge_params(record["tags"], tags, "tags")))

    # -- artifacts ---------------------------------------------------------------------

    def log_artifact(self, path_or_uri, role: str = "other", name: str | None = None, copy: bool = False,
                     hash: str | None = None) -> dict:
        """Record a file, a directory or a URI that this run read or wrote; returns the
        record. role: "input", "output", "model", "code", "checkpoint" or "other";
        name: defaults to the base name.

        A file is hashed (SHA-256, streamed); a directory gets a manifest (every file's
        relative path, size and SHA-256, symlinks followed, a loop refused) whose
        SHA-256 is the directory's; a URI (s3://, https://, ...) is kept as given less
        its credentials (user:password@, token/signature/key/secret/password/credential
        query parameters) and nothing is downloaded: ``hash`` is its SHA-256 when it is
        64 hex digits, else an ETag kept as given. For a path, ``hash`` must match.
        copy=True keeps the bytes in the store (zstd, once per content across runs):
        ``Store.open_artifact`` and ``Store.restore_artifact`` read them back."""
        if self._stop is not None:
            raise ClosedError(self._stop)
        return self._store.log_artifact(self._key, path_or_uri, role, name, copy, hash)

    def log_input(self, path_or_uri, **kw) -> dict:
        """``log_artifact(path_or_uri, role="input", ...)``: data or code this run read."""
        return self.log_artifact(path_or_uri, role="input", **kw)

    def log_model(self, path_or_uri, **kw) -> dict:
        """``log_artifact(path_or_uri, role="model", ...)``: a model this run made."""
        return self.log_artifact(path_or_uri, role="model", **kw)

    def flush(self) -> None:
        """Return when every point logged so far (by this store object) is durable."""
        self._store.flush()

    def end(self, status: str = "finished") -> None:
        """Flush, then record the final status ("finished", "failed" or "killed")."""
        if status not in RUN_STATUSES[1:]:
            raise InvalidArgumentError("status", f"must be one of {RUN_STATUSES[1:]}, got {status!r}")
        if self._store_closed:
            raise ClosedError(self._stop)
        if self._stop is not None:
            return
        self._store.end_run(self._key, status)
        self._stop = f"run {self.id} has ended; reopen it with Store.run() to log more"


def exit_status(exc_type, exc: BaseException | None = None) -> str:
    """The status of a run that ``exc_type`` (None: no exception) ended: "killed" for
    Ctrl-C, "failed" for any other exception; sys.exit(0) ends it normally."""
    if exc_type is None or (issubclass(exc_type, SystemExit) and getattr(exc, "code", 1) in (0, None)):
        return "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return "killed"
    return "failed"


def _context_key(context) -> tuple:
    """A hashable key of a context dict that tells apart values Python calls equal but
    JSON does not (1, 1.0 and True)."""
    return tuple((key, type(value), value) for key, value in sorted(context.items()))
