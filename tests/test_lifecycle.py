"""Run statuses as MLflow and W&B record them, and store handles: one path opened
twice in a process, and read-only stores. Statuses at exit are checked in real child
processes: sys.exit, Ctrl-C (a real SIGINT), uncaught exceptions, scripts that never
call end()."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

import steplog

from _helpers import bits, columns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(body: str, store: str, timeout: float = 60) -> subprocess.CompletedProcess:
    script = "import sys, time, steplog\nstore = steplog.open(sys.argv[1])\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script, store], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def statuses(path) -> list[str]:
    with steplog.open(path, mode="r") as store:
        return store.runs().column("status").to_pylist()


@pytest.mark.parametrize("body, status, code", [
    ("with store.start_run() as run:\n    run.log('x', 1.0)\n    sys.exit(0)\n", "finished", 0),
    ("with store.start_run() as run:\n    run.log('x', 1.0)\n    sys.exit(None)\n", "finished", 0),
    ("with store.start_run() as run:\n    run.log('x', 1.0)\n    sys.exit(3)\n", "failed", 3),
    ("with store.start_run() as run:\n    raise KeyboardInterrupt\n", "killed", -signal.SIGINT),
    ("with store.start_run() as run:\n    raise ValueError('bad batch')\n", "failed", 1),
    ("run = store.start_run()\nrun.log('x', 1.0)\n", "finished", 0),                      # never ended
    ("run = store.start_run()\nrun.log('x', 1.0)\nraise ValueError('bad')\n", "failed", 1),
    ("run = store.start_run()\nraise KeyboardInterrupt\n", "killed", -signal.SIGINT),
    ("steplog.open(sys.argv[1]).start_run().log('x', 1.0)\n", "finished", 0),            # handles dropped
    ("with store:\n    store.start_run().log('x', 1.0)\n    raise RuntimeError('oom')\n", "failed", 1),
])
def test_status_at_exit(tmp_path, body, status, code):
    done = run_script(body, str(tmp_path / "s"))
    assert done.returncode == code, done.stderr
    assert statuses(tmp_path / "s") == [status]
    with steplog.open(tmp_path / "s", mode="r") as store:
        run_id = store.runs().column("id")[0].as_py()
        assert store.read(run_id, "x", missing_ok=True).column("value").to_pylist() in ([1.0], [])


def test_ctrl_c_during_logging_is_killed(tmp_path):
    path = str(tmp_path / "s")
    script = textwrap.dedent("""
        import sys, steplog
        store = steplog.open(sys.argv[1])
        with store.start_run() as run:
            run.log('x', 0.0)
            run.flush()
            for _ in range(1000):   # not flushed: Ctrl-C must not lose them
                run.log('x', 1.0)
            print('ready', flush=True)
            while True:
                run.log('x', 1.0)
    """)
    child = subprocess.Popen([sys.executable, "-c", script, path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with child:
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGINT)
        assert child.wait(60) == -signal.SIGINT
    assert statuses(path) == ["killed"]
    with steplog.open(path, mode="r") as store:
        assert store.read(store.runs().column("id")[0].as_py(), "x").num_rows > 1000   # flushed at exit


def test_close_ends_unended_runs_as_finished(tmp_path):
    store = steplog.open(tmp_path / "s")
    run = store.start_run()
    resumed_later = store.start_run()
    resumed_later.end("failed")
    store.close()
    assert sorted(statuses(tmp_path / "s")) == ["failed", "finished"]
    with pytest.raises(steplog.ClosedError):
        run.log("x", 1.0)


def test_store_exit_by_exception_fails_its_runs(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with steplog.open(tmp_path / "s") as store:
            store.start_run()
            1 / 0
    assert statuses(tmp_path / "s") == ["failed"]


def test_open_twice_in_one_process_shares_the_store(tmp_path):
    first = steplog.open(tmp_path / "s")
    again = steplog.open(tmp_path / "s")
    run = first.start_run()
    run.log("x", 1.0, step=0)
    assert again.read(run.id, "x").num_rows == 1     # unflushed points are seen by every handle
    assert steplog.open(tmp_path / "s").runs().num_rows == 1   # a re-run notebook cell
    first.close()
    run2 = again.start_run()                           # closing one handle leaves the others working
    run2.log("y", 2.0)
    again.close()
    with pytest.raises(steplog.ClosedError):
        first.runs()
    with steplog.open(tmp_path / "s") as store:
        assert store.runs().num_rows == 2
        assert store.read(run2.id, "y").column("value").to_pylist() == [2.0]


def test_open_twice_with_other_options_is_refused(tmp_path):
    with steplog.open(tmp_path / "s"):
        with pytest.raises(steplog.InvalidArgumentError, match="durability"):
            steplog.open(tmp_path / "s", durability="fsync")
        with steplog.open(str(tmp_path / "s") + "/", durability="commit"):
            pass


def test_open_after_last_close_opens_afresh(tmp_path):
    steplog.open(tmp_path / "s").close()
    with steplog.open(tmp_path / "s", durability="fsync") as store:   # other options: nothing is shared now
        store.start_run().end()


def tree(path) -> dict:
    """Every file under path with its bytes and mtime."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = (f.read(), os.stat(full).st_mtime_ns)
    return out


