"""Import TensorBoard event files into a steplog store (``steplog import-tensorboard``).

Mapping, checked point for point against TensorBoard's own
``EventFileLoader`` (tests/test_tensorboard_events.py):

- every directory under LOGDIR that holds event files (``*tfevents*``) is a run, named
  as TensorBoard names it: its path relative to LOGDIR ("." for LOGDIR itself), in the
  experiment ``experiment`` (default: LOGDIR's base name). A run directory inside
  another (``add_scalars`` and ``add_hparams`` sub-runs) gets that run as its parent.
  Its event files are read in name order, as TensorBoard reads them; the run starts at
  its first event's wall time and ends at its last one's;
- each tag is a metric: ``simple_value`` (float32 on disk, stored as that float32's
  exact float64) and new-style scalar tensors (plugin "scalars"; float32, float64 and
  the other numeric dtypes, stored exactly as float64) become points at the event's
  step and wall time (``events.wall_time_ns``: whole seconds exact, the fraction
  rounded to the nearest nanosecond). Every point is kept: repeated and out-of-order
  steps too, and points that a later ``purge_step`` hides in TensorBoard's UI;
- histograms (``HistogramProto``, and ``[k, 3]`` tensors of plugin "histograms") become
  tensor-summary rows whose buckets are TensorBoard's data_compat ``[k, 3]``
  (``_records.histogram_row``); their count, min, max, mean, std and l2 come from the
  proto's min/max/num/sum/sum_squares where it has them;
- hparams (``_hparams_/session_start_info``) become the run's params; texts (plugin
  "text") one JSON Lines artifact per tag (``_records.log_texts``);
- ``SessionLog`` events (a writer opened with ``purge_step`` writes START at that step)
  are kept as the series ``_tensorboard/session_log`` (1 START, 2 STOP, 3 CHECKPOINT)
  at their step, so that a reader can apply the purge TensorBoard applies: TensorBoard's
  own readers disagree on it (the legacy EventAccumulator purges, the plugin
  accumulator ignores the first START), so the import keeps the raw stream;
- images, audio, graphs, run metadata, other plugins' tensors and file-version records
  are not imported; the summary counts them by kind.

Damage: a last record cut short ends its file cleanly (reported); a record that fails
a CRC check raises ``CorruptionError`` naming the file and offset before anything of
that run is written, or with ``skip_damaged`` is skipped and reported.

Re-import: a run's id is derived from its directory's absolute path. It is written as
running first, then its points, then its final record carrying ``imported_from`` (the
directory); a later import skips every run whose record carries it, and refuses to go
on where a run lacks it (an import cut short: import into a new store).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from typing import Callable

import numpy as np

import steplog
from steplog.engine.errors import InvalidArgumentError, NotFoundError, StepLogError

from . import _records as rec
from . import events as events_module
from .events import read_event_file, run_directories, wall_time_ns

Progress = Callable[[int, "int | None"], None]   # progress(bytes read, bytes in every event file)
HPARAMS_SESSION_START = "_hparams_/session_start_info"
NUMERIC_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val", 6: "int_val",
                  9: "int64_val", 10: "bool_val", 17: "int_val", 19: "half_val", 22: "uint32_val", 23: "uint64_val"}


class IncompleteRunError(StepLogError):
    """The target holds a run that an interrupted import left with part of its points."""


@dataclasses.dataclass
class Summary:
    logdir: str
    target: str
    experiment: str
    runs: int = 0
    runs_skipped: int = 0
    files: int = 0
    events: int = 0
    points: int = 0
    series: int = 0
    histograms: int = 0
    texts: int = 0
    params: int = 0
    not_imported: dict = dataclasses.field(default_factory=dict)   # kind -> values left out
    damaged: list = dataclasses.field(default_factory=list)        # (file, offset, reason) skipped
    truncated: list = dataclasses.field(default_factory=list)      # (file, offset) of a last record cut short
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_id_of(run_dir: str) -> str:
    return hashlib.sha256(b"tensorboard\0" + os.path.abspath(run_dir).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def import_tensorboard(logdir, target, experiment: str | None = None, skip_damaged: bool = False,
                       progress: Progress | None = None) -> Summary:
    """Import every run under ``logdir`` into the steplog store at ``target`` (created
    if missing); module docstring. Bad arguments raise InvalidArgumentError (argument
    "logdir" or "target") before anything is written."""
    started = time.perf_counter()
    logdir = _logdir_arg(logdir)
    path = _target_arg(target)
    experiment = experiment or os.path.basename(logdir.rstrip(os.sep)) or "tensorboard"
    runs = run_directories(logdir)
    if not runs:
        raise InvalidArgumentError("logdir", f"no event files (*tfevents*) under {logdir}")
    summary = Summary(logdir=logdir, target=path, experiment=experiment)
    total = sum(os.path.getsize(f) for files in runs.values() for f in files)
    done = 0
    with contextlib.closing(steplog.open(path)) as store:
        _refuse_incomplete(store, logdir, runs)
        ids = {name: run_id_of(os.path.join(logdir, name)) for name in runs}
        if progress is not None:
            progress(0, total)
        for name, files in runs.items():
            found = store.run_record(ids[name])
            if found is not None and found.get("imported_from"):
                summary.runs_skipped += 1
            else:
                parent = _parent_of(name, ids)
                _import_run(store, os.path.join(logdir, name), name, ids[name], parent, files, experiment,
                            skip_damaged, summary)
                summary.runs += 1
            done += sum(os.path.getsize(f) for f in files)
            if progress is not None:
                progress(done, total)
    summary.seconds = time.perf_counter() - started
    return summary


def _logdir_arg(logdir) -> str:
    if not isinstance(logdir, (str, os.PathLike)) or not os.fspath(logdir):
        raise InvalidArgumentError("logdir", f"must be a directory path, got {logdir!r}")
    path = os.path.abspath(os.path.expanduser(os.fspath(logdir)))
    if not os.path.isdir(path):
        raise InvalidArgumentError("logdir", f"no directory {path}")
    return path


def _target_arg(target) -> str:
    if not isinstance(target, (str, os.PathLike)) or not os.fspath(target).strip():
        raise InvalidArgumentError("target", f"must be a directory path, got {target!r}")
    path = os.path.abspath(os.path.expanduser(os.fspath(target)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidArgumentError("target", f"{path} is a file; a steplog store is a directory")
    if os.path.isdir(path) and os.listdir(path):
        try:
            steplog.open(path, mode="r").close()
        except (InvalidArgumentError, NotFoundError):
            raise InvalidArgumentError("target", f"{path} holds other files and is not a steplog store; pass a "
                                                 "steplog store or a new directory") from None
    return path


def _refuse_incomplete(store, logdir: str, runs: dict) -> None:
    left = [name for name in runs if (found := store.run_record(run_id_of(os.path.join(logdir, name)))) is not None
            and not found.get("imported_from")]
    if left:
        raise IncompleteRunError(f"{store.path} holds {len(left)} run(s) of this logdir that an earlier import did "
                                 f"not finish (their points may be partly copied): {', '.join(left[:10])}. steplog "
                                 "cannot remove a single run; import into a new store instead. Nothing was written.")


def _parent_of(name: str, ids: dict) -> str | None:
    parts = name.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        above = "/".join(parts[:cut])
        if above in ids:
            return ids[above]
    return ids.get(".") if name != "." else None


# -- one run --------------------------------------------------------------------------

class RunData:
    """What the events of one run hold, gathered before it is written."""

    def __init__(self):
        self.scalars: dict[str, list] = {}   # tag -> chunks (event indices, steps, walls, values) of one file
        self.histograms: dict[str, list] = {}
        self.texts: dict[str, list] = {}
        self.params: dict = {}
        self.plugins: dict[str, str] = {}     # tag -> plugin of the first metadata seen (dataclass_compat's rule)
        self.first_wall = None
        self.last_wall = None
        self.events = 0
        self.not_imported: dict[str, int] = {}
        self.logged: set[str] = set()   # scalar tags logged

    def skip(self, kind: str, n: int = 1) -> None:
        self.not_imported[kind] = self.not_imported.get(kind, 0) + n

    def scalar_chunk(self, tag: str, order, steps, walls, values) -> None:
        """Points of one tag: arrays of the events' indices in the file, steps, walls, values."""
        self.scalars.setdefault(tag, []).append((order, steps, walls, values))

    def scalar_point(self, tag: str, order: int, step: int, wall: float, value: float) -> None:
        self.scalar_chunk(tag, np.array([order]), np.array([step], np.int64), np.array([wall]), np.array([value]))


