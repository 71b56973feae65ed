"""Open file descriptors: reading a store of many segments keeps a bounded number of
segment files open, under a real RLIMIT_NOFILE too, and a file is never closed while a
read (a user thread or a decoding thread) is using it.

The tests under a low limit run in a child process that calls setrlimit and reports on
stdout what it saw; the parent, without a limit, checks the store afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import steplog
from steplog.engine.errors import ClosedError, InvalidArgumentError, InvalidTypeError
from steplog.engine.layout import StoreLayout
from steplog.engine.segment import SegmentReader

from _helpers import assert_points

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")

TIMEOUT = 300
SEGMENTS = 300
POINTS = 10          # per run and open
LONG_POINTS = 5      # appended to the long series by every open


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_values(i: int, steps) -> np.ndarray:
    """The values of run ``i`` (also computed by CHILD: keep the two the same)."""
    return np.sin(np.asarray(steps, dtype=np.float64) * 0.618033988749895 + i) * (1.0 + i)


def make_store(path: str, n: int) -> dict:
    """A store of ``n`` segments: each open logs one new run and adds to one long series
    (one run resumed every time), so the long series has a block in every segment.
    Every segment written stays locked (as if its writer were alive) while the next
    open writes, so that open cannot append to it and starts a segment of its own."""
    layout = StoreLayout(path)
    runs, long_id, held = [], None, []
    try:
        for i in range(n):
            with steplog.open(path, flush_interval=None) as store:
                run = store.start_run(experiment="many", name=f"r{i}")
                steps = np.arange(i, i + POINTS)
                run.log_batch("m", steps, run_values(i, steps))
                runs.append(run.id)
                long_run = store.start_run(experiment="long", name="long") if long_id is None else store.run(long_id)
                long_id = long_run.id
                steps = np.arange(i * LONG_POINTS, (i + 1) * LONG_POINTS)
                long_run.log_batch("long", steps, run_values(-1, steps))
            for segment_id in layout.segment_ids_on_disk()[len(held):]:
                fd = os.open(layout.segment_path(segment_id), os.O_RDONLY)
                held.append(fd)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        for fd in held:
            os.close(fd)
    assert len(layout.segment_ids_on_disk()) == n
    return {"runs": runs, "long": long_id}


@contextlib.contextmanager
def open_file_limit_at_least(n: int):
    """Raise this process's soft RLIMIT_NOFILE to at least ``n`` for a while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def expected_long(n: int):
    steps = np.arange(n * LONG_POINTS)
    return steps, run_values(-1, steps)


@pytest.fixture(scope="module")
def many_segments(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("descriptors") / "store.steplog")
    with open_file_limit_at_least(SEGMENTS + 256):
        return path, make_store(path, SEGMENTS)


@pytest.fixture
def copied_store(many_segments, tmp_path):
    """A private copy of the many-segment store, for a test that writes to it."""
    path, ids = many_segments
    copy = str(tmp_path / "store.steplog")
    shutil.copytree(path, copy)
    return copy, ids


# -- through the store ---------------------------------------------------------------

def test_open_descriptors_stay_bounded_while_reading_300_segments(many_segments):
    path, ids = many_segments
    before_open = fd_count()
    store = steplog.open(path, flush_interval=None)
    try:
        base = fd_count()
        peak = base
        for _ in range(2):
            for i, run_id in enumerate(ids["runs"]):
                steps = np.arange(i, i + POINTS)
                assert_points(store.read(run_id, "m"), steps, run_values(i, steps))
                peak = max(peak, fd_count())
            assert_points(store.read(ids["long"], "long"), *expected_long(SEGMENTS))   # 300 blocks, 2 threads
            peak = max(peak, fd_count())
        # numba may open its cache files for a moment on a first call: a little slack
        assert peak - base <= SegmentReader.DEFAULT_MAX_OPEN + 4, (base, peak)
        assert store._segments.open_count() <= SegmentReader.DEFAULT_MAX_OPEN
        assert store._segments.open_count() >= min(SegmentReader.DEFAULT_MAX_OPEN, 16)   # it does cache
    finally:
        store.close()
    assert fd_count() <= before_open


def test_concurrent_readers_of_many_segments_get_their_data_and_leak_nothing(many_segments):
    """User threads read while the decoding threads read the long series: the cache
    evicts all the time, with files in use."""
    path, ids = many_segments
    before_open = fd_count()
    errors = []
    with steplog.open(path, flush_interval=None) as store:
        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(150):
                    if rng.random() < 0.1:
                        assert_points(store.read(ids["long"], "long"), *expected_long(SEGMENTS))
                    else:
                        i = rng.randrange(SEGMENTS)
                        steps = np.arange(i, i + POINTS)
                        assert_points(store.read(ids["runs"][i], "m"), steps, run_values(i, steps))
            except BaseException as exc:   # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert store._segments.open_count() <= SegmentReader.DEFAULT_MAX_OPEN
    assert fd_count() <= before_open


