"""Processes: fork with an open store, writers that die holding locks, run statuses.

Every child is a real process (``python -c``) with a timeout on every wait; forks
happen inside such a child, never in the test process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import numpy as np
import pytest

import steplog

from _helpers import assert_points

TIMEOUT = 90


def run_script(code: str, *args: str, timeout: float = TIMEOUT) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


class Background:
    """A child process that prints one line when it is set up, then waits to be killed."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        assert ready, "child did not get ready in time"
        self.line = self.proc.stdout.readline().strip()
        assert self.line, f"child died: {self.proc.stderr.read()[-3000:]}"

    def kill(self, sig=signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=TIMEOUT)   # reaped: its pid no longer exists

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


@pytest.fixture
def background():
    started: list[Background] = []

    def start(code: str, *args: str) -> Background:
        started.append(Background(code, *args))
        return started[-1]

    yield start
    for child in started:
        child.close()


# -- fork -----------------------------------------------------------------------------------

FORK = r'''
import json, os, select, sys
import numpy as np
import steplog

path = sys.argv[1]
store = steplog.open(path, block_points=64, flush_interval=None)
run = store.start_run(name="parent")
run.log_batch("m", np.arange(100), np.arange(100) * 1.0)
store.flush()
for i in range(100, 110):          # logged before the fork, not flushed: the child inherits them
    run.log("m", float(i), step=i)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    report = {}

    def attempt(label, fn):
        try:
            fn()
            report[label] = ["ok", ""]
        except Exception as exc:
            report[label] = [type(exc).__module__ + "." + type(exc).__name__, str(exc),
                             isinstance(exc, steplog.StepLogError)]

    attempt("read", lambda: store.read(run.id, "m"))
    attempt("runs", store.runs)
    attempt("metrics", lambda: store.metrics(run.id))
    attempt("start_run", store.start_run)
    attempt("run", lambda: store.run(run.id))
    attempt("log_cached", lambda: run.log("m", -1.0, step=999))
    attempt("log_new", lambda: run.log("child-only", -1.0, step=0))
    attempt("log_batch", lambda: run.log_batch("m", [1000], [-1.0]))
    attempt("flush", store.flush)
    attempt("run_flush", run.flush)
    attempt("end", run.end)
    attempt("log_params", lambda: run.log_params({"child": 1}))
    attempt("close", store.close)

    def reopen():
        with steplog.open(path, block_points=64, flush_interval=None) as again:
            child = again.start_run(name="child")
            child.log_batch("c", np.arange(50), np.arange(50) * 2.0)
            child.log("c", 7.0, step=50)
            again.flush()
            assert len(again.read(child.id, "c")) == 51
            assert len(again.read(run.id, "m")) >= 100
            report["child_run"] = child.id
            child.end()

    attempt("reopen", reopen)
    os.write(w, json.dumps(report).encode())
    os.close(w)
    sys.exit(0)                     # a normal exit: the exit handlers run in the child
os.close(w)
chunks = []
while True:
    ready, _, _ = select.select([r], [], [], 60)
    if not ready:
        os.kill(pid, 9)
        raise SystemExit("the child hangs")
    chunk = os.read(r, 65536)
    if not chunk:
        break
    chunks.append(chunk)
_, status = os.waitpid(pid, 0)
for i in range(110, 120):           # the parent keeps working
    run.log("m", float(i), step=i)
store.flush()
assert len(store.read(run.id, "m")) == 120
run.end()
store.close()
print(json.dumps({"child": json.loads(b"".join(chunks)), "status": status, "run_id": run.id}))
'''

STORE_METHODS = ("read", "runs", "metrics", "start_run", "run", "flush", "run_flush", "end", "log_params")
LOG_METHODS = ("log_cached", "log_new", "log_batch")


def test_fork_child_gets_closed_error_then_reopens_and_parent_keeps_working(tmp_path):
    path = str(tmp_path / "store.steplog")
    out = json.loads(run_script(FORK, path).strip().splitlines()[-1])
    child, status = out["child"], out["status"]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    problems = []
    if child["reopen"] != ["ok", ""]:
        problems.append(f"steplog.open() again in the child failed: {child['reopen']}")
    for label in STORE_METHODS:
        kind, message, *_ = child[label]
        if kind != "steplog.engine.errors.ClosedError" or "open" not in message or "fork" not in message:
            problems.append(f"{label} in the child: {child[label]} (want a ClosedError that says to open again)")
    for label in LOG_METHODS:   # logging may be refused at once; it must never fail otherwise
        if child[label][0] not in ("ok", "steplog.engine.errors.ClosedError"):
            problems.append(f"{label} in the child: {child[label]}")
    if child["close"] != ["ok", ""]:
        problems.append(f"close in the child: {child['close']}")
    assert not problems, "\n".join(problems)

    with steplog.open(path) as store:
        # the parent's points exactly once: the child never wrote the inherited buffers
        assert_points(store.read(out["run_id"], "m"), np.arange(120), np.arange(120) * 1.0)
        assert len(store.read(out["run_id"], "child-only", missing_ok=True)) == 0
        assert_points(store.read(child["child_run"], "c"), np.arange(51), np.r_[np.arange(50) * 2.0, 7.0])
        statuses = {r["name"]: r["status"] for r in store.runs().to_pylist()}
        assert statuses == {"parent": "finished", "child": "finished"}
        assert "params.child" not in store.runs().column_names


