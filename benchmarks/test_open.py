"""Day-one opens: the same path opened a second time in a process (target <= 1 ms), and
a short script in a fresh process with a warm kernel cache: import steplog, open a
store, log one point, close (target <= 0.3 s).

    .venv/bin/python -m pytest benchmarks/test_open.py --benchmark-only
"""

from __future__ import annotations

import os
import subprocess
import sys

import steplog

SHORT_SCRIPT = """
import sys, steplog
with steplog.open(sys.argv[1]) as store:
    with store.start_run() as run:
        run.log("loss", 0.5, step=0)
"""


def test_second_open_of_a_path(benchmark, tmp_path):
    first = steplog.open(tmp_path / "s")
    try:
        def reopen():
            steplog.open(tmp_path / "s").close()

        benchmark(reopen)
        assert first.runs().num_rows == 0   # the first handle still works
    finally:
        first.close()


def test_short_script_in_a_fresh_process(benchmark, tmp_path):
    path = str(tmp_path / "s")
    # The first run fills the caches: numba's kernels (should a script need them) and
    # the .pyc files, which PYTHONDONTWRITEBYTECODE in the environment would keep it from
    # writing (every later run would compile steplog's modules again, 0.1 s).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", SHORT_SCRIPT, path], check=True, env=env)

    def script():
        subprocess.run([sys.executable, "-c", SHORT_SCRIPT, path], check=True)

    benchmark.pedantic(script, rounds=5, iterations=1)
    with steplog.open(path, mode="r") as store:
        statuses = store.runs().column("status").to_pylist()
    assert len(statuses) >= 2 and set(statuses) == {"finished"}
