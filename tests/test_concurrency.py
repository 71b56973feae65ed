"""Many threads and processes logging and reading at once: nothing lost, duplicated or altered.

Every writer logs deterministic values derived from (writer, series, index), so the test
rebuilds the exact set of points each one wrote and compares bit patterns: zero lost,
zero duplicated, zero altered. Processes are real (``python -c``), started together
behind a "go" file, and every wait has a timeout.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import steplog

from _helpers import assert_points, bits, columns

PROCESS_TIMEOUT = 150

# Values shared by the children and the test. Mostly distinct ordinary floats; every
# 41st point is a NaN whose payload names its writer and index, every 67th is -0.0.
VALUES_CODE = r'''
import numpy as np

def values_of(writer, series, index):
    index = np.asarray(index, dtype=np.int64)
    x = ((writer * 1_000_003 + series * 7_919_993 + index).astype(np.float64) * 0.25 - 1000.0)
    raw = x.view(np.uint64).copy()
    nan = index % 41 == 5
    raw[nan] = np.uint64(0x7FF8000000000000) | (np.uint64(writer * 16 + series) << np.uint64(32)) | \
        index[nan].astype(np.uint64)
    raw[index % 67 == 3] = np.uint64(0x8000000000000000)
    return raw.view(np.float64)
'''
exec(VALUES_CODE)

CHILD = VALUES_CODE + r'''
import json, os, sys, time
import numpy as np
import steplog

cfg = json.loads(sys.argv[1])

def wait_for(path, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for " + path)
        time.sleep(0.005)

def write_points(run, w, n, chunk, context=None, flush_every=None, name_log="m", name_batch="b", pause=0.0):
    """Per-call log of name_log and log_batch of name_batch, interleaved."""
    steps = np.arange(n, dtype=np.int64)
    for lo in range(0, n, chunk):
        idx = steps[lo:lo + chunk]
        for i, v in zip(idx.tolist(), values_of(w, 0, idx).tolist()):
            run.log(name_log, v, step=i, context=context)
        run.log_batch(name_batch, idx, values_of(w, 1, idx), context=context)
        if flush_every and (lo // chunk) % flush_every == flush_every - 1:
            run.flush()
            time.sleep(pause)

mode = cfg["mode"]
if mode == "own_run":
    store = steplog.open(cfg["path"], block_points=cfg.get("block_points", 256), flush_interval=None)
    run = store.start_run(experiment="procs", name="p%d" % cfg["w"])
    print(run.id, flush=True)
    wait_for(cfg["go"])
    write_points(run, cfg["w"], cfg["n"], 97)
    run.end()
    store.close()
elif mode == "same_run":
    store = steplog.open(cfg["path"], block_points=64, budget_bytes=1 << 18)
    run = store.run(cfg["run_id"])
    print("ready", flush=True)
    wait_for(cfg["go"])
    w = cfg["w"]
    write_points(run, w, cfg["n"], 83, flush_every=3)
    write_points(run, w, cfg["n"], 59, context={"rank": w}, flush_every=2)
    store.close()
elif mode == "writer":
    store = steplog.open(cfg["path"], block_points=64, flush_interval=None)
    run = store.run(cfg["run_id"])
    run.log("warm-up", 0.0, step=0, context={"writer": cfg["w"]})   # kernels loaded before "go"
    run.flush()
    print("ready", flush=True)
    wait_for(cfg["go"])
    write_points(run, cfg["w"], cfg["n"], 50, flush_every=1, name_log="shared", name_batch="shared",
                 pause=0.01)
    store.close()
elif mode == "reader":
    store = steplog.open(cfg["path"], flush_interval=None)
    assert len(store.read(cfg["run_id"], "warm-up")) == 1     # kernels loaded before "go"
    print("ready", flush=True)
    wait_for(cfg["go"])
    counts, errors = [], []
    writers, n = cfg["writers"], cfg["n"]
    # the universe of points: (step, value bits) of every writer
    universe = {}
    for w in range(writers):
        for s in (0, 1):
            idx = np.arange(n)
            for i, b in zip(idx.tolist(), values_of(w, s, idx).view(np.uint64).tolist()):
                universe[(i, b)] = universe.get((i, b), 0) + 1
    deadline = time.monotonic() + 120
    while True:
        done = os.path.exists(cfg["done"])     # looked at before reading: the last read sees all
        if time.monotonic() > deadline:
            errors.append("no done file after 120 s")
            done = True
        table = store.read(cfg["run_id"], "shared", missing_ok=True)   # polls a live run
        steps = table.column("step").to_numpy()
        vbits = table.column("value").to_numpy().view(np.uint64)
        if len(steps) > 1 and np.any(np.diff(steps) < 0):
            errors.append("steps not sorted")
        seen = {}
        for key in zip(steps.tolist(), vbits.tolist()):
            seen[key] = seen.get(key, 0) + 1
        for key, count in seen.items():
            if count > universe.get(key, 0):
                errors.append("point %r returned %d times, written %d times" % (key, count, universe.get(key, 0)))
                break
        if counts and len(steps) < counts[-1]:
            errors.append("count went down from %d to %d" % (counts[-1], len(steps)))
        counts.append(len(steps))
        if done:
            break
    print(json.dumps({"counts": counts, "errors": errors[:20]}), flush=True)
    store.close()
'''


class Children:
    """Child processes started together; every wait has a timeout."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.go = str(tmp_path / "go")
        self.done = str(tmp_path / "done")
        self.procs: list[subprocess.Popen] = []

    def start(self, **cfg) -> subprocess.Popen:
        cfg.setdefault("go", self.go)
        cfg.setdefault("done", self.done)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def first_lines(self, procs) -> list[str]:
        """The first stdout line of each (they print it once set up)."""
        lines = []
        deadline = time.monotonic() + PROCESS_TIMEOUT
        for proc in procs:
            line = _readline(proc, deadline - time.monotonic())
            assert line, f"child exited early: {proc.stderr.read()}"
            lines.append(line.strip())
        return lines

    def go_now(self) -> None:
        open(self.go, "w").close()

    def finish(self, procs) -> list[str]:
        """Wait for procs to exit 0; returns the rest of their stdout."""
        outputs = []
        deadline = time.monotonic() + PROCESS_TIMEOUT
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"child failed ({proc.returncode}): {err[-3000:]}"
            outputs.append(out)
        return outputs

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, timeout))
    assert ready, "child did not answer in time"
    return proc.stdout.readline()