CHILD = r'''
import json, os, resource, sys, threading
import numpy as np
import steplog

cfg = json.loads(sys.argv[1])
path, limit, runs, long_id, n = cfg["path"], cfg["limit"], cfg["runs"], cfg["long"], cfg["segments"]
POINTS, LONG_POINTS = cfg["points"], cfg["long_points"]

def run_values(i, steps):
    return np.sin(np.asarray(steps, dtype=np.float64) * 0.618033988749895 + i) * (1.0 + i)

def fd_count():
    return len(os.listdir("/proc/self/fd"))

def set_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

def check(table, steps, values):
    got_steps = table.column("step").to_numpy()
    got_values = table.column("value").to_numpy()
    assert got_steps.tolist() == list(steps), (got_steps[:5], steps[:5])
    assert got_values.view(np.uint64).tolist() == np.asarray(values).view(np.uint64).tolist()

if cfg["when"] == "before_open":
    set_limit()
store = steplog.open(path, flush_interval=None)
if cfg["when"] == "after_open":
    set_limit()
report = {"reads": 0, "peak_fds": fd_count(), "errors": []}
lock = threading.Lock()

def reader(offset):
    try:
        for rep in range(3):
            for k in range(len(runs)):
                i = (k + offset * 37) % len(runs)
                steps = np.arange(i, i + POINTS)
                check(store.read(runs[i], "m"), steps, run_values(i, steps))
                if k % 50 == 0:
                    steps = np.arange(n * LONG_POINTS)
                    check(store.read(long_id, "long"), steps, run_values(-1, steps))
                with lock:
                    report["reads"] += 1
                    report["peak_fds"] = max(report["peak_fds"], fd_count())
    except BaseException as exc:
        report["errors"].append(type(exc).__name__ + ": " + str(exc))

threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
table = store.read_many(experiment="many")
report["read_many_rows"] = table.num_rows
report["buckets_rows"] = store.read(long_id, "long", buckets=10).num_rows
# then write: the writer must still be able to open its segment
run = store.start_run(experiment="child", name="child")
steps = np.arange(1000)
run.log_batch("c", steps, run_values(1000, steps))
store.run(long_id).log_batch("long", np.arange(n * LONG_POINTS, (n + 1) * LONG_POINTS),
                             run_values(-1, np.arange(n * LONG_POINTS, (n + 1) * LONG_POINTS)))
store.flush()
check(store.read(run.id, "c"), steps, run_values(1000, steps))
steps = np.arange((n + 1) * LONG_POINTS)
check(store.read(long_id, "long"), steps, run_values(-1, steps))
store.close()
report["child_run"] = run.id
report["limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
print(json.dumps(report), flush=True)
'''


