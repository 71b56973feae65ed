"""Crash safety: a writer SIGKILLed at random moments loses nothing it acknowledged.

A long-lived "zygote" process imports steplog and loads the numba kernels once, then
forks one writer process per round; the test SIGKILLs that real process after a random
delay, so more than 50 kills fit in well under a minute and a half. Every writer
resumes the same run of the same store directory and, after each ``flush()``, appends
to a side file (O_APPEND, one line per flush) how many points of each series that
flush acknowledged.

Steps encode (generation, index) and values are a deterministic function of
(generation, series, index), so after each kill the test rebuilds exactly what could
have been written and checks: every acknowledged point is there bit-exact, nothing
is duplicated or altered, the points of a generation are a prefix of what it logged,
earlier generations never change, ``python -m steplog verify`` exits 0, the store
accepts new writes and the killed run shows as "crashed".
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import steplog
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout

from _helpers import bits, columns

ROUNDS = 56
GEN_SHIFT = 24                      # step = generation << GEN_SHIFT | index
SERIES = [("loss", None), ("acc", None), ("lr", None), ("batch", None), ("loss", {"rank": 1})]
ZYGOTE_TIMEOUT = 60.0

# Shared by the zygote's writers and by the test: what point k of series s of
# generation g holds. Mostly ordinary floats, some NaNs with payloads and -0.0.
VALUE_CODE = r'''
import numpy as np

def expected_values(g, s, k):
    """g: a generation or an array of them, aligned with the indexes k."""
    k = np.asarray(k, dtype=np.int64)
    g = np.broadcast_to(np.asarray(g, dtype=np.int64), k.shape)
    x = ((g * 1_000_003 + k).astype(np.float64) * 0.125 + s).view(np.uint64).copy()
    nan = (k % 53) == 7
    x[nan] = np.uint64(0x7FF8000000000000) | ((g[nan] << 32) + k[nan] * 8 + s).astype(np.uint64)
    x[(k % 61) == 3] = np.uint64(0x8000000000000000)
    return x.view(np.float64)
'''
exec(VALUE_CODE)  # defines expected_values here too

ZYGOTE = VALUE_CODE + r'''
import json, os, runpy, sys, tempfile, time, traceback
import numpy as np
import steplog

SERIES = %(series)s
GEN_SHIFT = %(gen_shift)d

def warm_up():
    with tempfile.TemporaryDirectory() as tmp:
        store = steplog.open(tmp, block_points=256, budget_bytes=1 << 20, flush_interval=None)
        run = store.start_run()
        for i in range(300):
            run.log("a", float(i), step=i)
            run.log({"b": 1.0, "c": 2.0}, step=i)
        run.log_batch("d", np.arange(3000), np.arange(3000) * 0.5, context={"rank": 1})
        store.flush()
        store.read(run.id, "a")
        store.runs()
        store.close()

def writer(cmd):
    g, rng = cmd["gen"], np.random.default_rng(cmd["seed"])
    side = os.open(cmd["side"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = steplog.open(cmd["path"], block_points=512, budget_bytes=1 << 20,
                         flush_interval=cmd["flush_interval"])
    run = store.run(cmd["run_id"])
    os.write(side, b"%%d resumed\n" %% g)
    counts = [0] * len(SERIES)
    base = g << GEN_SHIFT
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        for _ in range(int(rng.integers(1, 60))):
            op = int(rng.integers(0, 5))
            if op == 0:                         # per-call log
                n, k0 = int(rng.integers(1, 120)), counts[0]
                values = expected_values(g, 0, np.arange(k0, k0 + n)).tolist()
                for j in range(n):
                    run.log("loss", values[j], step=base + k0 + j)
                counts[0] += n
            elif op == 1:                       # dict log: two series at one step
                n, k0 = int(rng.integers(1, 80)), counts[1]
                a = expected_values(g, 1, np.arange(k0, k0 + n)).tolist()
                b = expected_values(g, 2, np.arange(k0, k0 + n)).tolist()
                for j in range(n):
                    run.log({"acc": a[j], "lr": b[j]}, step=base + k0 + j)
                counts[1] += n
                counts[2] += n
            elif op == 2:                       # log_batch, sometimes over several blocks
                n, k0 = int(rng.integers(1, 400)), counts[3]
                k = np.arange(k0, k0 + n)
                run.log_batch("batch", base + k, expected_values(g, 3, k))
                counts[3] += n
            else:                               # a series with a context, both ways
                n, k0 = int(rng.integers(1, 200)), counts[4]
                k = np.arange(k0, k0 + n)
                if op == 3:
                    run.log_batch("loss", base + k, expected_values(g, 4, k), context={"rank": 1})
                else:
                    for step, value in zip((base + k).tolist(), expected_values(g, 4, k).tolist()):
                        run.log("loss", value, step=step, context={"rank": 1})
                counts[4] += n
        run.flush()
        os.write(side, ("%%d ack %%s\n" %% (g, " ".join(map(str, counts)))).encode())
    return 3   # never killed: the test reports it

def verify(cmd):
    sys.argv = ["steplog", "verify", cmd["path"]]
    runpy.run_module("steplog", run_name="__main__", alter_sys=True)
    return 0

def main():
    warm_up()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdin.close()
                code = {"writer": writer, "verify": verify}[cmd["kind"]](cmd)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        print(json.dumps({"started": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"ended": pid, "status": status}), flush=True)

main()
''' % {"series": repr(SERIES), "gen_shift": GEN_SHIFT}


class Zygote:
    """A process that forks steplog workers on request and reports their end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self._err = open(os.path.join(workdir, "zygote.err"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, cwd=workdir)
        self._buf = b""
        try:
            self.pid = self._message(ZYGOTE_TIMEOUT)["ready"]
        except BaseException:
            self.proc.kill()
            self.close()
            raise

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"zygote silent for {timeout}s; stderr: {self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"zygote died: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def stderr(self) -> str:
        with open(os.path.join(self.workdir, "zygote.err"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def start(self, **cmd) -> int:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self._message(ZYGOTE_TIMEOUT)["started"]

    def wait(self, pid: int, timeout: float = ZYGOTE_TIMEOUT) -> int:
        """The wait status of a worker, once the zygote has reaped it."""
        message = self._message(timeout)
        assert message["ended"] == pid
        return message["status"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.proc.stdout.close()
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
            self._err.close()


def read_side_file(path: str) -> dict[int, dict]:
    """generation -> {"resumed": bool, "ack": [counts] of its latest line}.

    A line cut short by the kill can only hold fewer fields or a prefix of a number,
    never more than was acknowledged, so such lines are skipped or count for less.
    """
    found: dict[int, dict] = {}
    if not os.path.exists(path):
        return found
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n"):
        parts = line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        entry = found.setdefault(int(parts[0]), {"resumed": False, "ack": [0] * len(SERIES)})
        if parts[1] == "resumed":
            entry["resumed"] = True
        elif parts[1] == "ack" and len(parts) == 2 + len(SERIES) and all(p.isdigit() for p in parts[2:]):
            entry["ack"] = [max(int(c), a) for c, a in zip(parts[2:], entry["ack"])]
    return found


def end_side_file_line(path: str) -> None:
    """Start the next writer on a line of its own, whatever the kill left."""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def check_series(table, s: int, generation: int, acked: dict[int, dict], seen: dict,
                 only: int | None = None) -> int:
    """Check one series against the model; returns its point count. ``only``: the
    table holds just the points of that generation (a range read)."""
    steps, _, values = columns(table)
    assert np.all(np.diff(steps) > 0), f"series {SERIES[s]}: a step is returned twice or out of order"
    gens, ks = steps >> GEN_SHIFT, steps & ((1 << GEN_SHIFT) - 1)
    assert gens.min(initial=1) >= 1 and gens.max(initial=1) <= generation, \
        f"series {SERIES[s]}: steps of generations that never ran: {sorted(set(gens.tolist()))}"
    if only is not None:
        assert np.all(gens == only)
    want, got = bits(expected_values(gens, s, ks)), bits(values)
    bad = np.nonzero(got != want)[0]
    assert not len(bad), (f"series {SERIES[s]}: {len(bad)} altered values, first of generation {int(gens[bad[0]])} "
                          f"index {int(ks[bad[0]])}: {int(got[bad[0]]):#x} != {int(want[bad[0]]):#x}")
    # the points of a generation are a prefix of what it logged (steps are sorted)
    found_gens, first, counts = np.unique(gens, return_index=True, return_counts=True)
    rank = np.arange(len(ks)) - np.repeat(first, counts)
    holes = np.nonzero(ks != rank)[0]
    assert not len(holes), f"series {SERIES[s]} generation {int(gens[holes[0]])}: a hole in the points"
    present = dict(zip(found_gens.tolist(), counts.tolist()))
    in_scope = (lambda g: True) if only is None else (lambda g: g == only)
    for g, entry in acked.items():
        if in_scope(g):
            have = present.get(g, 0)
            assert have >= entry["ack"][s], \
                f"series {SERIES[s]} generation {g}: {entry['ack'][s]} points acknowledged, {have} found"
    before = seen.setdefault(s, {})
    for g, count in before.items():
        if in_scope(g):
            assert present.get(g, 0) == count, \
                f"series {SERIES[s]} generation {g}: {count} points before, {present.get(g, 0)} now"
    if only is None:
        before.clear()
    before.update(present)
    if only is not None:
        before.setdefault(only, 0)
    return len(steps)


def test_sigkill_at_random_moments_loses_no_acknowledged_point(tmp_path):
    rng = np.random.default_rng(20240611)
    path = str(tmp_path / "store.steplog")
    side = str(tmp_path / "acks.txt")
    with steplog.open(path) as store:
        writer_run = store.start_run(experiment="crash", name="writer")
        writer_run.end("finished")
        probe = store.start_run(experiment="crash", name="probe")
        probe.end("finished")
    zygote = Zygote(str(tmp_path))
    seen: dict = {}
    kills, total_points, torn_tails = 0, 0, 0
    began = time.monotonic()
    try:
        for generation in range(1, ROUNDS + 1):
            # delays mostly 0.05-0.6 s (logging, encoding, appending, committing), a few
            # very short ones that land in open() or in resuming the run
            delay = float(rng.uniform(0.0, 0.05) if generation % 8 == 0 else rng.uniform(0.05, 0.6))
            end_side_file_line(side)
            pid = zygote.start(kind="writer", gen=generation, seed=int(rng.integers(1 << 31)), path=path,
                               run_id=writer_run.id, side=side, log=str(tmp_path / "writer.log"),
                               flush_interval=None if generation % 3 else 0.02)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            status = zygote.wait(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                f"writer ended on its own ({status}): {(tmp_path / 'writer.log').read_text()[-3000:]}"
            kills += 1
            acked = read_side_file(side)
            torn_tails += has_torn_tail(path)

            # ``steplog verify`` runs in a forked process while this one opens the store
            # (which cuts the torn tail), checks it and writes to it
            verify_log = str(tmp_path / "verify.log")
            verifier = zygote.start(kind="verify", path=path, log=verify_log)
            full = generation % 6 == 0 or generation == ROUNDS
            counts = []
            with steplog.open(path) as store:
                for s, (name, context) in enumerate(SERIES):
                    if full:
                        table = store.read(writer_run.id, name, context=context)
                    else:   # only this generation's steps: a short range read
                        table = store.read(writer_run.id, name, context=context, start=generation << GEN_SHIFT,
                                           stop=(generation + 1) << GEN_SHIFT)
                    counts.append(check_series(table, s, generation, acked, seen, None if full else generation))
                    if full:   # the index's statistics and rollups agree with the blocks
                        assert sum(store.read(writer_run.id, name, context=context, buckets=3)
                                   .column("count").to_pylist()) == counts[-1]
                if full:
                    metric_counts = {(m["metric"], m["context"]): m["count"]
                                     for m in store.metrics(writer_run.id).to_pylist()}
                    for (name, context), count in zip(SERIES, counts):
                        key = (name, None if context is None else json.dumps(context, separators=(",", ":")))
                        assert metric_counts.get(key, 0) == count, (key, metric_counts, count)
                rows = {r["id"]: r for r in store.runs().to_pylist()}
                status_now = rows[writer_run.id]["status"]
                if acked.get(generation, {}).get("resumed"):
                    assert status_now == "crashed"
                else:
                    assert status_now in ("finished", "crashed")
                # the store accepts new writes at once
                again = store.run(probe.id)
                again.log("alive", float(generation), step=generation)
                again.flush()
                alive = store.read(probe.id, "alive")
                assert columns(alive)[0].tolist() == list(range(1, generation + 1))
                again.end("finished")
            check_verified(zygote.wait(verifier), verify_log)
            if generation in (ROUNDS // 2, ROUNDS):
                assert_verifies_cli(path)
            if full:
                total_points = sum(counts)
    finally:
        zygote.close()
    elapsed = time.monotonic() - began
    assert kills >= 50
    assert torn_tails >= 2, "no kill fell between a segment append and its commit"
    acked_total = sum(sum(e["ack"]) for e in read_side_file(side).values())
    assert acked_total > 0 and total_points >= acked_total
    print(f"{kills} kills in {elapsed:.1f}s, {total_points} points, {acked_total} acknowledged, "
          f"{torn_tails} kills left a torn segment tail")


def has_torn_tail(path: str) -> bool:
    """Whether a segment holds bytes past its committed end: the kill fell between a
    segment append and the LMDB commit that indexes it."""
    layout = StoreLayout(path)
    index = Index(layout.index_dir, sync=False)
    try:
        with index.read() as txn:
            committed = dict(txn.segments())
    finally:
        index.close()
    return any(os.path.exists(layout.segment_path(sid)) and os.path.getsize(layout.segment_path(sid)) > end
               for sid, end in committed.items())


def check_verified(status: int, log: str) -> None:
    """``steplog verify PATH`` (the module run as __main__ in a forked process) exited 0."""
    with open(log) as f:
        output = f.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, output
    assert " 0 damaged" in output, output


def assert_verifies_cli(path: str) -> None:
    result = subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 damaged" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_keeps_flushed_points_and_shows_crashed(tmp_path, sig):
    """One deterministic kill with unflushed points pending: SIGKILL loses them and the
    run shows crashed; SIGTERM flushes them and ends the run as killed."""
    path = str(tmp_path / "store.steplog")
    code = r'''
import sys, time, numpy as np, steplog
store = steplog.open(sys.argv[1], block_points=64, flush_interval=None)
run = store.start_run(name="victim")
run.log_batch("m", np.arange(1000), np.arange(1000) * 0.5)
store.flush()
for step in range(1000, 1010):   # fewer than a block: stays in the buffer, never flushed
    run.log("m", 0.0, step=step)
print(run.id, flush=True)
time.sleep(60)
'''
    with subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "writer did not start"
            run_id = proc.stdout.readline().strip()
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == -sig
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    logged = 1000 if sig == signal.SIGKILL else 1010   # on SIGTERM the buffer is flushed first
    with steplog.open(path) as store:
        steps, _, values = columns(store.read(run_id, "m"))
        assert steps.tolist() == list(range(logged))
        assert bits(values).tolist() == bits(np.r_[np.arange(1000) * 0.5, np.zeros(logged - 1000)]).tolist()
        assert store.runs().to_pylist()[0]["status"] == ("crashed" if sig == signal.SIGKILL else "killed")
        run = store.run(run_id)
        run.log("m", 7.0, step=5000)
        store.flush()
        assert len(store.read(run_id, "m")) == logged + 1
        run.end()
        assert store.runs().to_pylist()[0]["status"] == "finished"
    if sig == signal.SIGKILL:
        assert_verifies_cli(path)
