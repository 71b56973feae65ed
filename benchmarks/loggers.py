"""Issue 13 item 6: what steplog's Lightning logger and Hugging Face callback add to a
training step of about 10 ms that logs 20 scalars (target: at most 1 %), beside each
frontend's default backends.

Two kinds of figure, both in wall time and in process CPU time (every thread, so a
backend's background writer counts):

- per step: the logging calls a frontend makes for one step, timed alone over many
  steps (Lightning: ``log_metrics(20 scalars, step)`` then ``save()``; transformers:
  ``on_log(20 scalars)`` at ``state.global_step``), ending the run (its last flush)
  included, divided by the steps; as a share of a 10 ms step. This is the cost the
  binding adds. steplog's own ``Run.log`` of the same dicts is shown beside it: a dict
  holding one int (Lightning's epoch) sends every value of it through steplog's slow
  conversion, which the bindings avoid by handing floats.
- end to end: a real ``Trainer`` whose step spins 10 ms of CPU and logs 20 scalars,
  per step, backends interleaved, medians of repeats. Lightning's baseline is a Logger
  that keeps nothing (with any logger Lightning turns each step's tensors into numbers,
  which ``logger=False`` skips); transformers' is ``report_to="none"``. On a busy
  machine this figure moves by a few per cent from fit to fit: read it as a check that
  nothing else (a flush per step, a stall) hides in the frontend's path.

    .venv/bin/python benchmarks/loggers.py            # both frontends (about 4 min on 2 busy cores)
    .venv/bin/python benchmarks/loggers.py --quick    # fewer steps and repeats
    .venv/bin/python benchmarks/loggers.py --only lightning
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

STEP_SECONDS = 0.010
SCALARS = 20


def metric_dicts(count: int) -> list[dict]:
    """``count`` distinct dicts of SCALARS numbers with one key set, as a frontend builds
    one a step: floats, and the int epoch Lightning adds (transformers' is a float)."""
    return [{"epoch": i // 100, **{f"m{k:02d}": (i * SCALARS + k) * 1e-3 for k in range(SCALARS - 1)}}
            for i in range(count)]


def spin(seconds: float) -> None:
    """A step of ``seconds`` of this thread's CPU time, whatever else the machine runs."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Clock:
    """Wall and process CPU time (every thread: a backend's flusher too) since start()."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, steps: int) -> tuple[float, float]:
        return (time.perf_counter() - self.wall) / steps, (time.process_time() - self.cpu) / steps


def per_step_rows(samples: dict[str, list[tuple[float, float]]]) -> list[tuple]:
    """name, wall us/step, CPU us/step, CPU share of a 10 ms step (medians over repeats)."""
    rows = []
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values) * 1e6
        cpu = statistics.median(v[1] for v in values) * 1e6
        rows.append((name, wall, cpu, cpu / (STEP_SECONDS * 1e6) * 100))
    return rows


# -- Lightning -----------------------------------------------------------------------

def lightning_backends(root: str) -> dict:
    from lightning.pytorch.loggers import CSVLogger

    from steplog.bindings.lightning import SteplogLogger

    backends = {"SteplogLogger": lambda tag: SteplogLogger(os.path.join(root, "steplog"), capture=False),
                "CSVLogger": lambda tag: CSVLogger(os.path.join(root, "csv"), name=tag)}
    with contextlib.suppress(ImportError, ModuleNotFoundError):
        from lightning.pytorch.loggers import TensorBoardLogger
        from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE, _TENSORBOARDX_AVAILABLE

        if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE:
            backends["TensorBoardLogger"] = lambda tag: TensorBoardLogger(os.path.join(root, "tb"), name=tag)
    return backends


def run_log_steps(root: str, steps: int, pool: list) -> tuple[float, float]:
    """steplog's own Run.log of the same dicts, then Run.end: what any binding builds on."""
    import steplog

    with steplog.open(os.path.join(root, "plain")) as store:
        run = store.start_run(capture=False)
        run.log(pool[0], step=0)
        clock = Clock()
        clock.start()
        for step in range(1, steps + 1):
            run.log(dict(pool[step % 1000]), step=step)
        run.end()
        return clock.stop(steps)


def lightning_logger_steps(logger, steps: int, pool: list) -> tuple[float, float]:
    """log_metrics + save per step, as LoggerConnector.log_metrics calls them, then finalize."""
    logger.log_metrics(pool[0], step=0)   # the run, file or writer is made before the clock starts
    clock = Clock()
    clock.start()
    for step in range(1, steps + 1):
        logger.log_metrics(dict(pool[step % 1000]), step=step)
        logger.save()
    logger.finalize("success")
    return clock.stop(steps)


def lightning_per_step(root: str, steps: int, repeats: int) -> list[tuple]:
    pool = metric_dicts(1000)
    backends = lightning_backends(root)
    samples: dict[str, list] = {"(steplog Run.log)": [], **{name: [] for name in backends}}
    for repeat in range(repeats):
        samples["(steplog Run.log)"].append(run_log_steps(root, steps, pool))
        for name, make in backends.items():
            samples[name].append(lightning_logger_steps(make(f"per_step{repeat}"), steps, pool))
    return per_step_rows(samples)


def lightning_model(log_scalars: bool):
    import torch
    from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset

    class TenMillisecondStep(BoringModel):
        def training_step(self, batch, batch_idx):
            spin(STEP_SECONDS)
            out = super().training_step(batch, batch_idx)
            if log_scalars:
                loss = out["loss"].detach()
                self.log_dict({f"m{k:02d}": loss + k for k in range(SCALARS)}, on_step=True, on_epoch=False)
            return out

        def train_dataloader(self):
            return torch.utils.data.DataLoader(RandomDataset(32, 64), batch_size=1)

    return TenMillisecondStep()


def lightning_fit_seconds(logger, steps: int) -> float:
    from lightning.pytorch import Callback, Trainer

    class StepClock(Callback):
        """Times the steps after the first 10 (warm-up), logging included: Lightning
        logs a step's metrics after on_train_batch_end, before the next batch starts."""

        def __init__(self):
            self.clock, self.seen = Clock(), 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen += 1
            if self.seen == 11:
                self.clock.start()
            elif self.seen == steps + 11:
                self.per_step = self.clock.stop(steps)

    clock = StepClock()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps + 12, limit_val_batches=0, log_every_n_steps=1,
                      logger=logger if logger is not None else False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                      default_root_dir=tempfile.mkdtemp())
    trainer.fit(lightning_model(log_scalars=True))
    return clock.per_step


def no_op_logger():
    """A Logger that keeps nothing: with any logger at all Lightning converts each
    step's tensors to numbers (a .item() per metric), which logger=False skips."""
    from lightning.pytorch.loggers.logger import Logger

    class NoOpLogger(Logger):
        name, version = "no-op", 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    return NoOpLogger()


def lightning_end_to_end(root: str, steps: int, repeats: int) -> list[tuple]:
    backends = {"no-op Logger": lambda tag: no_op_logger(), "logger=False": lambda tag: None,
                **lightning_backends(root)}
    samples: dict[str, list[float]] = {name: [] for name in backends}
    for repeat in range(repeats):
        for name, make in backends.items():
            samples[name].append(lightning_fit_seconds(make(f"fit{repeat}"), steps))
    return end_to_end_rows(samples, "no-op Logger")


def end_to_end_rows(samples: dict, baseline: str) -> list[tuple]:
    """name, wall ms/step, CPU ms/step, CPU added over the baseline (%), medians over repeats."""
    base = statistics.median(v[1] for v in samples[baseline])
    rows = []
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        rows.append((name, wall * 1e3, cpu * 1e3, (cpu - base) / base * 100))
    return rows


# -- transformers --------------------------------------------------------------------

def hf_callbacks(root: str) -> dict:
    from steplog.bindings.transformers import SteplogCallback

    backends = {"SteplogCallback": lambda: SteplogCallback(os.path.join(root, "steplog"), capture=False)}
    with contextlib.suppress(ImportError, RuntimeError):
        from transformers.integrations import TensorBoardCallback

        TensorBoardCallback()   # raises without tensorboard or tensorboardX
        backends["TensorBoardCallback"] = TensorBoardCallback
    return backends


def hf_callback_steps(callback, args, steps: int, pool: list) -> tuple[float, float]:
    """on_log per step as CallbackHandler calls it (20 scalars at state.global_step), then on_train_end."""
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=None)
    clock = Clock()
    clock.start()
    for step in range(1, steps + 1):
        state.global_step = step
        callback.on_log(args, state, control, logs=dict(pool[step % 1000]), model=None)
    callback.on_train_end(args, state, control)
    return clock.stop(steps)


