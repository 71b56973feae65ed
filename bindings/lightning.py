"""A Lightning logger that writes to a steplog store: ``Trainer(logger=SteplogLogger("runs.steplog"))``.

One Lightning logger instance is one steplog run. ``name`` is the experiment,
``version`` the run id, ``experiment`` the ``steplog.Run`` (opened on first use, on
rank zero only; other ranks get Lightning's no-op experiment).

Ranks: only global rank zero logs, as Lightning's own loggers do. ``log_metrics``,
``log_hyperparams`` and ``finalize`` do nothing on other ranks, so with ``ddp`` or
``ddp_spawn`` the run holds the rank-zero metrics that Lightning reduced. A rank that
wants its own series logs through a Run of its own with a ``{"rank": rank}`` context.

Statuses: Lightning's ``finalize("success")`` and ``finalize("finished")`` end the run
``finished``; ``finalize("failed")`` ends it ``failed``, or ``killed`` when Ctrl-C
stopped training. Lightning finalizes after every ``fit``/``validate``/``test``, so
a later stage (``trainer.test`` after ``fit``) reopens the same run and ends it again.

``save()`` does not flush: Lightning calls it after every ``log_metrics``, and
steplog makes points visible on its own (``steplog.open(..., flush_interval=)``) and
durable when the run ends.

A pickled logger (``ddp_spawn`` pickles the Trainer into its workers) keeps its run
id, not the open Run: the copy reopens the run with ``Store.run(id)``. Pickling on rank
zero creates the run first, so that every copy, and the process that spawned them,
logs to one run.
"""

from __future__ import annotations

import logging
import os
import sys
from argparse import Namespace
from typing import Any, Mapping

from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import steplog
from steplog import StepLogError
from steplog.run import exit_status

log = logging.getLogger(__name__)

_STATUSES = {"success": "finished", "finished": "finished", "failed": "failed"}


class SteplogLogger(Logger):
    """Lightning ``Logger`` on a steplog store.

    store: a path (opened with ``steplog.open`` when first needed) or an open Store;
    experiment: the experiment name (Lightning's ``name``); run_name: the run's name;
    run_id: log into an existing run (resumed with ``Store.run``) instead of a new one;
    prefix: put before every metric name, joined with "-" as Lightning's loggers do;
    tags and capture: passed to ``Store.start_run``.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(self, store: "str | os.PathLike | steplog.Store", experiment: str = "lightning_logs",
                 run_name: str | None = None, run_id: str | None = None, prefix: str = "",
                 tags: dict | None = None, capture: "bool | list | tuple" = True):
        super().__init__()
        if isinstance(store, steplog.Store):
            self._store, self._store_path = store, os.path.abspath(store.path)
        else:
            self._store, self._store_path = None, os.path.abspath(os.fspath(store))
        self._experiment_name = experiment
        self._run_name = run_name
        self._run_id = run_id
        self._prefix = prefix
        self._tags = tags
        self._capture = capture
        self._run: steplog.Run | None = None

    # -- identity --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._experiment_name

    @property
    def version(self) -> str | None:
        """The run id; asking for it on rank zero creates the run."""
        if self._run_id is None and rank_zero_only.rank == 0:
            _ = self.experiment
        return self._run_id

    @property
    def store(self) -> "steplog.Store":
        if self._store is None:
            self._store = steplog.open(self._store_path)
        return self._store

    @property
    @rank_zero_experiment
    def experiment(self) -> "steplog.Run":
        """The steplog Run, started (or resumed, for run_id=) on first use."""
        if self._run is None:
            if self._run_id is None:
                self._run = self.store.start_run(experiment=self._experiment_name, name=self._run_name,
                                                 tags=self._tags, capture=self._capture)
                self._run_id = self._run.id
            else:
                self._run = self.store.run(self._run_id)
        return self._run

    def _open_run(self) -> "steplog.Run":
        """The Run to log to, reopened when a finalize ended it (a stage after fit)."""
        run = self.experiment
        if run._stop is not None:   # ended; Store.run resumes it as running
            self._run = None
            run = self.experiment
        return run

    # -- logging ---------------------------------------------------------------------

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """One Run.log call at ``step`` (None: each series' next step). Strings and
        None are left out, as MLFlowLogger leaves strings out."""
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if not _FLOATS.issuperset(map(type, metrics.values())):
            metrics = _as_floats(metrics)
        if metrics:
            self._open_run().log(metrics, step=step)

    @rank_zero_only
    def log_hyperparams(self, params: "dict[str, Any] | Namespace") -> None:
        """Flattened as Lightning's loggers flatten ("a/b"); a value steplog cannot
        keep as JSON is kept as its str, as TensorBoardLogger and MLFlowLogger do."""
        flat = _flatten_dict(_convert_params(params))
        kept = {}
        for key, value in flat.items():
            value = _storable_param(str(key), value)
            if value is not _DROPPED:
                kept[str(key)] = value
        if kept:
            self._open_run().log_params(kept)

    def save(self) -> None:
        """Nothing: called after every log_metrics, a flush each time would cost a commit."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is None or self._run._stop is not None:
            return   # nothing logged since the last finalize
        ending = _STATUSES.get(status, "failed")
        if ending == "failed" and sys.exc_info()[0] is not None:   # Lightning finalizes inside its except
            ending = exit_status(*sys.exc_info()[:2])   # Ctrl-C: killed
        self._run.end(ending)

    # -- pickling --------------------------------------------------------------------

    def __getstate__(self) -> dict:
        if self._run_id is None and rank_zero_only.rank == 0:
            _ = self.experiment   # one run for every copy
        state = self.__dict__.copy()
        state["_run"] = None
        state["_store"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


_DROPPED = object()
_FLOATS = frozenset((float,))


def _as_floats(metrics: Mapping) -> dict:
    """Lightning's ints (the epoch it adds) as floats: Run.log reads a dict of floats
    alone fastest. Strings and None are left out, with a warning."""
    kept = {key: float(value) if type(value) is int else value for key, value in metrics.items()
            if not isinstance(value, (str, type(None)))}
    if len(kept) != len(metrics):
        left_out = sorted(key for key in metrics if key not in kept)
        log.warning("steplog: left out metrics that are not numbers: %s", ", ".join(left_out))
    return kept


def _storable_param(key: str, value):
    """``value`` as steplog keeps it, its str when it is no JSON steplog accepts, or
    _DROPPED (logged with the reason) when neither fits."""
    from steplog import _args

    for candidate in (value, str(value)):
        try:
            return _args.mapping_arg({key: candidate}, "params")[key]
        except StepLogError as refused:
            reason = refused
    log.warning("steplog: left out hyperparameter %r: %s", key, reason)
    return _DROPPED


__all__ = ["SteplogLogger"]
