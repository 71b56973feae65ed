"""Liveness of a run written by several processes (ranks): each writer keeps its own
heartbeat, so the run is running while any of them lives, and crashed once all are gone.

Real processes, real signals, a real store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import steplog
from steplog.engine.index import Heartbeat, Index
from steplog.engine.layout import StoreLayout
from steplog.query.runs import runs_table

RANK = r'''
import os, sys, time
import steplog
path, role, folder = sys.argv[1], sys.argv[2], sys.argv[3]
store = steplog.open(path, flush_interval=None)
if role == "a":
    run = store.start_run(experiment="ranks", name="job")
    with open(os.path.join(folder, "run.tmp"), "w") as f:
        f.write(run.id)
    os.replace(os.path.join(folder, "run.tmp"), os.path.join(folder, "run"))
else:
    while not os.path.exists(os.path.join(folder, "run")):
        time.sleep(0.01)
    run = store.run(open(os.path.join(folder, "run")).read())
step = 0
while True:
    run.log("loss", float(step), step=step, context={"rank": role})
    step += 1
    if step % 20 == 0:
        run.flush()
        open(os.path.join(folder, role + ".ready"), "w").close()
    time.sleep(0.002)
'''


def start(path, role: str, folder) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RANK, str(path), role, str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(test, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not test():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def status_and_count(path, run_id: str) -> tuple[str, int]:
    with steplog.open(path, flush_interval=None) as store:
        status = {r["id"]: r["status"] for r in store.runs().to_pylist()}[run_id]
        return status, store.read(run_id, "loss", context={"rank": "a"}).num_rows


def test_run_is_running_while_any_rank_lives_and_crashed_when_all_are_gone(tmp_path):
    path, folder = tmp_path / "s", tmp_path
    ranks = {"a": start(path, "a", folder)}
    try:
        wait_for(lambda: (folder / "a.ready").exists(), "rank a")
        ranks["b"] = start(path, "b", folder)
        wait_for(lambda: (folder / "b.ready").exists(), "rank b")
        run_id = (folder / "run").read_text()
        index = Index(StoreLayout(str(path)).index_dir, sync=False, create=False)
        try:
            with index.read() as txn:
                beats = txn.heartbeats()[bytes.fromhex(run_id)]
        finally:
            index.close()
        assert sorted(beat.pid for beat in beats) == sorted(p.pid for p in ranks.values())

        ranks["b"].send_signal(signal.SIGKILL)   # rank b exits; its heartbeat names a dead process
        ranks["b"].wait()
        status, count = status_and_count(path, run_id)
        assert status == "running"
        wait_for(lambda: status_and_count(path, run_id)[1] > count, "rank a to log on")
        assert status_and_count(path, run_id)[0] == "running"

        ranks["a"].send_signal(signal.SIGKILL)
        ranks["a"].wait()
        assert status_and_count(path, run_id)[0] == "crashed"
    finally:
        for proc in ranks.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_ending_a_run_drops_this_writers_heartbeat_and_closing_drops_the_rest(tmp_path):
    path = tmp_path / "s"
    with steplog.open(path, flush_interval=None) as store:
        ended, left_open = store.start_run(), store.start_run()
        ended.end()
        with store._index.read() as txn:
            beats = txn.heartbeats()
        assert bytes.fromhex(ended.id) not in beats
        assert [b.pid for b in beats[bytes.fromhex(left_open.id)]] == [os.getpid()]
    index = Index(StoreLayout(str(path)).index_dir, sync=False, create=False)
    try:
        with index.read() as txn:
            assert txn.heartbeats() == {}   # a closed writer is no proof of life
    finally:
        index.close()


def test_runs_table_reads_every_writers_heartbeat():
    now = time.time_ns()
    record = {"id": "ab" * 16, "experiment": "e", "name": "n", "parent": None, "status": "running",
              "start_time": now, "end_time": None, "params": {}, "tags": {}}
    dead = Heartbeat(2**22 + 12345, 0, now - 120 * 10**9)     # stale: older than 60 s
    alive = Heartbeat(os.getpid(), 0, now)
    run = bytes.fromhex(record["id"])
    assert runs_table([dict(record)], {run: [dead, alive]}).column("status").to_pylist() == ["running"]
    assert runs_table([dict(record)], {run: [dead]}).column("status").to_pylist() == ["crashed"]
    assert runs_table([dict(record)], {}).column("status").to_pylist() == ["crashed"]