def make_store(path) -> str:
    with steplog.open(path) as store:
        with store.start_run(experiment="e", params={"lr": 0.1}) as run:
            run.log_batch("loss", range(100), [float(i) for i in range(100)])
        return run.id


def test_read_only_store_reads_and_refuses_writes(tmp_path):
    run_id = make_store(tmp_path / "s")
    before = tree(tmp_path / "s")
    with steplog.open(tmp_path / "s", mode="r") as store:
        assert store.read(run_id, "loss").num_rows == 100
        assert store.read(run_id, "loss", buckets=10).num_rows == 10
        assert store.runs().column("status").to_pylist() == ["finished"]
        for write in (store.start_run, lambda: store.run(run_id)):
            with pytest.raises(steplog.ReadOnlyError):
                write()
        store.flush()
    after = tree(tmp_path / "s")
    after.pop("index/lock.mdb"), before.pop("index/lock.mdb")   # LMDB's reader table, not store data
    assert after == before


def test_read_only_handle_beside_a_writing_handle(tmp_path):
    with steplog.open(tmp_path / "s") as writer:
        run = writer.start_run()
        run.log("x", 1.0)
        with steplog.open(tmp_path / "s", mode="r") as reader:
            assert reader.read(run.id, "x").num_rows == 1
            with pytest.raises(steplog.ReadOnlyError):
                reader.start_run()
        run.log("x", 2.0)
    with steplog.open(tmp_path / "s", mode="r") as reader:
        with pytest.raises(steplog.InvalidArgumentError, match="read-only"):
            steplog.open(tmp_path / "s")


def test_read_only_open_of_a_missing_store(tmp_path):
    with pytest.raises(steplog.NotFoundError):
        steplog.open(tmp_path / "nothing", mode="r")
    assert not os.path.exists(tmp_path / "nothing")
    with pytest.raises(steplog.InvalidArgumentError, match="mode"):
        steplog.open(tmp_path / "s", mode="w")


READ_AS_OTHER_USER = """
import os, sys
import steplog
with steplog.open(sys.argv[3], mode="r") as store:   # a copy, read first to load what reads need
    store.read(sys.argv[2], "loss")
os.setgid(65534); os.setuid(65534)     # nobody: may read the store, may not write a byte of it
with steplog.open(sys.argv[1], mode="r") as store:
    print(store.read(sys.argv[2], "loss").num_rows, store.runs().num_rows)
for path in (sys.argv[1], sys.argv[1] + "-new"):   # to write: a typed error that says to read with mode="r"
    try:
        steplog.open(path)
    except steplog.ReadOnlyError as exc:
        print(isinstance(exc, PermissionError), "mode='r'" in str(exc))
"""


