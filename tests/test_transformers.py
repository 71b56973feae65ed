"""steplog.bindings.transformers.SteplogCallback under a real Hugging Face Trainer (CPU),
on a two-layer BERT built from its config (no download) and random tokens: steplog's
series must equal ``trainer.state.log_history``."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'steplog[transformers]')")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (pip install 'steplog[transformers]')")

import torch  # noqa: E402
from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,  # noqa: E402
                          TrainerState, TrainingArguments)

import steplog  # noqa: E402
from steplog.bindings.transformers import SteplogCallback  # noqa: E402

STEPS = 6


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 24, length: int = 16, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, 100, (n, length), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.tokens[i], "labels": self.labels[i]}


class RaiseAtStep(TrainerCallback):
    def __init__(self, step: int, error: BaseException):
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    max_position_embeddings=32, num_labels=2))


def make_trainer(tmp_path, callbacks, **kw) -> Trainer:
    options = dict(output_dir=str(tmp_path / "out"), max_steps=STEPS, logging_steps=1, per_device_train_batch_size=4,
                   per_device_eval_batch_size=8, report_to="none", save_strategy="no", use_cpu=True,
                   disable_tqdm=True, run_name="tiny-bert", seed=0)
    options.update(kw)
    return Trainer(model=tiny_model(), args=TrainingArguments(**options), train_dataset=RandomTokens(),
                   eval_dataset=RandomTokens(8, seed=1), callbacks=callbacks)


def history_of(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] from Trainer.state.log_history, sorted by step as steplog reads."""
    history: dict[str, list] = {}
    for entry in log_history:
        for name, value in entry.items():
            if name != "step":
                history.setdefault(name, []).append((entry["step"], float(value)))
    return {name: sorted(points, key=lambda point: point[0]) for name, points in history.items()}


