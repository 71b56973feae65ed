"""``steplog demo``: a hyper-parameter sweep written by concurrent processes, then queried."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time

import numpy as np

import steplog

TRIALS = [{"lr": lr, "batch_size": bs, "optimizer": opt}
          for lr, bs, opt in [(0.3, 256, "sgd"), (0.1, 256, "sgd"), (0.03, 256, "sgd"), (0.01, 128, "sgd"),
                              (3e-3, 128, "adam"), (1e-3, 128, "adam"), (3e-4, 64, "adam"), (1e-4, 64, "adam")]]
CHUNK = 10_000
EVAL_EVERY = 2_000
MARKER = ".steplog-demo"


def curves(params: dict, steps: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible training curves: faster but noisier descent for larger learning rates."""
    total = steps[-1] + 1 if len(steps) else 1
    lr = params["lr"] * 0.5 * (1 + np.cos(np.pi * steps / (2 * total)))          # cosine decay
    speed = min(1.0, 30 * params["lr"]) if params["optimizer"] == "sgd" else min(1.0, 300 * params["lr"])
    progress = 1 - np.exp(-steps * speed / 40_000)
    floor = 0.15 + 0.3 * abs(np.log10(params["lr"]) + 2.5) / 2
    noise = rng.standard_normal(len(steps)) * (0.02 + 0.2 * params["lr"])
    loss = np.float32(2.3 * (1 - progress) + floor * progress + noise * (1 - 0.5 * progress))
    accuracy = np.float32(np.clip(0.1 + 0.88 * progress * (1 - floor / 2) + noise / 10, 0, 1))
    return {"loss": loss.astype(np.float64), "accuracy": accuracy.astype(np.float64), "lr": lr}


_logged = None   # in a trial process: the shared count of points logged, for the progress bar


def _share_count(count) -> None:
    global _logged
    _logged = count


def trial(path: str, params: dict, steps_per_trial: int, seed: int) -> tuple[str, int]:
    """One trial in its own process: log_batch per chunk of steps, an eval point per EVAL_EVERY."""
    rng = np.random.default_rng(seed)
    points = 0
    with steplog.open(path) as store:
        with store.start_run(experiment="demo-sweep", name=f"lr={params['lr']:g}", params=params,
                             tags={"team": "demo", "dataset": "synthetic"}) as run:
            for lo in range(0, steps_per_trial, CHUNK):
                steps = np.arange(lo, min(lo + CHUNK, steps_per_trial), dtype=np.int64)
                for name, values in curves(params, steps, rng).items():
                    run.log_batch(name, steps, values)
                    points += len(steps)
                for step in steps[steps % EVAL_EVERY == 0]:
                    run.log("loss", float(curves(params, np.array([step]), rng)["loss"][0]) + 0.05,
                            step=int(step), context={"subset": "val"})
                    points += 1
                if _logged is not None:
                    with _logged.get_lock():
                        _logged.value += 3 * len(steps)
            return run.id, points


def warm_up(path: str) -> None:
    """Compile the kernels once, here, so that the trial processes load them from the
    cache instead of all compiling them at once (the first run after install)."""
    began = time.perf_counter()
    scratch = os.path.join(path, ".warm-up")
    with steplog.open(scratch) as store:
        run = store.start_run()
        run.log_batch("x", np.arange(1000), np.random.default_rng(0).random(1000))
        run.flush()
        store.read(run.id, "x", buckets=10)
    shutil.rmtree(scratch)
    if time.perf_counter() - began > 2:
        print(f"compiled the numba kernels in {time.perf_counter() - began:.0f} s (cached from now on)")


def run_trials(path: str, steps_per_trial: int, progress=None) -> list[tuple[str, int]]:
    """Every trial in a process of its own; (run id, points) of each, in TRIALS order."""
    context = multiprocessing.get_context("spawn")
    logged = context.Value("q", 0) if progress is not None else None
    with context.Pool(len(TRIALS), initializer=_share_count, initargs=(logged,)) as pool:
        pending = pool.starmap_async(trial, [(path, p, steps_per_trial, i) for i, p in enumerate(TRIALS)])
        while progress is not None and not pending.ready():
            progress(logged.value, 3 * steps_per_trial * len(TRIALS))
            pending.wait(0.1)
        return pending.get()


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.1f} M points/s"
    return f"{per_second:,.0f} points/s"


def store_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def run_demo(path: str, total_points: int, progress=None) -> int:
    """The demo; ``progress(done, total)`` (optional) is called as the trials log."""
    if os.path.exists(path):
        if not os.path.exists(os.path.join(path, MARKER)):
            print(f"{path} exists and is not a demo store; choose another --store")
            return 2
        shutil.rmtree(path)
    steplog.open(path).close()   # an empty store, then the mark that lets the next demo replace it
    open(os.path.join(path, MARKER), "w").close()
    steps_per_trial = max(1, total_points // (3 * len(TRIALS)))
    print(f"steplog demo: {len(TRIALS)} trials in {len(TRIALS)} processes, {steps_per_trial:,} steps each, "
          f"3 metrics per step, into {path}")
    warm_up(path)
    started = time.perf_counter()
    results = run_trials(path, steps_per_trial, progress)
    elapsed = time.perf_counter() - started
    points = sum(n for _, n in results)
    print(f"ingest: {points:,} points in {elapsed:.1f} s = {_rate(points / elapsed)} "
          f"(process start-up included)")
    print(f"on disk: {store_bytes(path) / points:.2f} bytes per point, index included")
    with steplog.open(path) as store:
        show_reads(store, results[0][0], steps_per_trial)
        show_trials(store)
    print(f"\nthe store is left at {path}: steplog.open({path!r})")
    return 0


def show_reads(store: steplog.Store, run_id: str, steps: int) -> None:
    print("\nrange reads (first trial, 'loss'):")
    began = time.perf_counter()
    store.read(run_id, "loss", start=0, stop=1)
    store.read(run_id, "loss", start=0, stop=10, buckets=2)
    print(f"  first reads of the process (load the compiled kernels): {(time.perf_counter() - began) * 1e3:.0f} ms")
    for start, stop in [(0, 1_000), (steps // 2, steps // 2 + 1_000), (steps // 2, steps // 2 + 100_000), (None, None)]:
        began = time.perf_counter()
        table = store.read(run_id, "loss", start=start, stop=stop)
        ms = (time.perf_counter() - began) * 1e3
        label = "whole series" if start is None else f"steps [{start:,}, {stop:,})"
        print(f"  {label:<28} {table.num_rows:>10,} points in {ms:8.2f} ms")
    began = time.perf_counter()
    table = store.read(run_id, "loss", buckets=1000)
    ms = (time.perf_counter() - began) * 1e3
    print(f"  {'1,000 min/max buckets':<28} {table.num_rows:>10,} rows   in {ms:8.2f} ms")


def show_trials(store: steplog.Store) -> None:
    runs = store.runs().to_pylist()
    print(f"\n{'trial':<12} {'optimizer':<9} {'batch':>5} {'status':<9} {'final loss':>10} {'val loss':>9}")
    for row in sorted(runs, key=lambda r: r["params.lr"], reverse=True):
        final = store.read(row["id"], "loss", start=None).column("value")
        val = store.read(row["id"], "loss", context={"subset": "val"}).column("value")
        print(f"{row['name']:<12} {row['params.optimizer']:<9} {row['params.batch_size']:>5} {row['status']:<9} "
              f"{final[-1].as_py():>10.4f} {val[-1].as_py():>9.4f}")