def hf_per_step(root: str, steps: int, repeats: int) -> list[tuple]:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=os.path.join(root, "hf"), report_to="none", use_cpu=True)
    pool = metric_dicts(1000)
    backends = hf_callbacks(root)
    samples: dict[str, list] = {"(steplog Run.log)": [], **{name: [] for name in backends}}
    for _ in range(repeats):
        samples["(steplog Run.log)"].append(run_log_steps(root, steps, pool))
        for name, make in backends.items():
            samples[name].append(hf_callback_steps(make(), args, steps, pool))
    return per_step_rows(samples)


def hf_fit_seconds(callbacks: list, steps: int, root: str) -> float:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    class TenMillisecondModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(32, 1)

        def forward(self, x, labels=None):
            spin(STEP_SECONDS)
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    class TwentyScalars(Trainer):
        def log(self, logs, start_time=None):
            if "loss" in logs:   # a step's log: loss, grad_norm, learning_rate and epoch, plus 16
                logs.update({f"m{k:02d}": logs["loss"] + k for k in range(SCALARS - 4)})
            super().log(logs, start_time)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.clock, self.seen = Clock(), 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.seen += 1
            if self.seen == 11:
                self.clock.start()
            elif self.seen == steps + 11:
                self.per_step = self.clock.stop(steps)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return steps + 12

        def __getitem__(self, i):
            return {"x": torch.randn(32), "labels": torch.tensor(0.0)}

    clock = StepClock()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(dir=root), max_steps=steps + 12, logging_steps=1,
                             per_device_train_batch_size=1, report_to="none", save_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    trainer = TwentyScalars(model=TenMillisecondModel(), args=args, train_dataset=Rows(),
                            callbacks=[clock, *callbacks])
    trainer.remove_callback(PrinterCallback)   # no console output in any of the fits
    trainer.train()
    return clock.per_step


