"""Reopening a store after a writer was killed: 1,000 runs and 100 M points (full size;
20 runs and 200 k points under --benchmark-disable). Target: <= 1 s to open the store and
read from it.

    .venv/bin/python -m pytest benchmarks/test_reopen.py --benchmark-only
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

import steplog

KILLED_WRITER = """
import sys, numpy as np, steplog
store = steplog.open(sys.argv[1], flush_interval=None)
run = store.start_run(name="killed")
print("ready", flush=True)
for lo in range(0, 10**9, 8192):          # logs until it is killed, mid-append or mid-commit
    run.log_batch("loss", np.arange(lo, lo + 8192), np.ones(8192))
"""


def build(path: str, runs: int, points: int) -> None:
    with steplog.open(path) as store:
        values = np.random.default_rng(0).random(points // runs)
        steps = np.arange(points // runs)
        for k in range(runs):
            store.start_run(experiment="many", params={"k": k}).log_batch("loss", steps, values)
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, path], stdout=subprocess.PIPE)
    assert child.stdout.readline().startswith(b"ready")
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()


def test_reopen_after_crash(benchmark, tmp_path):
    full = os.environ.get("STEPLOG_BENCH_SIZE", "full" if benchmark.enabled else "tiny") == "full"
    runs, points = (1_000, 100_000_000) if full else (20, 200_000)
    path = str(tmp_path / "store")
    build(path, runs, points)
    first_run = []

    def reopen():
        with steplog.open(path) as store:
            table = store.runs()
            first_run.append(store.read(table.column("id")[0].as_py(), "loss", start=0, stop=1000).num_rows)
            return table

    table = benchmark.pedantic(reopen, rounds=3 if benchmark.enabled else 1)
    assert table.num_rows == runs + 1
    assert "crashed" in table.column("status").to_pylist()
    assert first_run[-1] == 1000