def _import_run(store, run_dir, name, run_id, parent, files, experiment, skip_damaged, summary: Summary) -> None:
    data = RunData()
    framed = []
    for path in files:   # every file is framed and checked before anything of the run is written
        framed.append(read_event_file(path, skip_damaged=skip_damaged))
    record = {"id": run_id, "experiment": experiment, "name": name, "parent": parent, "status": "running",
              "start_time": None, "end_time": None, "params": {}, "tags": {"source": "tensorboard"}}
    run = None
    for events in framed:
        summary.files += 1
        summary.damaged += [(events.path, offset, why) for offset, why in events.damaged]
        if events.truncated_at is not None:
            summary.truncated.append((events.path, events.truncated_at))
        _gather_file(events, data)
        if run is None:
            start = int(wall_time_ns([data.first_wall])[0]) if data.first_wall is not None else time.time_ns()
            record["start_time"] = start
            store.put_run_record(record)
            run = store.run(run_id, resume=False)
        _log_scalars(run, data, summary)
    _log_rest(store, run, data, summary)
    store.flush()
    end = int(wall_time_ns([data.last_wall])[0]) if data.last_wall is not None else record["start_time"]
    store.put_run_record({**record, "status": "finished", "end_time": end, "params": data.params,
                          "imported_from": os.path.abspath(run_dir)})
    summary.events += data.events
    summary.params += len(data.params)
    for kind, n in data.not_imported.items():
        summary.not_imported[kind] = summary.not_imported.get(kind, 0) + n


