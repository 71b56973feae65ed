"""Ingest workloads with several writer processes, and the cost of each durability
setting. Used by ``steplog bench`` and benchmarks/test_processes.py."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

import steplog
from steplog.engine.twins import use_kernels

MODES = ("per-call", "batched")


def _writer(path: str, mode: str, points: int, ready, go, rank: int) -> float:
    """One writer process: its own run; returns the seconds from ``go`` to flushed."""
    with steplog.open(path) as store:
        run = store.start_run(experiment="procs", name=f"writer-{rank}")
        values = np.random.default_rng(rank).random(points)
        use_kernels()                     # the timed work is large: the numba kernels, not their twins
        run.log_batch("warm-up", np.arange(8), values[:8])
        run.flush()                       # kernels loaded before the clock starts
        ready.wait()
        go.wait()
        began = time.perf_counter()
        if mode == "per-call":
            log = run.log
            for step, value in enumerate(values.tolist()):
                log("loss", value, step=step)
        else:
            run.log_batch("loss", np.arange(points), values)
        run.flush()
        return time.perf_counter() - began


def process_ingest(path: str, processes: int, mode: str, points: int) -> float:
    """Aggregate points per second of ``processes`` writers logging ``points`` each at
    once, from the common start to the last flush."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        ready, go = manager.Barrier(processes + 1), manager.Barrier(processes + 1)
        with context.Pool(processes) as pool:
            pending = pool.starmap_async(_writer, [(path, mode, points, ready, go, r) for r in range(processes)])
            ready.wait()
            began = time.perf_counter()
            go.wait()
            pending.get(timeout=600)
            elapsed = time.perf_counter() - began
    with steplog.open(path) as store:
        counts = [store.metrics(r).to_pydict() for r in store.runs().column("id").to_pylist()]
    written = sum(c["count"][c["metric"].index("loss")] for c in counts if "loss" in c["metric"])
    if written < processes * points:
        raise AssertionError(f"{written} points stored of {processes * points} written")
    return processes * points / elapsed


def durability_cost(path: str, durability: str, flushes: int, points_per_flush: int) -> float:
    """Seconds per ``flush()`` of ``points_per_flush`` points logged one by one."""
    with steplog.open(path, durability=durability) as store:
        run = store.start_run()
        use_kernels()
        run.log("warm-up", 0.0)
        run.flush()
        began = time.perf_counter()
        step = 0
        for _ in range(flushes):
            for _ in range(points_per_flush):
                run.log("loss", 0.5, step=step)
                step += 1
            run.flush()
        return (time.perf_counter() - began) / flushes