def hf_end_to_end(root: str, steps: int, repeats: int) -> list[tuple]:
    backends = {"report_to none": lambda: [], **{name: (lambda make=make: [make()])
                                                  for name, make in hf_callbacks(root).items()}}
    samples: dict[str, list] = {name: [] for name in backends}
    for _ in range(repeats):
        for name, make in backends.items():
            samples[name].append(hf_fit_seconds(make(), steps, root))
    return end_to_end_rows(samples, "report_to none")


# -- report --------------------------------------------------------------------------

def print_per_step(title: str, rows: list[tuple], steps: int, repeats: int) -> None:
    print(f"\n{title}: the logging calls of one step (20 scalars) alone, {steps} steps, "
          f"median of {repeats} interleaved repeats; CPU: every thread of the process")
    print(f"  {'backend':<22}{'wall us':>10}{'CPU us':>10}{'CPU of 10 ms':>14}")
    for name, wall, cpu, share in rows:
        print(f"  {name:<22}{wall:>10.1f}{cpu:>10.1f}{share:>13.2f}%")


def print_end_to_end(title: str, rows: list[tuple], steps: int, repeats: int) -> None:
    print(f"\n{title}: a training step of 10 ms CPU logging 20 scalars, {steps} steps, "
          f"median of {repeats} interleaved fits")
    print(f"  {'backend':<22}{'wall ms':>10}{'CPU ms':>10}{'CPU added':>11}   (added: over the first row)")
    for name, wall, cpu, added in rows:
        print(f"  {name:<22}{wall:>10.3f}{cpu:>10.3f}{added:>+10.2f}%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("lightning", "transformers"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    options = parser.parse_args(argv)
    calls, steps, repeats = (2_000, 100, 3) if options.quick else (5_000, 200, 5)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)   # no idle OpenMP workers spinning into the process CPU time
    logging.disable(logging.WARNING)   # Lightning's and transformers' tips and notices
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as root:
        if options.only in (None, "lightning"):
            print_per_step("Lightning", lightning_per_step(root, calls, repeats), calls, repeats)
            print_end_to_end("Lightning", lightning_end_to_end(root, steps, repeats), steps, repeats)
        if options.only in (None, "transformers"):
            print_per_step("transformers", hf_per_step(root, calls, repeats), calls, repeats)
            print_end_to_end("transformers", hf_end_to_end(root, steps, repeats), steps, repeats)
    print(f"\nload average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