@pytest.mark.parametrize("when", ["before_open", "after_open"])
def test_reads_flush_and_close_work_under_a_low_open_file_limit(copied_store, when):
    path, ids = copied_store
    limit = 64
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(
        {"path": path, "limit": limit, "runs": ids["runs"], "long": ids["long"], "segments": SEGMENTS,
         "points": POINTS, "long_points": LONG_POINTS, "when": when})],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["limit"] == limit
    assert report["reads"] == 4 * 3 * SEGMENTS
    assert report["peak_fds"] <= limit
    assert report["read_many_rows"] == SEGMENTS * POINTS
    assert report["buckets_rows"] > 0
    # what the child wrote is there for a process without a limit
    with steplog.open(path, flush_interval=None) as store:
        steps = np.arange(1000)
        assert_points(store.read(report["child_run"], "c"), steps, run_values(1000, steps))
        assert_points(store.read(ids["long"], "long"), *expected_long(SEGMENTS + 1))
        for i in (0, SEGMENTS // 2, SEGMENTS - 1):
            steps = np.arange(i, i + POINTS)
            assert_points(store.read(ids["runs"][i], "m"), steps, run_values(i, steps))
    result = subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


# -- SegmentReader on its own ----------------------------------------------------------

def make_files(folder, n: int, size: int = 4096) -> list[bytes]:
    """n files named by number, each with its own bytes; returns their contents."""
    contents = []
    for i in range(n):
        data = (i.to_bytes(4, "little") * (size // 4))
        (folder / f"{i}.seg").write_bytes(data)
        contents.append(data)
    return contents


def path_in(folder):
    return lambda segment_id: str(folder / f"{segment_id}.seg")


def test_reader_keeps_at_most_max_open_files_least_recently_read_closed_first(tmp_path):
    contents = make_files(tmp_path, 50)
    reader = SegmentReader(path_in(tmp_path), max_open=4)
    base = fd_count()
    try:
        for rep in range(3):
            for i, data in enumerate(contents):
                assert reader.read(i, 8 * rep, 100) == data[8 * rep:8 * rep + 100]
                assert reader.open_count() <= 4
                assert fd_count() - base <= 4
        assert list(reader._open) == [46, 47, 48, 49]
        reader.read(46, 0, 4)                     # now the most recently read
        reader.read(0, 0, 4)                      # evicts 47, the least recently read
        assert list(reader._open) == [48, 49, 46, 0]
    finally:
        reader.close()
    assert fd_count() == base
    with pytest.raises(ClosedError):
        reader.read(0, 0, 4)
    assert fd_count() == base


def test_reader_max_open_is_checked():
    for bad in (0, -1):
        with pytest.raises(InvalidArgumentError):
            SegmentReader(str, max_open=bad)
    for bad in ("4", 4.0, True):
        with pytest.raises(InvalidTypeError):
            SegmentReader(str, max_open=bad)


def test_many_threads_on_a_tiny_cache_always_read_the_right_file(tmp_path):
    """With 2 files kept for 8 threads over 20 files, nearly every read evicts a file
    that another thread may be reading: a descriptor closed (and its number reused)
    under a read would return another file's bytes or fail with EBADF."""
    contents = make_files(tmp_path, 20, size=1 << 16)
    reader = SegmentReader(path_in(tmp_path), max_open=2)
    base = fd_count()
    errors = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                i = rng.randrange(len(contents))
                offset = rng.randrange(0, (1 << 16) - 4096, 4)
                assert reader.read(i, offset, 4096) == contents[i][offset:offset + 4096]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert reader.open_count() <= 2
    reader.close()
    assert fd_count() == base


def test_a_file_evicted_during_a_read_is_closed_by_that_read_when_it_ends(tmp_path, monkeypatch):
    contents = make_files(tmp_path, 3)
    reader = SegmentReader(path_in(tmp_path), max_open=1)
    reader.read(0, 0, 4)
    slow = reader._open[0]
    inode = os.fstat(slow.fd).st_ino
    entered, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def pread(fd, n, offset):
        if fd == slow.fd and threading.current_thread().name == "slow-reader":
            entered.set()
            assert release.wait(30)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    got = []
    t = threading.Thread(target=lambda: got.append(reader.read(0, 16, 64)), name="slow-reader")
    t.start()
    assert entered.wait(30)
    assert reader.read(1, 0, 64) == contents[1][:64]   # evicts segment 0 while it is being read
    assert reader.read(2, 0, 64) == contents[2][:64]
    assert 0 not in reader._open and slow.retired and not slow.closed
    assert os.fstat(slow.fd).st_ino == inode            # still open, still that file
    release.set()
    t.join(30)
    assert got == [contents[0][16:80]]
    assert slow.closed and not slow.users
    assert reader.read(0, 0, 8) == contents[0][:8]      # opened again
    reader.close()


EMFILE_CHILD = r'''
import errno, json, os, resource, sys
from steplog.engine.errors import StepLogError
from steplog.engine.segment import SegmentReader

folder, n = sys.argv[1], int(sys.argv[2])
path_of = lambda i: os.path.join(folder, f"{i}.seg")
expect = lambda i, offset, length: (i.to_bytes(4, "little") * 1024)[offset:offset + length]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
report = {}

def fill():
    """Take every free descriptor; returns them."""
    taken = []
    while True:
        try:
            taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return taken

reader = SegmentReader(path_of)               # 64 asked, the limit allows 16
for i in range(10):
    assert reader.read(i, 0, 8) == expect(i, 0, 8)
report["cached_before"] = reader.open_count()
taken = fill()
# no descriptor is free: the reader closes what it keeps and tries again
assert reader.read(20, 4, 8) == expect(20, 4, 8)
report["cached_after"] = reader.open_count()
report["ceiling"] = reader._ceiling
for i in range(10, 40):                       # goes on working with the descriptors it freed
    assert reader.read(i, 0, 8) == expect(i, 0, 8)
report["cached_later"] = reader.open_count()
taken += fill()
empty = SegmentReader(path_of)                # holds nothing it could give up
try:
    empty.read(0, 0, 8)
except StepLogError as exc:
    report["error"] = {"type": type(exc).__name__, "message": str(exc),
                       "cause_errno": getattr(exc.__cause__, "errno", None)}
for fd in taken:
    os.close(fd)
assert empty.read(0, 0, 8) == expect(0, 0, 8)  # and works again once descriptors are free
reader.close()
empty.close()
print(json.dumps(report), flush=True)
'''


def test_running_out_of_descriptors_evicts_and_retries_then_raises_a_steplog_error(tmp_path):
    make_files(tmp_path, 40)
    result = subprocess.run([sys.executable, "-c", EMFILE_CHILD, str(tmp_path), "40"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cached_before"] == 10
    assert report["cached_after"] == 1            # every kept file was closed for the retry
    assert report["ceiling"] == 5                 # and it keeps fewer from now on
    assert report["cached_later"] == 5
    error = report["error"]
    assert error["type"] == "StepLogError"
    assert "limit of 64 open files" in error["message"] and "0.seg" in error["message"]
    assert error["cause_errno"] == errno.EMFILE
