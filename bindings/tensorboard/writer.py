"""``SummaryWriter``: torch.utils.tensorboard's and tensorboardX's writer, writing into a
steplog store instead of event files. Change the import, keep the script:

    from steplog.bindings.tensorboard import SummaryWriter   # was: from torch.utils.tensorboard import ...

Where things go (the same places ``steplog import-tensorboard`` puts the event files
that torch's writer would have written, so both read alike):

- ``log_dir`` (default ``runs/<Mon DD_HH-MM-SS>_<host><comment>``, as torch's) names a
  store and a run: the store is the directory *above* log_dir (``runs/``, the directory
  one passes to ``tensorboard --logdir``), the run is named after log_dir's last part,
  in the experiment named after the store's directory (``runs``). ``store=`` (a path or
  an open ``steplog.Store``) and ``experiment=`` choose others. A second writer on the
  same log_dir (a job resumed from a checkpoint) logs to the same run. The directory
  above log_dir must be new, empty or a steplog store: a folder of TensorBoard event
  files is not one (pass ``store=``);
- ``add_scalar``: a point of the metric ``tag`` at ``global_step`` (None: step 0, as
  TensorBoard reads an event without a step), at ``walltime`` (float seconds, kept to
  the nanosecond) or now. Values are kept as float64: event files round them to float32
  unless ``double_precision``; ``new_style`` and ``double_precision`` are accepted;
- ``add_scalars(main_tag, {key: value})``: as torch, one sub-run per key, the child run
  ``<run>/<main_tag with / as _>_<key>`` holding the metric ``main_tag``;
- ``add_histogram``: a tensor summary (``Run.log_tensor``: exact count, min, max, mean,
  std, quantiles, and the histogram) with numpy's ``bins``: "tensorflow" (torch's
  default: TensorBoard's fixed exponential buckets, the same edges at every step), an
  int, a numpy rule name ("auto", "fd", ...) or edges; ``max_bins`` merges bins as
  torch does. ``add_histogram_raw``: the given buckets as TensorBoard reads them;
- ``add_hparams``: as torch, a child run ``<run>/<run_name or time.time()>`` holding the
  hparams as params and ``metric_dict`` as points at ``global_step`` (None: 0);
- ``add_text``: steplog keeps no text series; the texts of each tag
  (``<tag>/text_summary``, TensorBoard's tag) are one JSON Lines artifact of the run,
  ``tensorboard-text/<tag>/text_summary`` (lines of step, time_ns, text), written at
  ``flush`` and ``close`` (``_records.read_texts`` reads them back);
- ``add_image``/``add_images``/``add_video``/``add_audio``: the array as given, as an
  ``.npy`` artifact ``tensorboard-<kind>/<tag>/<step>.npy``; ``add_figure``: a PNG
  artifact. ``add_graph``, ``add_onnx_graph``, ``add_embedding``, ``add_mesh``,
  ``add_pr_curve(_raw)`` and ``add_custom_scalars*`` raise UnsupportedSummaryError
  naming the call: steplog stores none of them;
- ``purge_step``: TensorBoard hides events at and past it from an earlier run of the
  log_dir; steplog keeps every point and records the restart as TensorBoard's writer
  does, a START marker at ``purge_step`` in ``_tensorboard/session_log``;
- ``max_queue``, ``flush_secs``, ``filename_suffix`` are accepted: steplog buffers and
  flushes by itself (``steplog.open``'s flush_interval); ``flush()`` makes everything
  logged durable; ``close()`` (or the end of a ``with`` block) ends the runs: finished,
  or failed when an exception leaves the block.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time as _time
from datetime import datetime

import numpy as np

import steplog
from steplog.engine.errors import InvalidArgumentError, StepLogError

from . import _records as rec


class UnsupportedSummaryError(StepLogError, NotImplementedError):
    """A SummaryWriter call whose data steplog does not store (graphs, embeddings, meshes...)."""


def _tensorflow_bins() -> np.ndarray:
    """TensorBoard's default histogram edges (torch's SummaryWriter.default_bins)."""
    v, positive = 1e-12, []
    while v < 1e20:
        positive.append(v)
        v *= 1.1
    return np.array([-x for x in reversed(positive)] + [0.0] + positive)


TENSORFLOW_BINS = _tensorflow_bins()


def walltime_ns(walltime) -> int:
    """Float seconds since the epoch as int ns, the fraction rounded to the nearest ns."""
    seconds = math.floor(walltime)
    return int(seconds) * 1_000_000_000 + round((walltime - seconds) * 1e9)


def default_log_dir(comment: str = "") -> str:
    current_time = datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", current_time + "_" + socket.gethostname() + comment)


class SummaryWriter:
    """torch.utils.tensorboard.SummaryWriter writing into a steplog store (module
    docstring: where each call's data goes). Extra keywords: ``store`` (a path or an
    open Store), ``experiment``, ``capture`` (the environment the run records, as
    ``Store.start_run``; default True), ``logdir`` (tensorboardX's name of log_dir)."""

    def __init__(self, log_dir=None, comment="", purge_step=None, max_queue=10, flush_secs=120,
                 filename_suffix="", *, store=None, experiment=None, capture=True, **kwargs):
        log_dir = log_dir if log_dir is not None else kwargs.pop("logdir", None)
        kwargs.pop("write_to_disk", None), kwargs.pop("comet_config", None)
        if kwargs:
            raise TypeError(f"SummaryWriter() got unexpected keyword arguments {', '.join(sorted(kwargs))}")
        self.log_dir = os.fspath(log_dir) if log_dir is not None else default_log_dir(comment)
        self._own_store = not isinstance(store, steplog.Store)
        self.store = store if not self._own_store else self._open_store(store)
        self.run_name = os.path.basename(os.path.normpath(self.log_dir))
        self.experiment = experiment or os.path.basename(os.path.normpath(os.path.abspath(self.store.path)))
        self._capture = capture
        self.run = self._run(self.run_name, None, capture)
        self._log = self.run.log
        self._children: dict[str, object] = {}
        self._texts: dict[str, list] = {}
        self._texts_dirty = False
        self._closed = False
        if purge_step is not None:
            self._log(rec.SESSION_LOG, rec.SESSION_START, purge_step)

    def _open_store(self, store):
        path = store if store is not None else os.path.dirname(os.path.abspath(self.log_dir))
        try:
            return steplog.open(path)
        except InvalidArgumentError as exc:
            if store is not None:
                raise
            raise InvalidArgumentError("log_dir", f"the store of log_dir {self.log_dir!r} is the directory above it, "
                                                  f"{path}, which cannot be one ({exc}); pass store= or a log_dir "
                                                  "such as runs/NAME") from None

    def _run(self, name: str, parent, capture):
        """The run ``name`` of the experiment, resumed if the store holds it, else started."""
        held = [r for r in self.store.run_records() if r["experiment"] == self.experiment and r["name"] == name]
        if held:
            return self.store.run(max(held, key=lambda r: r["start_time"])["id"])
        return self.store.start_run(experiment=self.experiment, name=name, parent=parent, capture=capture)

    def _child(self, name: str):
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = self._run(f"{self.run_name}/{name}", self.run, False)
        return child

    def get_logdir(self) -> str:
        return self.log_dir

    # -- scalars -----------------------------------------------------------------------

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False, display_name="", summary_description=""):
        self._log(tag, scalar_value, 0 if global_step is None else global_step, None,
                  None if walltime is None else walltime_ns(walltime))

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        step = 0 if global_step is None else global_step
        when = walltime_ns(_time.time() if walltime is None else walltime)
        prefix = main_tag.replace("/", "_") + "_"
        for key, value in tag_scalar_dict.items():
            self._child(prefix + key).log(main_tag, value, step, None, when)

    # -- histograms --------------------------------------------------------------------

    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None, max_bins=None):
        from steplog.engine.tensorstats.validate import as_array

        array = as_array(values, "values")
        step = 0 if global_step is None else global_step
        if isinstance(bins, str) and bins == "tensorflow":
            edges = TENSORFLOW_BINS
        elif isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and max_bins is None:
            return self._tensor(tag, array, step, walltime, bins=int(bins), edges=None)
        else:
            finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
            edges = np.histogram_bin_edges(finite.reshape(-1), bins)
        if max_bins is not None and len(edges) - 1 > max_bins:
            sub = (len(edges) - 1) // max_bins
            edges = np.append(edges[:-1:sub], edges[-1])
        self._tensor(tag, array, step, walltime, bins=len(edges) - 1, edges=edges)

    def _tensor(self, tag, array, step, walltime, bins, edges):
        if walltime is None:
            return self.run.log_tensor(tag, array, step, bins=bins, edges=edges)
        from steplog.engine.summary import summarize_many
        from steplog.engine.tensorstats.validate import edges_array, tensor_array
        from steplog.transfer import append_summary_rows

        shared = None if edges is None else edges_array(edges)
        many = summarize_many([tensor_array(array, "values")], bins, shared)
        append_summary_rows(self.store, self.run, tag, None, np.array([step], np.int64),
                            np.array([walltime_ns(walltime)]), many.stats, [many.counts[0]], [shared])

    def add_histogram_raw(self, tag, min, max, num, sum, sum_squares, bucket_limits, bucket_counts,
                          global_step=None, walltime=None):
        from steplog.transfer import append_summary_rows

        if len(bucket_limits) != len(bucket_counts):
            raise ValueError("len(bucket_limits) != len(bucket_counts), see the document.")
        stats, counts, edges = rec.proto_histogram(min, max, num, sum, sum_squares, bucket_limits, bucket_counts)
        when = _time.time() if walltime is None else walltime
        append_summary_rows(self.store, self.run, tag, None, np.array([0 if global_step is None else global_step]),
                            np.array([walltime_ns(when)]), stats[None, :], [counts], [edges])

    # -- hparams and text --------------------------------------------------------------

    def add_hparams(self, hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None, global_step=None):
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        child = self._child(run_name or str(_time.time()))
        child.log_params({k: _param(v) for k, v in hparam_dict.items() if v is not None})
        step = 0 if global_step is None else global_step
        for key, value in metric_dict.items():
            child.log(key, value, step)

    def add_text(self, tag, text_string, global_step=None, walltime=None):
        when = _time.time_ns() if walltime is None else walltime_ns(walltime)
        self._texts.setdefault(f"{tag}/text_summary", []).append(
            (0 if global_step is None else int(global_step), when, str(text_string)))
        self._texts_dirty = True

    # -- media: kept as artifacts ------------------------------------------------------

    def add_image(self, tag, img_tensor, global_step=None, walltime=None, dataformats="CHW"):
        self._array_artifact("image", tag, img_tensor, global_step)

    def add_images(self, tag, img_tensor, global_step=None, walltime=None, dataformats="NCHW"):
        self._array_artifact("image", tag, img_tensor, global_step)

    def add_video(self, tag, vid_tensor, global_step=None, fps=4, walltime=None):
        self._array_artifact("video", tag, vid_tensor, global_step)

    def add_audio(self, tag, snd_tensor, global_step=None, sample_rate=44100, walltime=None):
        self._array_artifact("audio", tag, snd_tensor, global_step)

    def add_figure(self, tag, figure, global_step=None, close=True, walltime=None):
        figures = figure if isinstance(figure, list) else [figure]
        with tempfile.TemporaryDirectory(prefix="steplog-tb-") as scratch:
            for i, fig in enumerate(figures):
                path = os.path.join(scratch, f"{i}.png")
                fig.savefig(path, format="png")
                suffix = f"-{i}" if len(figures) > 1 else ""
                self.run.log_artifact(path, role="other", copy=True,
                                      name=f"tensorboard-image/{tag}/{_step_text(global_step)}{suffix}.png")
                if close:
                    import matplotlib.pyplot as plt

                    plt.close(fig)

    def _array_artifact(self, kind, tag, tensor, global_step):
        from steplog.engine.tensorstats.validate import as_array

        with tempfile.TemporaryDirectory(prefix="steplog-tb-") as scratch:
            path = os.path.join(scratch, "a.npy")
            np.save(path, np.asarray(as_array(tensor, "tensor")))
            self.run.log_artifact(path, role="other", copy=True,
                                  name=f"tensorboard-{kind}/{tag}/{_step_text(global_step)}.npy")

    def _refuse(self, call: str):
        raise UnsupportedSummaryError(f"SummaryWriter.{call}: steplog stores scalars, histograms, hparams, text, "
                                      "images, audio and video, not this; keep torch's SummaryWriter for it (both "
                                      "writers can run side by side)")

    def add_graph(self, *args, **kwargs):
        self._refuse("add_graph")

    def add_onnx_graph(self, *args, **kwargs):
        self._refuse("add_onnx_graph")

    def add_embedding(self, *args, **kwargs):
        self._refuse("add_embedding")

    def add_mesh(self, *args, **kwargs):
        self._refuse("add_mesh")

    def add_pr_curve(self, *args, **kwargs):
        self._refuse("add_pr_curve")

    def add_pr_curve_raw(self, *args, **kwargs):
        self._refuse("add_pr_curve_raw")

    def add_custom_scalars(self, *args, **kwargs):
        self._refuse("add_custom_scalars")

    def add_custom_scalars_multilinechart(self, *args, **kwargs):
        self._refuse("add_custom_scalars_multilinechart")

    def add_custom_scalars_marginchart(self, *args, **kwargs):
        self._refuse("add_custom_scalars_marginchart")

    # -- life cycle --------------------------------------------------------------------

    def flush(self):
        if self._closed:
            return
        self._write_texts()
        self.store.flush()

    def _write_texts(self):
        if self._texts_dirty:
            rec.log_texts(self.run, self._texts)
            self._texts_dirty = False

    def close(self, status: str = "finished"):
        if self._closed:
            return
        self._write_texts()
        for child in self._children.values():
            child.end(status)
        self.run.end(status)
        self._closed = True
        if self._own_store:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        from steplog.run import exit_status

        self.close(exit_status(exc_type, exc))


def _param(value):
    """An hparam as TensorBoard keeps it: str, bool, number, else its str (a torch or
    numpy scalar its number)."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item") and getattr(value, "size", 1) in (1, None):
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            pass
    return getattr(value, "__name__", None) or str(value)


def _step_text(global_step) -> str:
    return str(0 if global_step is None else int(global_step))