# -- writers that die ---------------------------------------------------------------------

HOLDER = r'''
import sys, time
import numpy as np
import steplog

path, hold = sys.argv[1], sys.argv[2]
store = steplog.open(path, block_points=64, flush_interval=None)
run = store.start_run(name="victim-" + hold)
run.log_batch("m", np.arange(500), np.arange(500) * 0.5)
store.flush()
for i in range(500, 520):          # unflushed when it dies
    run.log("m", 0.0, step=i)
if hold == "write_txn":            # dies inside an LMDB write transaction: it holds the writer lock
    def hang(txn):
        print(run.id, flush=True)
        time.sleep(120)
    store._index.write(hang)
elif hold == "read_txn":           # dies holding a reader slot
    txn = store._index.read()
    print(run.id, flush=True)
    time.sleep(120)
else:                              # dies idle, holding its segment's lock
    print(run.id, flush=True)
    time.sleep(120)
'''

WRITE_AT_ONCE = r'''
import json, sys, time
import numpy as np
import steplog

began = time.monotonic()
with steplog.open(sys.argv[1], flush_interval=None) as store:
    run = store.start_run(name="after")
    run.log_batch("m", np.arange(1000), np.arange(1000) * 3.0)
    run.log("m", 1.0, step=1000)
    store.flush()
    assert len(store.read(run.id, "m")) == 1001
    run.end()
print(json.dumps({"seconds": time.monotonic() - began, "run_id": run.id}))
'''


@pytest.mark.parametrize("hold", ["idle", "write_txn", "read_txn"])
def test_sigkilled_writer_blocks_nobody(tmp_path, background, hold):
    path = str(tmp_path / "store.steplog")
    victim = background(HOLDER, path, hold)
    victim.kill()
    # another process opens, writes and flushes at once (a timeout, not a hang, on failure)
    out = json.loads(run_script(WRITE_AT_ONCE, path, timeout=60).strip().splitlines()[-1])
    assert out["seconds"] < 20, f"took {out['seconds']:.1f}s"
    with steplog.open(path) as store:
        assert_points(store.read(victim.line, "m"), np.arange(500), np.arange(500) * 0.5)
        statuses = {r["name"]: r["status"] for r in store.runs().to_pylist()}
        assert statuses == {f"victim-{hold}": "crashed", "after": "finished"}
        run = store.run(victim.line)     # the crashed run can be resumed
        run.log("m", 9.0, step=600)
        store.flush()
        assert len(store.read(victim.line, "m")) == 501
        run.end()
        assert {r["status"] for r in store.runs().to_pylist()} == {"finished"}


STATUS_CHILD = r'''
import sys, time
import numpy as np
import steplog

path, kind = sys.argv[1], sys.argv[2]
store = steplog.open(path, flush_interval=None)
if kind == "failed":
    try:
        with store.start_run(name=kind) as run:
            run.log("m", 1.0, step=0)
            raise RuntimeError("training blew up")
    except RuntimeError:
        pass
    print(run.id, flush=True)
    store.close()
    sys.exit(0)
run = store.start_run(name=kind)
run.log_batch("m", np.arange(100), np.ones(100))
if kind == "finished":
    run.end()
    store.close()
    print(run.id, flush=True)
    sys.exit(0)
store.flush()
print(run.id, flush=True)
time.sleep(120)                    # "running" and "crashed": alive until killed
'''


def test_run_status_finished_failed_running_crashed(tmp_path, background):
    path = str(tmp_path / "store.steplog")
    with steplog.open(path) as store:   # the store exists before the children race to create it
        pass
    children = {kind: background(STATUS_CHILD, path, kind) for kind in ("finished", "failed", "running", "crashed")}
    children["crashed"].kill()
    children["finished"].proc.wait(timeout=TIMEOUT)
    children["failed"].proc.wait(timeout=TIMEOUT)
    with steplog.open(path) as store:
        statuses = {r["name"]: r["status"] for r in store.runs().to_pylist()}
        assert statuses == {"finished": "finished", "failed": "failed", "running": "running", "crashed": "crashed"}
        for kind in ("finished", "running", "crashed"):
            assert len(store.read(children[kind].line, "m")) == 100
    children["running"].kill(signal.SIGTERM)    # preempted: its run ends as killed
    with steplog.open(path) as store:
        statuses = {r["name"]: r["status"] for r in store.runs().to_pylist()}
        assert statuses["running"] == "killed"
