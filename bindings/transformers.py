"""A Hugging Face Trainer callback that logs to a steplog store:
``Trainer(..., callbacks=[SteplogCallback("runs.steplog")])``.

``report_to`` takes only the names transformers lists itself, so the callback is passed
in ``callbacks`` (or ``trainer.add_callback``); keep ``report_to="none"`` (the default)
unless other trackers are wanted too.

One ``train()`` call is one steplog run, opened by the world's main process
(``state.is_world_process_zero``; other processes log nothing) in ``on_train_begin``:

- params: ``TrainingArguments.to_dict()`` at the top level (``params.learning_rate``)
  and the model's ``config.to_dict()`` under ``model`` (``params.model.hidden_size``).
  A value steplog cannot keep as it is is kept as JSON (dict keys as strings) or as its
  str; one that does not fit even so (steplog's size limits) is left out, with a
  warning on this module's logger that names it and why.
- metrics: every ``on_log`` dict, its numbers only (as transformers' MLflow callback
  keeps them), in one ``Run.log`` call at ``state.global_step``. The dicts that
  ``evaluate()`` logs after training go into the same run.
- tensors, with ``log_tensors_every=N``: summaries of every gradient (``gradients/<name>``,
  before the optimizer step, at the step they make) and of every weight
  (``parameters/<name>``, after the step) every N optimizer steps, through
  ``Run.log_tensors``.
- status: ``finished`` at ``on_train_end``. transformers calls no callback when
  training raises, so the callback wraps the ``train`` method of the Trainer it was
  passed to (found in ``on_init_end``): an exception out of ``train()`` ends the run
  ``failed`` (``killed`` for Ctrl-C) and is raised on. A callback added with
  ``add_callback`` after the Trainer was built wraps it at the first ``on_train_begin``,
  so its first run that fails stays ``running`` until the store closes (``failed``
  when the exception ends the program), or until the next ``train()`` ends it ``failed``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import weakref

import torch
from transformers import TrainerCallback

import steplog
from steplog import StepLogError
from steplog.run import exit_status

log = logging.getLogger(__name__)
_FLOATS = frozenset((float,))


class SteplogCallback(TrainerCallback):
    """store: a path (opened with ``steplog.open`` when training begins) or an open
    Store; experiment: the experiment name; run_name: the run's name (default
    ``args.run_name``); log_tensors_every: log gradient and weight summaries every N
    optimizer steps (None: never); tags and capture: passed to ``Store.start_run``."""

    def __init__(self, store: "str | os.PathLike | steplog.Store", experiment: str = "huggingface",
                 run_name: str | None = None, log_tensors_every: int | None = None, tags: dict | None = None,
                 capture: "bool | list | tuple" = True):
        if log_tensors_every is not None and (isinstance(log_tensors_every, bool)
                                              or not isinstance(log_tensors_every, int) or log_tensors_every < 1):
            raise steplog.InvalidArgumentError("log_tensors_every",
                                               f"must be a positive int or None, got {log_tensors_every!r}")
        if isinstance(store, steplog.Store):
            self._store, self._store_path = store, store.path
        else:
            self._store, self._store_path = None, os.path.abspath(os.fspath(store))
        self.experiment, self.run_name, self.log_tensors_every = experiment, run_name, log_tensors_every
        self._tags, self._capture = tags, capture
        self.run: steplog.Run | None = None   # the run of the latest train(), ended or not
        self._ended_as: str | None = None     # its status once ended
        self._watched = weakref.WeakSet()     # trainers whose train() this callback wraps

    @property
    def store(self) -> "steplog.Store":
        if self._store is None:
            self._store = steplog.open(self._store_path)
        return self._store

    # -- life cycle ------------------------------------------------------------------

    def on_init_end(self, args, state, control, **kwargs):
        self._watch(_trainer_holding(self))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._watch(_trainer_holding(self))
        if not state.is_world_process_zero:
            return
        if self.run is not None and self._ended_as is None:   # the last train() never reached on_train_end
            self._end("failed")
        self._start(args, model)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.run is not None and self._ended_as is None:
            self._end("finished")

    def _start(self, args, model) -> None:
        params = _storable_params(args.to_dict(), "")
        config = getattr(model, "config", None)
        if hasattr(config, "to_dict"):
            params["model"] = _storable_params(config.to_dict(), "model.")
        self.run = self.store.start_run(experiment=self.experiment, name=self.run_name or args.run_name,
                                        params=params, tags=self._tags, capture=self._capture)
        self._ended_as = None

    def _end(self, status: str) -> None:
        self.run.end(status)
        self._ended_as = status

    def _watch(self, trainer) -> None:
        """Wrap ``trainer.train`` once, so that an exception out of it ends the run."""
        if trainer is None or trainer in self._watched:
            return
        self._watched.add(trainer)
        train, callback = trainer.train, weakref.ref(self)

        @functools.wraps(train)
        def train_and_end_on_error(*args, **kwargs):
            try:
                return train(*args, **kwargs)
            except BaseException as exc:
                watching = callback()
                if watching is not None and watching.run is not None and watching._ended_as is None:
                    watching._end(exit_status(type(exc), exc))
                raise

        trainer.train = train_and_end_on_error

    # -- metrics and tensors ---------------------------------------------------------

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = _numbers(logs)
        if not metrics:
            return
        if self.run is None:   # evaluate() before any train(): a run for it, ended when the store closes
            self._start(args, model)
        if self._ended_as is None:
            self.run.log(metrics, step=state.global_step)
            return
        reopened = self.store.run(self.run.id)   # after training: into its run, which keeps its status
        reopened.log(metrics, step=state.global_step)
        reopened.end(self._ended_as)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1   # the step these gradients make; global_step counts it after
        if self._logs_tensors(state, step) and model is not None:
            grads = {f"gradients/{name}": _host(p.grad) for name, p in model.named_parameters() if p.grad is not None}
            if grads:
                self.run.log_tensors(grads, step=step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._logs_tensors(state, state.global_step) and model is not None:
            weights = {f"parameters/{name}": _host(p) for name, p in model.named_parameters()}
            self.run.log_tensors(weights, step=state.global_step)

    def _logs_tensors(self, state, step: int) -> bool:
        return (self.log_tensors_every is not None and state.is_world_process_zero and self.run is not None
                and self._ended_as is None and step % self.log_tensors_every == 0)


def _trainer_holding(callback, depth: int = 8):
    """The Trainer whose callback handler holds ``callback``, from the frames calling
    this event (Trainer -> CallbackHandler.on_event -> call_event -> the callback)."""
    frame = sys._getframe(2)
    while frame is not None and depth:
        candidate = frame.f_locals.get("self")
        handler = getattr(candidate, "callback_handler", None)
        if handler is not None and any(held is callback for held in getattr(handler, "callbacks", ())):
            return candidate
        frame, depth = frame.f_back, depth - 1
    return None


def _numbers(logs: dict) -> dict:
    """The numbers of an on_log dict (one-element tensors as numbers); others are left
    out with a warning, as transformers' MLflow callback does."""
    if _FLOATS.issuperset(map(type, logs.values())):   # Run.log reads a dict of floats alone fastest
        return logs
    metrics = {}
    for key, value in logs.items():
        if isinstance(value, (int, float)):
            metrics[key] = float(value)
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            metrics[key] = value.item()
        else:
            log.warning("steplog: left out %r from the metrics: %s is not a number", key, type(value).__name__)
    return metrics


def _host(tensor: "torch.Tensor"):
    """A detached tensor steplog can summarise (bfloat16 has no numpy dtype)."""
    tensor = tensor.detach()
    return tensor.float() if tensor.dtype == torch.bfloat16 else tensor


def _storable_params(values: dict, prefix: str) -> dict:
    """Each value as steplog keeps it, else as JSON (int dict keys as str) or as its
    str; left out, with the reason logged, when none fits."""
    from steplog import _args

    kept = {}
    for key, value in values.items():
        key = str(key)
        for candidate in (value, _as_json(value), str(value)):
            try:
                kept[key] = _args.mapping_arg({key: candidate}, "params")[key]
                break
            except StepLogError as refused:
                reason = refused
        else:
            log.warning("steplog: left out param %r: %s", prefix + key, reason)
    return kept


def _as_json(value):
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


__all__ = ["SteplogCallback"]