def _gather_file(events, data: RunData) -> None:
    """Gather one file's events: those the numba decoder reads in full (scalars) as
    arrays, the others through protobuf; each scalar tag's points in file order."""
    from ._decode import HISTO, SCALAR_TENSOR, SIMPLE

    if not len(events):
        return
    buf = np.frombuffer(events.data, np.uint8)
    kernels = _decoder()
    wall, step, slow, v_event, v_toff, v_tlen, v_hash, v_kind, v_value, v_poff, v_plen = kernels.decode(
        buf, events.offsets, events.lengths)
    data.events += len(wall)
    if data.first_wall is None:
        data.first_wall = float(wall[0])
    data.last_wall = float(wall[-1])
    hashes, first, inverse = np.unique(v_hash, return_index=True, return_inverse=True)
    if not kernels.same_tags(buf, v_toff, v_tlen, v_toff[first], v_tlen[first], inverse):   # a hash collision
        slow[:] = True
        hashes, first, inverse = hashes[:0], first[:0], inverse[:0]
    raw = events.data
    tags = [raw[v_toff[j]:v_toff[j] + v_tlen[j]].decode("utf-8", "replace") for j in first.tolist()]
    for k in np.argsort(first, kind="stable").tolist():   # a tag's plugin: its first value's (dataclass_compat)
        tag, j = tags[k], first[k]
        if tag not in data.plugins:
            kind = v_kind[j]
            data.plugins[tag] = ("scalars" if kind == SIMPLE else "histograms" if kind == HISTO else
                                 raw[v_poff[j]:v_poff[j] + v_plen[j]].decode("utf-8", "replace") if v_plen[j] > 0
                                 else "")
    scalar_tag = np.array([data.plugins[t] == "scalars" for t in tags], bool)
    fast_event = ~slow[v_event]
    is_scalar = scalar_tag[inverse] if len(tags) else np.zeros(0, bool)
    fast = fast_event & ((v_kind == SIMPLE) | ((v_kind == SCALAR_TENSOR) & is_scalar))
    for k in np.unique(inverse[fast_event & ~fast]).tolist():
        data.skip(f"{data.plugins[tags[k]] or 'unknown'} tensor", int(np.sum(inverse[fast_event & ~fast] == k)))
    picked = np.flatnonzero(fast)
    by_tag = picked[np.argsort(inverse[picked], kind="stable")]
    cuts = np.flatnonzero(np.diff(inverse[by_tag])) + 1
    for group in np.split(by_tag, cuts) if len(by_tag) else []:
        ev = v_event[group]
        data.scalar_chunk(tags[inverse[group[0]]], ev, step[ev], wall[ev], v_value[group])
    parse = events_module.event_class().FromString
    for i in np.flatnonzero(slow).tolist():
        start = int(events.offsets[i])
        _gather(parse(raw[start:start + int(events.lengths[i])]), data, i)


_kernels = None


def _decoder():
    global _kernels
    if _kernels is None:
        from ._decode import kernels

        _kernels = kernels()
    return _kernels


def _gather(event, data: RunData, order: int) -> None:
    """One event decoded by protobuf; ``order``: its index in its file."""
    what = event.WhichOneof("what")
    if what == "summary":
        step, wall = event.step, event.wall_time
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            tag = value.tag
            if tag not in data.plugins and value.HasField("metadata"):
                data.plugins[tag] = value.metadata.plugin_data.plugin_name
            if kind == "simple_value":
                data.scalar_point(tag, order, step, wall, value.simple_value)
            elif kind == "tensor" or (kind is None and data.plugins.get(tag) == "hparams"):
                _tensor(tag, step, wall, value, data, order)   # hparams records may hold no tensor
            elif kind == "histo":
                h = value.histo
                row = rec.proto_histogram(h.min, h.max, h.num, h.sum, h.sum_squares, h.bucket_limit, h.bucket)
                data.histograms.setdefault(tag, []).append((step, wall, row))
            else:
                data.skip(kind or "empty value")
    elif what == "session_log":
        data.scalar_point(rec.SESSION_LOG, order, event.step, event.wall_time, float(event.session_log.status))
    elif what != "file_version":
        data.skip(what or "empty event")


