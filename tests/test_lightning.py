"""steplog.bindings.lightning.SteplogLogger under a real Lightning Trainer (CPU).

What Lightning logged is read from its own CSVLogger, run beside SteplogLogger in the
same fit: every metric, step and value must be in steplog as in the CSV file.
"""

from __future__ import annotations

import csv
import pickle
import signal

import pytest

pytest.importorskip("lightning", reason="lightning is not installed (pip install 'steplog[lightning]')")

import torch  # noqa: E402
from lightning.fabric.loggers.logger import _DummyExperiment  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.utilities.rank_zero import rank_zero_only  # noqa: E402

import steplog  # noqa: E402
from _helpers import stored_counts  # noqa: E402
from steplog.bindings.lightning import SteplogLogger  # noqa: E402

pytestmark = [
    # BoringModel's loaders have no workers and few batches: Lightning says so
    pytest.mark.filterwarnings("ignore:The '(train|val|test)_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval"),
    # lightning 2.6's pytree helper on torch 2.13
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]

HPARAMS = {"lr": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9}, "layers": [32, 2], "act": torch.nn.ReLU}


class LoggingModel(BoringModel):
    """BoringModel that logs a per-step loss, per-epoch validation and test losses and
    a value logged both ways; it saves nested hyperparameters; it raises at a given
    global step when asked to."""

    def __init__(self, fail_at: int | None = None, raise_type=RuntimeError, **hparams):
        super().__init__()
        self.save_hyperparameters(hparams)
        self.fail_at, self.raise_type = fail_at, raise_type

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise self.raise_type(f"training fails at step {self.fail_at}")
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], on_step=True, on_epoch=True)
        self.log("batch_sum", float(batch.sum()), on_step=True, on_epoch=False)
        return out

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out

    def test_step(self, batch, batch_idx):
        out = super().test_step(batch, batch_idx)
        self.log("test_loss", out["y"])
        return out


def make_trainer(tmp_path, loggers, **kw) -> Trainer:
    options = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=4,
                   limit_val_batches=2, limit_test_batches=2, log_every_n_steps=1, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, logger=loggers)
    options.update(kw)
    return Trainer(**options)


def csv_history(csv_logger: CSVLogger) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] as Lightning's CSVLogger wrote them, in order."""
    history: dict[str, list] = {}
    with open(f"{csv_logger.log_dir}/metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if name != "step" and value != "":
                    history.setdefault(name, []).append((int(row["step"]), float(value)))
    return history


def steplog_history(path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    with steplog.open(path, mode="r") as store:
        names = store.metrics(run_id).column("metric").to_pylist()
        history = {}
        for name in names:
            table = store.read(run_id, name)
            history[name] = list(zip(table.column("step").to_pylist(), table.column("value").to_pylist()))
    return history


def run_record(path, run_id: str) -> dict:
    with steplog.open(path, mode="r") as store:
        return store.run_record(run_id)


def sort_history(history: dict) -> dict:
    """steplog returns a series sorted by step; the CSV holds the calls in order."""
    return {name: sorted(points, key=lambda point: point[0]) for name, points in history.items()}


def test_history_equals_what_lightning_logged(tmp_path):
    path = tmp_path / "runs.steplog"
    ours = SteplogLogger(str(path), experiment="boring", run_name="fit-and-test", capture=False)
    theirs = CSVLogger(tmp_path / "csv", name="boring")
    model = LoggingModel(**HPARAMS)
    trainer = make_trainer(tmp_path, [ours, theirs])
    trainer.fit(model)
    assert run_record(path, ours.version)["status"] == "finished"
    trainer.test(model)   # a stage after fit logs into the same run and ends it again

    expected = csv_history(theirs)
    assert {"train_loss_step", "train_loss_epoch", "batch_sum", "val_loss", "test_loss", "epoch"} <= set(expected)
    assert len(expected["train_loss_step"]) == 8 and len(expected["val_loss"]) == 2
    assert steplog_history(path, ours.version) == sort_history(expected)

    record = run_record(path, ours.version)
    assert (ours.name, record["experiment"], record["name"]) == ("boring", "boring", "fit-and-test")
    assert record["status"] == "finished"
    assert record["params"] == {"lr": 0.1, "optimizer/name": "sgd", "optimizer/momentum": 0.9, "layers": [32, 2],
                                "act": str(torch.nn.ReLU)}


def test_failed_when_training_raises(tmp_path):
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, capture=False)
    trainer = make_trainer(tmp_path, logger)
    with pytest.raises(RuntimeError, match="training fails at step 3"):
        trainer.fit(LoggingModel(fail_at=3))
    record = run_record(path, logger.version)
    assert record["status"] == "failed"
    assert [step for step, _ in steplog_history(path, logger.version)["train_loss_step"]] == [0, 1, 2]


def test_ctrl_c_ends_the_run_killed(tmp_path):
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, capture=False)
    trainer = make_trainer(tmp_path, logger)
    handler = signal.getsignal(signal.SIGINT)
    try:   # Lightning ignores SIGINT from here on and exits with 1
        with pytest.raises(SystemExit):
            trainer.fit(LoggingModel(fail_at=2, raise_type=KeyboardInterrupt))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert run_record(path, logger.version)["status"] == "killed"