@pytest.fixture
def children(tmp_path):
    kids = Children(tmp_path)
    yield kids
    kids.kill_all()


def multiset(steps, values) -> np.ndarray:
    """(step, value bits) pairs, sorted: equal arrays mean equal multisets."""
    pairs = np.empty(len(steps), dtype=[("step", np.int64), ("bits", np.uint64)])
    pairs["step"], pairs["bits"] = steps, bits(values)
    return np.sort(pairs, order=["step", "bits"])


def assert_same_points(table, want_steps, want_values, what: str) -> None:
    """Same multiset of (step, bits), and the table sorted by step (ties in any order)."""
    steps, _, values = columns(table)
    assert np.all(np.diff(steps) >= 0), f"{what}: not sorted by step"
    got, want = multiset(steps, values), multiset(want_steps, want_values)
    if len(got) != len(want) or not np.array_equal(got, want):
        g, w = {tuple(x) for x in got.tolist()}, {tuple(x) for x in want.tolist()}
        raise AssertionError(f"{what}: {len(got)} points read, {len(want)} written; "
                             f"{len(w - g)} lost, {len(g - w)} unexpected, "
                             f"{len(got) - len(set(map(tuple, got.tolist())))} duplicated")


# -- (a) threads of one process ---------------------------------------------------------

def _run_threads(target, n: int, timeout: float = 120) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a logging thread hangs"
    if errors:
        raise errors[0]


def _thread_plan(t: int):
    """What thread t logs: steps (with repeats and going back) and values, per series."""
    rng = np.random.default_rng(t)
    n = 6000
    steps = np.cumsum(rng.integers(-2, 4, size=n))          # ties and steps going back
    return steps, values_of(t, 0, np.arange(n)), values_of(t, 1, np.arange(n)), values_of(t, 2, np.arange(n))


