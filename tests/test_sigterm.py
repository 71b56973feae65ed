"""SIGTERM (steplog.signals): real processes, real signals.

Each child logs in a tight loop and, after every log call, writes how many calls have
returned into a shared 8-byte counter file (an mmap: cheap enough to keep the loop
tight). The test sends SIGTERM at some point, or the child sends it to itself from
inside a section where its main thread holds a steplog lock. Afterwards every point of
a returned call must be stored (at most one more: the call the signal interrupted),
the runs show "killed", and the process died of SIGTERM as it would without steplog,
or went on as its own handler decided. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import steplog

from _helpers import bits, columns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 60.0          # for a child to start, or to end once it should
DIES_WITHIN = 15.0      # from SIGTERM to death; steplog's own bounds add up to 25 s

CHILD = r'''
import json, mmap, os, signal, struct, sys, threading, time
import steplog

mode, path, counter_path = sys.argv[1:4]
extra = sys.argv[4:]
counter = mmap.mmap(os.open(counter_path, os.O_RDWR), 8)
count = struct.Struct("<q").pack_into
deadline = time.monotonic() + 60    # never loop for ever, whatever happens

if mode == "program-handler":
    marker = extra[0]

    def on_term(signum, frame):
        with steplog.open(path) as again:   # steplog's work is done when this runs
            status = {r["id"]: r["status"] for r in again.runs().to_pylist()}[run.id]
            points = len(again.read(run.id, "m"))
        with open(marker, "w") as f:
            json.dump({"signum": signum, "status": status, "points": points}, f)
        sys.exit(3)

    signal.signal(signal.SIGTERM, on_term)
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

store = steplog.open(path, block_points=64, budget_bytes=1 << 20, flush_interval=None)
run = store.start_run(name="victim")
runs = [run]

if mode == "stores":   # a second store, a run resumed there, a run ended before the signal
    other = steplog.open(extra[0], block_points=64, budget_bytes=1 << 20, flush_interval=None)
    runs.append(other.run(extra[1]))
    with store.start_run(name="done") as done:
        done.log("m", 1.0, step=0)

if mode == "ignore":
    for i in range(1000):
        run.log("m", float(i), step=i)
    print("ready", run.id, flush=True)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        flushed = {r["metric"]: r["count"] for r in store.metrics(run.id).to_pylist()}.get("m", 0)
        if flushed == 1000:
            break
        time.sleep(0.01)
    status = {r["id"]: r["status"] for r in store.runs().to_pylist()}[run.id]
    print("flushed", flushed, status, flush=True)
    run.log("m", 1000.0, step=1000)
    run.end()
    store.close()
    sys.exit(0 if flushed == 1000 else 1)

armed = False
if mode.startswith("lock:"):   # send SIGTERM to this process while the main thread holds a lock
    import steplog.signals
    from steplog.engine.index import Index
    from steplog.engine.writer import Writer
    where = mode[5:]
    fired = False

    def fire():
        global fired
        if armed and not fired and threading.current_thread() is threading.main_thread():
            fired = True
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):   # the handler runs here, between bytecodes, the lock still held
                pass
            print("fired, handler deferred", steplog.signals._retries, "time(s)", flush=True)

    def wrap(cls, name):
        original = getattr(cls, name)

        def wrapper(*args, **kwargs):
            fire()
            return original(*args, **kwargs)
        setattr(cls, name, wrapper)

    if where == "seal_lock":            # Writer.seal_full holds seal_lock around _seal
        wrap(Writer, "_seal")
    elif where == "condition":          # enqueue (or buffer) checks under Writer._cv (seal_lock)
        wrap(Writer, "_check_usable")
    elif where == "publish_lock":       # Store._snapshot reads unflushed points under publish_lock
        wrap(Writer, "unflushed_many")
    elif where == "index_write_lock":   # Index.write runs its function under _write_lock, in a txn
        original_write = Index.write

        def write(self, fn):
            def inside(txn):
                fire()
                return fn(txn)
            return original_write(self, inside)
        Index.write = write

print("ready", " ".join(r.id for r in runs), flush=True)
i = 0
while i & 1023 or time.monotonic() < deadline:
    for r in runs:
        r.log("m", float(i), step=i)
    i += 1
    count(counter, 0, i)
    if mode.startswith("lock:") and i >= 3000 and not armed:
        armed = True
        if where == "index_write_lock":
            runs.append(store.start_run(name="second"))
    if mode == "lock:publish_lock" and i % 1024 == 0:   # armed from the second read on
        store.read(run.id, "m", start=i - 10)
sys.exit(9)   # not killed in time
'''


class Child:
    def __init__(self, tmp_path, mode: str, *extra: str):
        self.store_path = str(tmp_path / "store.steplog")
        self.counter_path = str(tmp_path / "counter")
        with open(self.counter_path, "wb") as f:
            f.write(bytes(8))
        # unbuffered: reading the first line must not swallow what communicate() reads after it
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, self.store_path, self.counter_path, *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.ready_at = None

    def ready(self) -> list[str]:
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline().decode().split() if ready else []   # byte by byte
        if line[:1] != ["ready"]:
            self.proc.kill()
            _, err = self.communicate()
            pytest.fail(f"child did not get ready: {line} {err[-3000:]}")
        self.ready_at = time.monotonic()
        return line[1:]

    def logged(self) -> int:
        """Log calls of each run that had returned (so far, or when the child died)."""
        with open(self.counter_path, "rb") as f:
            return struct.unpack("<q", f.read(8))[0]

    def wait_logged(self, at_least: int) -> None:
        end = time.monotonic() + TIMEOUT
        while self.logged() < at_least:
            assert self.proc.poll() is None, f"child died: {self.communicate()}"
            assert time.monotonic() < end, "child logs too slowly"
            time.sleep(0.001)

    def end(self, timeout: float = TIMEOUT) -> tuple[int, str, str, float]:
        """Wait for the child to end: exit status, stdout, stderr, seconds it took."""
        began = time.monotonic()
        try:
            out, err = self.communicate(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.communicate()
            pytest.fail(f"child still alive {timeout} s after it should have ended:\n{err[-3000:]}")
        return self.proc.returncode, out, err, time.monotonic() - began

    def communicate(self, timeout: float = TIMEOUT) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return out.decode(errors="replace"), err.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.communicate()


@pytest.fixture
def child(tmp_path):
    started = []

    def start(mode: str, *extra: str) -> Child:
        started.append(Child(tmp_path, mode, *extra))
        return started[-1]

    yield start
    for c in started:
        c.close()


def assert_logged_points_stored(store, run_id: str, logged: int) -> int:
    """The points of every returned log call (steps 0..logged-1, value = step) are stored,
    and at most one more, of the call the signal interrupted."""
    steps, _, values = columns(store.read(run_id, "m"))
    assert logged <= len(steps) <= logged + 1, (len(steps), logged)
    assert steps.tolist() == list(range(len(steps)))
    assert bits(values).tolist() == bits(np.arange(len(steps), dtype=np.float64)).tolist()
    return len(steps)


def statuses(store) -> dict[str, str]:
    return {r["id"]: r["status"] for r in store.runs().to_pylist()}


@pytest.mark.parametrize("at", [1, 5000, 60000])
def test_sigterm_flushes_every_store_ends_runs_killed_and_dies_of_it(tmp_path, child, at):
    other = str(tmp_path / "other.steplog")
    with steplog.open(other) as store:
        resumed = store.start_run(name="resumed")
        resumed.end()
        untouched = store.start_run(name="untouched")
        untouched.end()
    keeper = steplog.open(other)
    left_running = keeper.start_run(name="left running")   # by this process, which lives on
    c = child("stores", other, resumed.id)
    victim_id, resumed_id = c.ready()
    assert resumed_id == resumed.id
    c.wait_logged(at)
    c.proc.send_signal(signal.SIGTERM)
    rc, out, err, took = c.end()
    assert rc == -signal.SIGTERM, f"exit {rc}:\n{out}\n{err[-3000:]}"
    assert took < DIES_WITHIN, err
    assert "steplog" not in err, err
    logged = c.logged()
    assert logged >= at
    with steplog.open(c.store_path) as store:
        assert_logged_points_stored(store, victim_id, logged)
        by_name = {r["name"]: r for r in store.runs().to_pylist()}
        assert by_name["victim"]["status"] == "killed"
        assert by_name["victim"]["end_time"] is not None
        assert by_name["done"]["status"] == "finished"
    with steplog.open(other) as store:
        assert_logged_points_stored(store, resumed.id, logged)
        assert statuses(store) == {resumed.id: "killed", untouched.id: "finished", left_running.id: "running"}
    keeper.close()


@pytest.mark.parametrize("where", ["seal_lock", "condition", "publish_lock", "index_write_lock"])
def test_sigterm_while_the_main_thread_holds_a_steplog_lock(child, where):
    """The handler runs in the main thread while it holds one of steplog's
    non-reentrant locks: it must neither deadlock nor give up on the flush."""
    c = child("lock:" + where)
    (victim_id,) = c.ready()
    rc, out, err, took = c.end()
    assert rc == -signal.SIGTERM, f"exit {rc}:\n{out}\n{err[-3000:]}"
    assert time.monotonic() - c.ready_at < DIES_WITHIN, err
    assert "steplog" not in err, err
    deferred = [line for line in out.splitlines() if line.startswith("fired")]
    assert deferred and int(deferred[0].split()[3]) >= 1, out   # the handler did run inside the lock
    logged = c.logged()
    assert logged >= 3000
    with steplog.open(c.store_path) as store:
        assert_logged_points_stored(store, victim_id, logged)
        found = statuses(store)
        assert set(found.values()) == {"killed"}, found
        assert len(found) == (2 if where == "index_write_lock" else 1)


def test_program_handler_installed_before_open_is_called_after_steplog(tmp_path, child):
    marker = tmp_path / "marker.json"
    c = child("program-handler", str(marker))
    (victim_id,) = c.ready()
    c.wait_logged(20000)
    c.proc.send_signal(signal.SIGTERM)
    rc, out, err, took = c.end()
    assert rc == 3, f"exit {rc}:\n{out}\n{err[-3000:]}"
    assert took < DIES_WITHIN
    seen = json.loads(marker.read_text())
    logged = c.logged()
    with steplog.open(c.store_path) as store:
        stored = assert_logged_points_stored(store, victim_id, logged)
        assert statuses(store) == {victim_id: "killed"}
    assert seen == {"signum": signal.SIGTERM, "status": "killed", "points": stored}


def test_sigterm_ignored_by_the_program_flushes_and_the_program_goes_on(child):
    c = child("ignore")
    (victim_id,) = c.ready()
    c.proc.send_signal(signal.SIGTERM)
    rc, out, err, took = c.end()
    assert rc == 0, f"exit {rc}:\n{out}\n{err[-3000:]}"
    assert out.split() == ["flushed", "1000", "running"], out   # flushed, not ended, not closed
    with steplog.open(c.store_path) as store:
        assert len(store.read(victim_id, "m")) == 1001
        assert statuses(store) == {victim_id: "finished"}


def test_handler_is_installed_by_the_first_open_in_the_main_thread(tmp_path):
    code = r'''
import signal, sys, threading
import steplog

def open_in_a_thread():
    steplog.open(sys.argv[1] + "/a").close()
    seen.append(signal.getsignal(signal.SIGTERM))

seen = []
thread = threading.Thread(target=open_in_a_thread)
thread.start()
thread.join(60)
print(seen == [signal.SIG_DFL])                 # signal.signal works only in the main thread
with steplog.open(sys.argv[1] + "/b"):
    installed = signal.getsignal(signal.SIGTERM)
print(getattr(installed, "__module__", None) == "steplog.signals")
mine = lambda signum, frame: None
signal.signal(signal.SIGTERM, mine)              # a handler the program installs later replaces it
steplog.open(sys.argv[1] + "/c").close()         # and a later open leaves it alone
print(signal.getsignal(signal.SIGTERM) is mine)
'''
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "True", "True"]


def _blocked_signals(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc to read thread signal masks")
def test_threads_steplog_starts_leave_sigint_and_sigterm_to_the_main_thread(tmp_path):
    """Else the kernel may hand SIGTERM (Pool.terminate) or SIGINT to one of them, and a
    main thread waiting in C (a semaphore) never runs the handler: the process hangs."""
    import threading

    with steplog.open(tmp_path / "s") as store:
        run = store.start_run()
        run.log_batch("m", np.arange(100_000), np.ones(100_000))   # several blocks: the encode pool too
        run.flush()
        store.read(run.id, "m")
        threads = {t.name: t.native_id for t in threading.enumerate() if t.name.startswith("steplog")}
        assert {"steplog-flusher", "steplog-sigterm"} <= set(threads)
        for name, tid in threads.items():
            mask = _blocked_signals(tid)
            assert mask & (1 << (signal.SIGTERM - 1)) and mask & (1 << (signal.SIGINT - 1)), name
        assert not _blocked_signals(threading.main_thread().native_id) & (1 << (signal.SIGTERM - 1))


POOL = """
import multiprocessing as mp, sys, steplog

def task(i):
    with steplog.open(sys.argv[1]) as store:
        with store.start_run(params={"i": i}) as run:
            run.log("loss", 1.0 / (i + 1), step=0)
    return i

if __name__ == "__main__":
    for _ in range(3):
        with mp.get_context("spawn").Pool(4) as pool:   # leaving the block terminates the workers
            assert pool.map(task, range(4)) == [0, 1, 2, 3]
    print("done")
"""


def test_a_process_pool_of_steplog_workers_terminates(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


def test_pool_workers_keep_sigterm_as_it_was(tmp_path):
    """A daemonic multiprocessing child gets no handler: its main thread may wait in C,
    where a SIGTERM taken by another thread would never run it."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_sigterm_handler_after_open, (str(tmp_path / "s"),)) == "SIG_DFL"


def _sigterm_handler_after_open(path: str) -> str:
    with steplog.open(path):
        return getattr(signal.getsignal(signal.SIGTERM), "name", "a steplog handler")