def stored_history(path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    with steplog.open(path, mode="r") as store:
        history = {}
        for name in _scalar_names(store, run_id):
            table = store.read(run_id, name)
            history[name] = list(zip(table.column("step").to_pylist(), table.column("value").to_pylist()))
    return history


def _scalar_names(store, run_id: str) -> list[str]:
    table = store.metrics(run_id)
    return [name for name, kind in zip(table.column("metric").to_pylist(), table.column("kind").to_pylist())
            if kind == "scalar"]


def run_record(path, run_id: str) -> dict:
    with steplog.open(path, mode="r") as store:
        return store.run_record(run_id)


def test_series_equal_log_history_and_params_hold_the_arguments(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, experiment="tiny", capture=False)
    trainer = make_trainer(tmp_path, [callback])
    trainer.train()
    assert run_record(path, callback.run.id)["status"] == "finished"
    trainer.evaluate()   # after training: into the same run, still finished

    expected = history_of(trainer.state.log_history)
    assert {"loss", "learning_rate", "grad_norm", "epoch", "train_loss", "eval_loss"} <= set(expected)
    assert [step for step, _ in expected["loss"]] == list(range(1, STEPS + 1))
    assert expected["eval_loss"][0][0] == STEPS
    assert stored_history(path, callback.run.id) == expected

    record = run_record(path, callback.run.id)
    assert (record["experiment"], record["name"], record["status"]) == ("tiny", "tiny-bert", "finished")
    arguments = trainer.args.to_dict()
    params = record["params"]
    assert set(arguments) | {"model"} == set(params)
    assert {key: params[key] for key in arguments} == arguments   # every argument, as TrainingArguments gives it
    assert (params["learning_rate"], params["max_steps"], params["run_name"]) == (5e-05, STEPS, "tiny-bert")
    assert params["model"]["hidden_size"] == 32 and params["model"]["num_hidden_layers"] == 2
    assert params["model"]["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}   # int keys, kept as JSON keeps them


def test_failed_when_training_raises(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, capture=False)
    trainer = make_trainer(tmp_path, [callback, RaiseAtStep(3, RuntimeError("diverged"))])
    with pytest.raises(RuntimeError, match="diverged"):
        trainer.train()
    assert run_record(path, callback.run.id)["status"] == "failed"
    assert [step for step, _ in stored_history(path, callback.run.id)["loss"]] == [1, 2]


def test_ctrl_c_ends_the_run_killed(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, capture=False)
    trainer = make_trainer(tmp_path, [callback, RaiseAtStep(2, KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert run_record(path, callback.run.id)["status"] == "killed"


def test_added_callback_ends_a_failed_run_at_the_next_train(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, capture=False)
    trainer = make_trainer(tmp_path, [RaiseAtStep(2, RuntimeError("once"))])
    trainer.add_callback(callback)   # no on_init_end for it: train() is wrapped from the first on_train_begin
    with pytest.raises(RuntimeError, match="once"):
        trainer.train()
    first = callback.run.id
    assert run_record(path, first)["status"] == "running"
    trainer.pop_callback(RaiseAtStep)
    with pytest.raises(RuntimeError, match="again"):
        trainer.add_callback(RaiseAtStep(1, RuntimeError("again")))
        trainer.train()
    assert run_record(path, first)["status"] == "failed"   # the next train() knew the first one never ended
    assert run_record(path, callback.run.id)["status"] == "failed"   # and the wrapped train() ended its own
    assert callback.run.id != first


def test_gradient_and_weight_summaries(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, log_tensors_every=2, capture=False)
    trainer = make_trainer(tmp_path, [callback], max_grad_norm=0.0)   # no clipping: grad_norm is the raw norm
    trainer.train()
    names = [name for name, _ in trainer.model.named_parameters()]
    grad_norms = dict(history_of(trainer.state.log_history)["grad_norm"])
    with steplog.open(path, mode="r") as store:
        grads = {name: store.read_tensor(callback.run.id, f"gradients/{name}") for name in names}
        weights = {name: store.read_tensor(callback.run.id, f"parameters/{name}") for name in names}
    for step_index, step in enumerate((2, 4, 6)):
        assert all(table.column("step").to_pylist() == [2, 4, 6] for table in grads.values())
        total = math.sqrt(sum(table.column("l2")[step_index].as_py() ** 2 for table in grads.values()))
        assert total == pytest.approx(grad_norms[step], rel=1e-4)
    for name, parameter in trainer.model.named_parameters():
        table = weights[name]
        assert table.column("step").to_pylist() == [2, 4, 6]
        assert table.column("max")[-1].as_py() == float(parameter.detach().max())   # the weights after the last step
        assert table.column("count")[-1].as_py() == parameter.numel()


def test_other_processes_log_nothing(tmp_path):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, capture=False)
    state = TrainerState()
    state.is_world_process_zero = False
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    callback.on_train_begin(args, state, None, model=tiny_model())
    callback.on_log(args, state, None, logs={"loss": 1.0})
    callback.on_train_end(args, state, None)
    assert callback.run is None and not path.exists()


def test_log_tensors_every_is_checked(tmp_path):
    with pytest.raises(steplog.InvalidArgumentError, match="log_tensors_every"):
        SteplogCallback(tmp_path / "runs.steplog", log_tensors_every=0)


def test_evaluate_alone_logs_numbers_only(tmp_path, caplog):
    path = tmp_path / "runs.steplog"
    callback = SteplogCallback(path, capture=False)
    trainer = make_trainer(tmp_path, [callback])
    trainer.evaluate()   # no train(): on_log opens the run
    state = trainer.state
    callback.on_log(trainer.args, state, None, logs={"seen": torch.tensor(3.5), "note": "text", "count": 7})
    assert "'note'" in caplog.text
    history = stored_history(path, callback.run.id)
    assert history["seen"] == [(0, 3.5)] and history["count"] == [(0, 7.0)] and "note" not in history
    assert history["eval_loss"] == [(0, trainer.state.log_history[0]["eval_loss"])]
    assert run_record(path, callback.run.id)["params"]["max_steps"] == STEPS