def test_read_only_store_of_another_user(tmp_path):
    """A store in a directory this process may not write: read by another user when the
    tests run as root (root may write anything), else with the write bits cleared."""
    if os.geteuid() != 0:
        path = tmp_path / "s"
        run_id = make_store(path)
        before = tree(path)
        for root, dirs, files in os.walk(path):
            for name in files:
                os.chmod(os.path.join(root, name), 0o444)
            os.chmod(root, 0o555)
        try:
            with steplog.open(path, mode="r") as store:
                assert store.read(run_id, "loss").num_rows == 100
            with pytest.raises(steplog.ReadOnlyError, match="mode='r'"):
                steplog.open(path)
        finally:
            for root, dirs, files in os.walk(path):
                os.chmod(root, 0o755)
        assert tree(path) == before
        return
    shared = tempfile.mkdtemp(prefix="steplog-ro-")   # tmp_path's parents are root's alone
    try:
        os.chmod(shared, 0o755)
        path = os.path.join(shared, "s")
        run_id = make_store(path)
        shutil.copytree(path, tmp_path / "copy")
        before = tree(path)
        done = subprocess.run([sys.executable, "-c", READ_AS_OTHER_USER, path, run_id, str(tmp_path / "copy")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["100", "1", "True", "True", "True", "True"]
        assert tree(path) == before
        assert not os.path.exists(path + "-new")
    finally:
        shutil.rmtree(shared)


def test_rank_liveness_is_kept_per_process(tmp_path):
    """Two processes log to one run; the one that opened it last dies (SIGKILL). The run
    stays running while the other logs, and shows crashed once both are gone."""
    path = str(tmp_path / "s")
    rank = textwrap.dedent("""
        import sys, steplog
        store = steplog.open(sys.argv[1])
        run = store.run(sys.argv[2]) if len(sys.argv) > 2 else store.start_run()
        run.log('x', 1.0, context={'rank': len(sys.argv)})
        run.flush()
        print(run.id, flush=True)
        sys.stdin.readline()
    """)

    def start(*args):
        return subprocess.Popen([sys.executable, "-c", rank, path, *args], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    first = start()
    second = None
    try:
        run_id = first.stdout.readline().strip()
        second = start(run_id)
        assert second.stdout.readline().strip() == run_id
        second.kill()
        second.wait(60)
        assert statuses(path) == ["running"]          # the first rank still lives
        first.kill()
        first.wait(60)
        assert statuses(path) == ["crashed"]          # nobody ended it, nobody lives
    finally:
        for child in (first, second):
            if child is not None:
                child.kill()
                child.communicate()


def test_step_none_from_threads_takes_each_step_once(tmp_path):
    import threading

    with steplog.open(tmp_path / "s") as store:
        run = store.start_run()
        run.log("x", 0.0, step=41)
        barrier = threading.Barrier(6)

        def rank():
            barrier.wait()
            for _ in range(2000):
                run.log("x", 1.0)
                run.log({"a": 1.0, "b": 2.0})

        threads = [threading.Thread(target=rank) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        steps = store.read(run.id, "x").column("step").to_pylist()
        assert sorted(steps) == list(range(41, 41 + 12001))
        for name in "ab":
            assert sorted(store.read(run.id, name).column("step").to_pylist()) == list(range(12000))
        run.log("x", 2.0)
        assert store.read(run.id, "x").column("step").to_pylist()[-1] == 41 + 12001


def test_resuming_a_run_this_handle_has_open_gives_that_run(tmp_path):
    store = steplog.open(tmp_path / "s")
    run = store.start_run()
    assert store.run(run.id) is run
    run.end()
    resumed = store.run(run.id)               # ended: resuming makes it running again
    assert resumed is not run and statuses(tmp_path / "s") == ["running"]
    store.close()
    for handle in (run, resumed):
        with pytest.raises(steplog.ClosedError):
            handle.log("x", 1.0)
    assert statuses(tmp_path / "s") == ["finished"]


@pytest.mark.parametrize("version", [1, 2])
def test_read_only_open_of_an_older_format_reads_it_as_the_upgrade_does(tmp_path, version):
    fixture = os.path.join(ROOT, "tests", "fixtures", f"store-v{version}")
    old, upgraded = tmp_path / "old", tmp_path / "upgraded"
    shutil.copytree(fixture, old)
    shutil.copytree(fixture, upgraded)
    before = tree(old)

    def contents(path, mode):
        with steplog.open(path, mode=mode) as store:
            runs = store.runs().drop_columns(["status"]).to_pylist()
            points = {}
            for run in runs:
                for series in store.metrics(run["id"]).to_pylist():
                    if series["kind"] == "scalar":
                        context = None if series["context"] is None else json.loads(series["context"])
                        steps, times, values = columns(store.read(run["id"], series["metric"], context=context))
                        points[run["id"], series["metric"], series["context"]] = \
                            (steps.tolist(), times.tolist(), bits(values).tolist())   # NaN bits compare equal
            return runs, points

    assert contents(old, "r") == contents(upgraded, "a")
    after = tree(old)
    after.pop("index/lock.mdb", None), before.pop("index/lock.mdb", None)
    assert after == before   # not upgraded, not touched


def test_set_terminated_ends_a_crashed_run_by_its_id(tmp_path):
    """A run whose process was SIGKILLed shows crashed; set_terminated(id, "failed")
    records failed and an end time; bad statuses and unknown ids are typed errors."""
    path = str(tmp_path / "s")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, steplog
        store = steplog.open({path!r})
        run = store.start_run(name="doomed", capture=False)
        run.log("loss", 1.0, step=0)
        run.flush()
        print(run.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """)], capture_output=True, text=True)
    run_id = child.stdout.strip()
    with steplog.open(path) as store:
        status = lambda: store.runs().to_pylist()[0]
        assert status()["status"] == "crashed"
        with pytest.raises(steplog.InvalidArgumentError):
            store.set_terminated(run_id, "done")
        with pytest.raises(steplog.NotFoundError):
            store.set_terminated("0" * 32, "failed")
        store.set_terminated(run_id, "failed")
        assert status()["status"] == "failed" and status()["end_time"] is not None
        assert store.read(run_id, "loss").column("value").to_pylist() == [1.0]
