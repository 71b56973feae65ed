"""A note on stderr while a numba kernel compiles for longer than a moment.

numba compiles a kernel on its first call with new argument types and caches the
machine code on disk; a later process loads it in milliseconds. A compile from an
empty cache takes seconds, and without a word a training loop looks hung. So every
kernel that Python calls (not the helpers that only kernels call) goes through
``announce``: when numba has to look for code for new argument types, a timer starts;
if that is still going after ``STEPLOG_COMPILE_NOTE_SECONDS`` (1 s by default), one
line goes to stderr, once per group and argument description in a process:

    steplog: compiling tensor-summary kernels for float32 (first use, cached afterwards)...

A cache load ends before the timer fires and says nothing. This module does not import
numba: it only wraps the dispatcher's ``_compile_for_args``, the method numba calls
(from C) when no compiled code matches a call's argument types.
"""

from __future__ import annotations

import os
import sys
import threading

NOTE_SECONDS_ENV = "STEPLOG_COMPILE_NOTE_SECONDS"
_said: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _threshold() -> float:
    try:
        return float(os.environ.get(NOTE_SECONDS_ENV, "1"))
    except ValueError:
        return 1.0


def _say(key: tuple[str, str]) -> None:
    with _lock:
        if key in _said:
            return
        _said.add(key)
    group, what = key
    suffix = f" for {what}" if what else ""
    print(f"steplog: compiling {group} kernels{suffix} (first use, cached afterwards)...", file=sys.stderr, flush=True)


def announce(dispatcher, group: str, describe=None):
    """Make ``dispatcher`` (a numba kernel) say on stderr when a compile of it is slow.
    ``describe(*args) -> str`` names what is compiled for (a dtype, say); returns the
    dispatcher, so that it can end a module: ``f = announce(f, "block codec")``."""
    compile_for_args = dispatcher._compile_for_args

    def timed(*args, **kws):
        what = describe(*args) if describe is not None else ""
        key = (group, what)
        if key in _said:
            return compile_for_args(*args, **kws)
        timer = threading.Timer(_threshold(), _say, (key,))
        timer.daemon = True
        timer.start()
        try:
            return compile_for_args(*args, **kws)
        finally:
            timer.cancel()

    dispatcher._compile_for_args = timed
    return dispatcher


def announce_all(namespace: dict, names, group: str, describe=None) -> None:
    """``announce`` every kernel named in ``names`` of a module's namespace."""
    for name in names:
        announce(namespace[name], group, describe)


# Compile at install (the Makefile's install step): the kernels that a first script
# needs, compiled into numba's on-disk cache in parallel processes, so that a new
# install does not wait seconds at its first flush, summary or read. Each job goes
# through the public API, so it compiles exactly what real use compiles.
_WARM_STORE = """
import sys, tempfile, numpy as np, steplog
from steplog.engine.twins import use_kernels
use_kernels()   # the codec and rollup kernels, not their numpy twins, which small work uses
with tempfile.TemporaryDirectory() as d, steplog.open(d + "/s") as store:
    run = store.start_run()
    run.log_batch("loss", steps=np.arange(10_000), values=np.random.default_rng(0).random(10_000))
    run.log("acc", 0.5, step=0)
    run.log_tensor("w", np.ones((4, 4), np.float32), step=0)
    run.log_tensor("e", np.ones((4, 4), np.float32), step=0, edges=np.linspace(0.0, 2.0, 5))
    run.flush()
    store.read(run.id, "loss", buckets=100)
    store.read(run.id, "loss", buckets=100, method="lttb")
    store.read(run.id, "loss", buckets=10, method="m4")
    store.read(run.id, "loss")
    store.read_tensor(run.id, "w")
"""
_WARM_DTYPE = """
import sys, numpy as np
from steplog.engine.summary import summarize
tensor = np.arange(100).astype(sys.argv[1])
summarize(tensor)
summarize(tensor, edges=np.linspace(0.0, 99.0, 9))   # caller edges compile a path of their own
"""
_WARM_TENSORBOARD = """
import os, struct, tempfile
try:
    from tensorboard.compat.proto.event_pb2 import Event
except ImportError:
    raise SystemExit(0)   # the tensorboard extra is not installed: nothing of it to compile
from steplog.bindings.tensorboard.events import masked_crc32c
from steplog.bindings.tensorboard.importer import import_tensorboard
with tempfile.TemporaryDirectory() as d:
    os.makedirs(d + "/logs/run")
    with open(d + "/logs/run/events.out.tfevents.0.warm", "wb") as f:
        for step in range(3):
            event = Event(wall_time=1.0 + step, step=step)
            event.summary.value.add(tag="loss", simple_value=0.5)
            data = event.SerializeToString()
            head = struct.pack("<Q", len(data))
            f.write(head + struct.pack("<I", masked_crc32c(head)) + data + struct.pack("<I", masked_crc32c(data)))
    import_tensorboard(d + "/logs", d + "/store")
"""
WARM_UP_DTYPES = ("float64", "float16", "int64")   # float32: the store job logs one


def warm_up(dtypes=WARM_UP_DTYPES, jobs: int | None = None) -> bool:
    """Fill numba's cache for the write and read paths and the tensor summaries of
    ``dtypes``, at most ``jobs`` processes at a time (default: the CPU count); -> whether
    every job succeeded (a failed one only leaves its kernels to compile on first use)."""
    import subprocess

    commands = ([[sys.executable, "-c", _WARM_STORE], [sys.executable, "-c", _WARM_TENSORBOARD]]
                + [[sys.executable, "-c", _WARM_DTYPE, d] for d in dtypes])
    jobs = max(1, jobs or os.cpu_count() or 1)
    ok = True
    running: list[subprocess.Popen] = []
    for command in commands:
        if len(running) >= jobs:
            ok &= running.pop(0).wait() == 0
        running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
    for proc in running:
        ok &= proc.wait() == 0
    return ok