def test_threads_each_logging_to_own_run(open_store, store_path):
    # a small budget and a short flush interval: backpressure and timer seals race the loggers
    store = open_store(budget_bytes=1 << 17, flush_interval=0.005)
    runs = {}

    def work(t):
        run = store.start_run(experiment="threads", name=f"t{t}")
        runs[t] = run
        steps, a, b, c = _thread_plan(t)
        i, n = 0, len(steps)
        while i < n:
            k = min(n, i + 1 + (i * 7919 + t) % 150)
            if (i // 150) % 2:
                run.log_batch("m", steps[i:k], a[i:k])
            else:
                for s, v in zip(steps[i:k].tolist(), a[i:k].tolist()):
                    run.log("m", v, step=s)
            for s, v1, v2 in zip(steps[i:k].tolist(), b[i:k].tolist(), c[i:k].tolist()):
                run.log({"x": v1, "y": v2}, step=s, context={"thread": t})
            i = k
        # read back at once, while the other threads still log
        assert_points(store.read(run.id, "m"), steps, a)

    _run_threads(work, 8)

    def check(s):
        for t, run in runs.items():
            steps, a, b, c = _thread_plan(t)
            assert_points(s.read(run.id, "m"), steps, a)
            assert_points(s.read(run.id, "x", context={"thread": t}), steps, b)
            assert_points(s.read(run.id, "y", context={"thread": t}), steps, c)
            with pytest.raises(steplog.NotFoundError, match="thread"):   # no context: another series
                s.read(run.id, "x")

    check(store)
    store.flush()
    check(store)
    store.close()
    check(open_store())


def test_threads_sharing_one_run_and_series(open_store):
    store = open_store(budget_bytes=1 << 17, flush_interval=0.005)
    run = store.start_run()
    n = 4000

    def work(t):
        idx = np.arange(n)
        values = values_of(t, 0, idx)
        for lo in range(0, n, 200):
            if lo % 400:
                run.log_batch("shared", idx[lo:lo + 200], values[lo:lo + 200])
            else:
                for i, v in zip(idx[lo:lo + 200].tolist(), values[lo:lo + 200].tolist()):
                    run.log("shared", v, step=i)
        run.flush()

    _run_threads(work, 8)
    want_steps = np.tile(np.arange(n), 8)
    want_values = np.concatenate([values_of(t, 0, np.arange(n)) for t in range(8)])
    assert_same_points(store.read(run.id, "shared"), want_steps, want_values, "threads, one series")
    counts = store.read(run.id, "shared", buckets=7)
    assert sum(counts.column("count").to_pylist()) == 8 * n


# -- (b) 16 processes, each its own run --------------------------------------------------

def test_sixteen_processes_each_logging_to_own_run(children, store_path, open_store):
    n = 2000
    procs = [children.start(mode="own_run", path=str(store_path), w=w, n=n) for w in range(16)]
    run_ids = children.first_lines(procs)
    children.go_now()
    children.finish(procs)
    store = open_store()
    steps = np.arange(n)
    for w, run_id in enumerate(run_ids):
        assert_points(store.read(run_id, "m"), steps, values_of(w, 0, steps))
        assert_points(store.read(run_id, "b"), steps, values_of(w, 1, steps))
    runs = store.runs().to_pylist()
    assert sorted(r["name"] for r in runs) == sorted(f"p{w}" for w in range(16))
    assert {r["status"] for r in runs} == {"finished"}


# -- (c) 8 processes, the same run -------------------------------------------------------

def test_eight_processes_logging_to_the_same_run(children, store_path, open_store):
    n, writers = 1500, 8
    with steplog.open(store_path) as store:
        run_id = store.start_run(experiment="shared").id
    procs = [children.start(mode="same_run", path=str(store_path), run_id=run_id, w=w, n=n)
             for w in range(writers)]
    children.first_lines(procs)
    children.go_now()
    children.finish(procs)
    store = open_store()
    idx = np.arange(n)
    # without a context the processes share the series: every point of every process
    # appears exactly once; ties on equal steps in either order
    for s, name in ((0, "m"), (1, "b")):
        want_values = np.concatenate([values_of(w, s, idx) for w in range(writers)])
        table = store.read(run_id, name)
        assert_same_points(table, np.tile(idx, writers), want_values, f"shared series {name}")
        buckets = store.read(run_id, name, buckets=10)   # rollups merged across processes too
        assert sum(buckets.column("count").to_pylist()) == writers * n
        assert sum(buckets.column("nan_count").to_pylist()) == int(np.isnan(want_values).sum())
    # with context={"rank": r} each process has its own series
    for w in range(writers):
        assert_points(store.read(run_id, "m", context={"rank": w}), idx, values_of(w, 0, idx))
        assert_points(store.read(run_id, "b", context={"rank": w}), idx, values_of(w, 1, idx))
    metrics = store.metrics(run_id).to_pylist()
    assert len(metrics) == 2 + 2 * writers
    assert {m["count"] for m in metrics if m["context"] is None} == {writers * n}
    assert {m["count"] for m in metrics if m["context"] is not None} == {n}


# -- (d) readers while writers write -----------------------------------------------------

def test_readers_see_growing_consistent_snapshots_while_writers_write(children, store_path, open_store):
    n, writers, readers = 2000, 3, 3
    with steplog.open(store_path) as store:
        run = store.start_run(experiment="rw")
        run.log("warm-up", 1.0, step=0)
        run_id = run.id
    reader_procs = [children.start(mode="reader", path=str(store_path), run_id=run_id, writers=writers, n=n)
                    for _ in range(readers)]
    writer_procs = [children.start(mode="writer", path=str(store_path), run_id=run_id, w=w, n=n)
                    for w in range(writers)]
    children.first_lines(reader_procs + writer_procs)
    children.go_now()
    children.finish(writer_procs)
    open(children.done, "w").close()
    total = writers * n * 2     # each writer logs and batch-logs n points into "shared"
    for out in children.finish(reader_procs):
        report = json.loads(out.strip().splitlines()[-1])
        assert report["errors"] == []
        counts = report["counts"]
        assert len(counts) >= 3, "a reader read too few times to mean anything"
        assert counts == sorted(counts)
        assert counts[-1] == total, "the last read, after every writer finished, holds everything"
        assert any(0 < c < total for c in counts), "no read happened while the writers wrote"
    store = open_store()
    idx = np.arange(n)
    want_values = np.concatenate([values_of(w, s, idx) for w in range(writers) for s in (0, 1)])
    assert_same_points(store.read(run_id, "shared"), np.tile(idx, 2 * writers), want_values, "final read")
