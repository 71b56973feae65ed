"""Faults that must stay contained: a series refused by another process's kind, a
flusher whose index fails, reads racing big index writes, a store killed while it is
being created, and bounds on tensor histograms.

Every child is a real process with a timeout on every wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import steplog

from _helpers import assert_points

TIMEOUT = 90


def run_script(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT)


# -- a name of the other kind, made first by another process ------------------------------

TENSOR_FIRST = r'''
import sys
import numpy as np
import steplog
with steplog.open(sys.argv[1], flush_interval=None) as store:
    store.run(sys.argv[2]).log_tensor("x", np.arange(10.0), step=0)
'''


def test_a_series_refused_for_its_kind_harms_no_other_series(open_store, store_path):
    store = open_store()
    shared, other = store.start_run(name="shared"), store.start_run(name="other")
    shared.log("x", 1.0, step=0)                 # a scalar here, not flushed yet
    shared.log("loss", 0.5, step=0)
    other.log("y", 2.0, step=0)                  # a point of a different run in the same flush
    child = run_script(TENSOR_FIRST, str(store_path), shared.id)   # there, "x" becomes a tensor first
    assert child.returncode == 0, child.stderr
    with pytest.raises(steplog.InvalidArgumentError) as info:
        store.flush()
    assert info.value.argument == "name" and "'x'" in str(info.value)
    store.flush()                                # told once; the writer is not poisoned
    assert store.read(other.id, "y").column("value").to_pylist() == [2.0]
    assert store.read(shared.id, "loss").column("value").to_pylist() == [0.5]
    other.log("y", 3.0, step=1)
    store.flush()
    assert store.read(other.id, "y").column("value").to_pylist() == [2.0, 3.0]
    shared.end()
    other.end()
    store.close()                                # closes cleanly
    again = open_store()
    statuses = {r["name"]: r["status"] for r in again.runs().to_pylist()}
    assert statuses == {"shared": "finished", "other": "finished"}
    assert again.read_tensor(shared.id, "x").column("count").to_pylist() == [10.0]
    assert again.read(other.id, "y").column("value").to_pylist() == [2.0, 3.0]


@pytest.mark.parametrize("bins, edges", [(2**24, None), (2**14 + 1, None), (None, np.arange(2**14 + 2.0))])
def test_histograms_beyond_what_a_block_holds_are_refused_at_the_call(store, bins, edges):
    run = store.start_run()
    kwargs = {"edges": edges} if bins is None else {"bins": bins}
    with pytest.raises(steplog.InvalidArgumentError) as info:
        run.log_tensor("w", np.ones(100), step=0, **kwargs)
    assert info.value.argument == ("bins" if bins else "edges")
    run.log_tensor("w", np.ones(100), step=0, bins=2**14)     # the largest accepted
    store.flush()
    assert store.read_tensor(run.id, "w").column("count").to_pylist() == [100.0]


# -- a flusher whose index fails: waits end, they do not hang ------------------------------

def test_flush_returns_with_an_error_when_the_index_fails_under_it(open_store, monkeypatch):
    import steplog.engine.writer as writer_module

    monkeypatch.setattr(writer_module, "HEARTBEAT_SECONDS", 0.01)   # heartbeats fail first
    store = open_store()
    run = store.start_run()
    run.log("m", 1.0, step=0)
    store.flush()
    store._index.env.close()                    # every index write from now on fails
    time.sleep(0.2)                             # several heartbeats fail meanwhile
    run.log("m", 2.0, step=1)
    outcome = []

    def flush():
        try:
            store.flush()
            outcome.append("returned")
        except steplog.StepLogError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=flush, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "flush() hung after the index failed"
    assert isinstance(outcome[0], steplog.StepLogError), outcome


# -- reads racing large index writes ------------------------------------------------------

def test_reads_racing_index_growth_see_only_whole_commits(open_store):
    store = open_store()
    run = store.start_run()
    run.log_batch("m", np.arange(1000), np.arange(1000.0))
    store.flush()
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                assert_points(store.read(run.id, "m", stop=1000), np.arange(1000), np.arange(1000.0))
                store.runs()
                reads[0] += 1
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        blob = {f"blob{j}": "x" * 7_000 for j in range(34)}   # near the limit of a run's params
        for i in range(340):                    # about 80 MB of run records through the index
            store.start_run(name=f"big{i}", params={**blob, "i": i})
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not errors, errors[0]
    assert reads[0] > 0
    assert store.runs().num_rows == 341


# -- a store killed while it is being created ---------------------------------------------

CREATE = r'''
import sys
import steplog
steplog.open(sys.argv[1]).close()
'''


def test_a_store_killed_during_creation_is_absent_or_whole(tmp_path):
    rng = np.random.default_rng(5)
    for attempt in range(12):
        path = tmp_path / f"s{attempt}.steplog"
        child = subprocess.Popen([sys.executable, "-c", CREATE, str(path)])
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path.exists() and any(p.name.startswith(f".s{attempt}.") or p.name == path.name
                                            for p in tmp_path.iterdir())):
            if child.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        time.sleep(float(rng.uniform(0, 0.02)))
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
        if path.exists():                       # whole: it opens and takes writes
            with steplog.open(path) as store:
                run = store.start_run()
                run.log("m", 1.0, step=0)
                store.flush()
                assert store.read(run.id, "m").num_rows == 1
        with steplog.open(path) as store:       # absent: created now
            assert store.runs().num_rows <= 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".new") for name in leftovers), leftovers


def test_an_index_directory_without_its_data_file_is_reported_not_recreated(tmp_path):
    path = tmp_path / "s.steplog"
    with steplog.open(path) as store:
        run = store.start_run()
        run.log("m", 1.0, step=0)
    os.remove(path / "index" / "data.mdb")
    with pytest.raises(steplog.CorruptionError, match="repair"):
        steplog.open(path)


# -- opening a store many times does not grow its files -----------------------------------

def test_writers_one_after_another_reuse_a_segment(tmp_path):
    path = tmp_path / "s.steplog"
    ids = []
    for i in range(30):
        with steplog.open(path, flush_interval=None) as store:
            run = store.start_run(name=f"r{i}")
            run.log_batch("m", np.arange(100), np.full(100, float(i)))
            ids.append(run.id)
    assert len(os.listdir(path / "segments")) == 1
    with steplog.open(path) as store:
        for i, run_id in enumerate(ids):
            assert_points(store.read(run_id, "m"), np.arange(100), np.full(100, float(i)))
