"""A numba compile that takes longer than STEPLOG_COMPILE_NOTE_SECONDS says so once on
stderr (engine/jit.py); a quick one, or a load from the cache, says nothing.

Each case runs in a child process, whose stderr is what a user sees; the threshold is
lowered there so that a compile of a tiny kernel (a fraction of a second) counts as slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

NOTE = "steplog: compiling"


def run_child(code: str, threshold: str, cache_dir=None) -> str:
    env = dict(os.environ, STEPLOG_COMPILE_NOTE_SECONDS=threshold)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


TINY = """
    import numba as nb, numpy as np
    from steplog.engine.jit import announce

    @nb.njit(cache=False)
    def total(x):
        s = x[0]
        for v in x:
            s += v
        return s

    announce(total, "test", lambda x: str(x.dtype))
    total(np.ones(3))
    total(np.ones(5))                 # compiled already: no note
    total(np.ones(3, np.int32))       # a new dtype: a note of its own
    total(np.ones(3, np.int32))
"""


def test_a_slow_compile_says_so_once_per_kind():
    lines = [line for line in run_child(TINY, "0.01").splitlines() if line.startswith(NOTE)]
    assert lines == ["steplog: compiling test kernels for float64 (first use, cached afterwards)...",
                     "steplog: compiling test kernels for int32 (first use, cached afterwards)..."]


def test_a_quick_compile_says_nothing():
    assert NOTE not in run_child(TINY, "60")


STORE = """
    import sys, tempfile, numpy as np, steplog
    with steplog.open(tempfile.mkdtemp() + "/s") as store:
        run = store.start_run()
        run.log("loss", 0.5, step=0)
        run.log_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4), step=0)
        run.log_tensor("w", np.ones(7, np.float32), step=1)
        run.flush()
        store.read(run.id, "loss", buckets=10)
        store.read(run.id, "loss", buckets=10, method="lttb")
"""


@pytest.mark.slow
def test_the_store_kernels_say_so_and_a_warm_cache_is_silent(tmp_path):
    cache = tmp_path / "numba-cache"
    first = [line for line in run_child(STORE, "0.3", cache).splitlines() if line.startswith(NOTE)]
    assert "steplog: compiling tensor-summary kernels for float32 (first use, cached afterwards)..." in first
    assert any("block codec" in line for line in first)
    assert len(first) == len(set(first))
    assert NOTE not in run_child(STORE, "1", cache)     # loaded from the cache the first child filled


@pytest.mark.slow
def test_the_install_warm_up_leaves_first_use_silent(tmp_path):
    """engine/jit.warm_up (the Makefile's install step) fills the cache that a first
    script's flush, summaries, LTTB read and tensor read then load instead of compiling."""
    cache = tmp_path / "numba-cache"
    warm = "from steplog.engine.jit import warm_up; assert warm_up(dtypes=('int8',), jobs=2)"
    run_child(warm, "1000", cache)
    assert NOTE not in run_child(STORE, "1", cache)     # (a cache load takes well under 1 s)
    assert NOTE not in run_child("""
        import numpy as np
        from steplog.engine.summary import summarize
        summarize(np.arange(5, dtype=np.int8))
    """, "1", cache)