@pytest.mark.parametrize("status, expected", [("success", "finished"), ("finished", "finished"),
                                              ("failed", "failed")])
def test_finalize_status(tmp_path, status, expected):
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, capture=False)
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finalize(status)
    assert run_record(path, logger.version)["status"] == expected
    logger.finalize("failed")   # a second finalize, nothing logged since, changes nothing
    assert run_record(path, logger.version)["status"] == expected


def test_save_does_not_flush(tmp_path):
    path = tmp_path / "runs.steplog"
    with steplog.open(path, flush_interval=None) as store:
        logger = SteplogLogger(store, capture=False)
        logger.log_metrics({"x": 1.0}, step=0)
        logger.save()
        assert stored_counts(store, logger.version) == {}   # still buffered
        logger.finalize("success")
        assert stored_counts(store, logger.version) == {("x", None): 1}
    assert steplog_history(path, logger.version) == {"x": [(0, 1.0)]}


def test_prefix_strings_and_steps(tmp_path, caplog):
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, prefix="train", capture=False)
    logger.log_metrics({"loss": torch.tensor(0.5).item(), "note": "text", "lr": 1}, step=7)
    logger.log_metrics({"loss": 0.25})   # step None: the series' next step
    logger.log_hyperparams({"nested": {"deep": {"x": 1}}, "path": tmp_path})
    logger.finalize("success")
    assert "train-note" in caplog.text
    assert steplog_history(path, logger.version) == {"train-loss": [(7, 0.5), (8, 0.25)], "train-lr": [(7, 1.0)]}
    assert run_record(path, logger.version)["params"] == {"nested/deep/x": 1, "path": str(tmp_path)}


def test_run_id_resumes_a_run(tmp_path):
    path = tmp_path / "runs.steplog"
    with steplog.open(path) as store:
        run = store.start_run(experiment="e", capture=False)
        run.log("x", 1.0, step=0)
        run.end()
    logger = SteplogLogger(path, run_id=run.id)
    assert logger.version == run.id
    logger.log_metrics({"x": 2.0}, step=1)
    logger.finalize("success")
    assert steplog_history(path, run.id) == {"x": [(0, 1.0), (1, 2.0)]}


def test_pickled_trainer_keeps_logging(tmp_path):
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, capture=False)
    copy = pickle.loads(pickle.dumps(logger))   # before any logging: both name one run
    assert copy.version == logger.version
    trainer = make_trainer(tmp_path, logger, max_epochs=1)
    trainer.fit(LoggingModel())
    restored = pickle.loads(pickle.dumps(trainer))
    assert restored.logger.version == logger.version and restored.logger._run is None
    restored.logger.log_metrics({"after_pickle": 3.0}, step=100)
    restored.logger.finalize("success")
    copy.log_metrics({"from_copy": 4.0}, step=5)
    copy.finalize("success")
    history = steplog_history(path, logger.version)
    assert history["after_pickle"] == [(100, 3.0)] and history["from_copy"] == [(5, 4.0)]
    assert len(history["train_loss_step"]) == 4
    assert run_record(path, logger.version)["status"] == "finished"


def test_other_ranks_log_nothing(tmp_path, monkeypatch):
    """What a ddp or ddp_spawn worker of rank 1 sees (a spawned run of two CPU processes
    takes about 20 s here, most of it each worker importing lightning)."""
    path = tmp_path / "runs.steplog"
    logger = SteplogLogger(path, capture=False)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert isinstance(logger.experiment, _DummyExperiment) and logger.version is None
    logger.log_metrics({"x": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("success")
    copy = pickle.loads(pickle.dumps(logger))   # no run is created for the copy either
    assert copy.version is None and not path.exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    run_id = logger.version
    assert steplog_history(path, run_id) == {} and run_record(path, run_id)["params"] == {}