def _tensor(tag, step, wall, value, data: RunData, order: int) -> None:
    plugin = data.plugins.get(tag, "")
    tensor = value.tensor
    if plugin == "scalars":
        data.scalar_point(tag, order, step, wall, _scalar_of(tensor))
    elif plugin == "histograms":
        k3 = _array_of(tensor).reshape(-1, 3) if _array_of(tensor).size else np.zeros((0, 3))
        data.histograms.setdefault(tag, []).append((step, wall, rec.histogram_row(k3[:, 0], k3[:, 1], k3[:, 2])))
    elif plugin == "hparams":
        if tag == HPARAMS_SESSION_START:   # the experiment and session-end records hold no values
            data.params.update(hparams_from(value.metadata.plugin_data.content))
    elif plugin == "text":
        data.texts.setdefault(tag, []).append((step, wall, _text_of(tensor)))
    else:
        data.skip(f"{plugin or 'unknown'} tensor")


def _scalar_of(tensor) -> float:
    field = NUMERIC_FIELDS.get(tensor.dtype)
    if field == "float_val" and len(tensor.float_val) == 1:
        return tensor.float_val[0]
    if field == "double_val" and len(tensor.double_val) == 1:
        return tensor.double_val[0]
    array = _array_of(tensor)
    if array.size != 1:
        raise InvalidArgumentError("logdir", f"a scalar tensor holds {array.size} values")
    return float(array.reshape(-1)[0])


def _array_of(tensor) -> np.ndarray:
    from tensorboard.util import tensor_util

    return np.asarray(tensor_util.make_ndarray(tensor), np.float64)


def _text_of(tensor):
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(tensor)
    decode = np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b), otypes=[object])
    texts = decode(array) if array.size else array.astype(object)
    return texts.reshape(-1)[0] if texts.size == 1 else texts.tolist()


def hparams_from(content: bytes) -> dict:
    """The hparams of an hparams-plugin session-start record (kept in its metadata content)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    plugin_data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if plugin_data.WhichOneof("data") != "session_start_info":
        return {}
    params = {}
    for key, value in plugin_data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        if kind in ("number_value", "string_value", "bool_value"):
            params[key] = getattr(value, kind)
    return params


def _log_scalars(run, data: RunData, summary: Summary) -> None:
    """Log the scalars gathered so far (one file's), in their order."""
    for tag, chunks in data.scalars.items():
        if not _nameable(tag, sum(len(c[0]) for c in chunks), summary):
            continue
        if len(chunks) == 1:
            _, steps, walls, values = chunks[0]
        else:
            order, steps, walls, values = (np.concatenate(c) for c in zip(*chunks))
            keep = np.argsort(order, kind="stable")
            steps, walls, values = steps[keep], walls[keep], values[keep]
        run.log_batch(tag, steps, values, wall_time_ns(walls))
        summary.points += len(steps)
        summary.series += tag not in data.logged
        data.logged.add(tag)
    data.scalars.clear()


def _log_rest(store, run, data: RunData, summary: Summary) -> None:
    from steplog.transfer import append_summary_rows

    for tag, rows in data.histograms.items():
        if not _nameable(tag, len(rows), summary):
            continue
        steps = np.array([r[0] for r in rows], np.int64)
        times = wall_time_ns([r[1] for r in rows])
        stats = np.stack([r[2][0] for r in rows])
        append_summary_rows(store, run, tag, None, steps, times, stats, [r[2][1] for r in rows],
                            _shared_edges([r[2][2] for r in rows]))
        summary.histograms += len(rows)
        summary.series += 1
    if data.texts:
        texts = {tag: [(s, int(wall_time_ns([w])[0]), t) for s, w, t in rows] for tag, rows in data.texts.items()
                 if _nameable(rec.TEXT_ARTIFACT + tag, len(rows), summary)}
        summary.texts += rec.log_texts(run, texts)


def _nameable(tag: str, values: int, summary: Summary) -> bool:
    """Whether steplog takes ``tag`` as a name (1 to 250 characters, no control
    characters); the values of one it refuses are counted as not imported."""
    from steplog._args import name_arg

    try:
        name_arg(tag, "tag")
        return True
    except InvalidArgumentError:
        kind = "values of tags steplog cannot name (empty, over 250 characters or with control characters)"
        summary.not_imported[kind] = summary.not_imported.get(kind, 0) + values
        return False


def _shared_edges(edges: list) -> list:
    """One array for equal edges: rows that share edges share one block."""
    from steplog.engine.tensorstats.validate import edges_array

    shared: dict[bytes, np.ndarray] = {}
    return [shared.setdefault(e.tobytes(), edges_array(e)) for e in edges]
