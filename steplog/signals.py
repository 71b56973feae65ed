"""SIGTERM, the preemption signal of SLURM and Kubernetes: flush, end runs as "killed", then die.

The first ``steplog.open()`` in the main thread installs a SIGTERM handler and records
the handler it replaces (``signal.signal`` works only in the main thread; an open in
another thread installs nothing, and a later one in the main thread still does). A
daemonic multiprocessing child (a Pool worker) gets none: ``Pool.terminate()`` sends it
SIGTERM while its main thread waits in C for a task, and only SIGTERM's own action is
sure to end it then (see ``_in_pool_worker``). On SIGTERM the handler flushes every
store this process has open, ends the runs this process started or resumed and has not
ended with ``Run.end("killed")``, closes the stores, and then lets the signal take its
course, according to the handler it replaced:

- SIG_DFL (the usual case): it restores SIG_DFL and sends SIGTERM to its own process
  again, which dies of it (exit status -15 to Python's subprocess, 143 in a shell);
- a Python function: that function is called, with the same arguments, after the
  steplog work; the stores are closed by then, so logging raises ClosedError;
- SIG_IGN: the stores are only flushed; runs stay running, stores stay open, and the
  program goes on, as it chose to (SIGTERM no longer being ignored, a program it execs
  starts with SIG_DFL instead);
- a handler installed outside Python (``signal.getsignal`` gives None): steplog
  installs nothing, as it could not chain to it.

A handler the program installs after its first ``steplog.open()`` replaces steplog's:
steplog is then not called on SIGTERM, unless that handler calls the one that
``signal.signal`` returned to it. Python runs signal handlers in the main thread,
between bytecodes: while the main thread is in a long call into C code, SIGTERM waits
until it returns (without steplog, SIG_DFL killed at once).

Deadlocks. The handler runs in the main thread at whatever point the signal caught it,
possibly inside steplog, holding one of its locks (``Writer.seal_lock``, ``_cv``,
``publish_lock``, ``Index._write_lock``, the segment reader's lock; none is reentrant)
or an LMDB transaction. Taking such a lock in the handler, or waiting for a thread that
needs it, would hang for ever. So the handler takes no steplog lock and does no steplog
work itself:

1. It looks at the interrupted stack (its ``frame`` argument and the callers'). It puts
   the work off when the main thread runs steplog code that may hold a lock
   (steplog.store, steplog.run, steplog.engine.*, steplog.query.*, but not the
   lock-free logging paths: Run.log and the like) while one of steplog's locks is taken
   (the locks are found among the attributes of the open stores, of the objects they
   hold, and of steplog's modules, whatever their names; a taken plain lock may be the
   main thread's, or for a moment another thread's); when it is closing a store (let
   it finish); when it imports; or when it may hold a lock of threading,
   concurrent.futures or numba that a flush may need. Putting off means: ask the
   helper thread to send SIGTERM again a few milliseconds later, and return, so that
   the main thread runs on out of the locked section. The retries back off; past
   DEFER_SECONDS the handler goes ahead anyway.
2. The work runs in the helper thread, and the handler waits for it WORK_SECONDS at
   most; past that it chains as above all the same, and says so on stderr. The helper
   is a daemon thread started by ``steplog.open()`` (again in a forked child), idle
   until a SIGTERM: the handler starts no thread, and hands requests to the helper
   through a ``queue.SimpleQueue`` (its ``put`` is reentrant, safe in a signal handler).

Both bounds together stay under the 30 s that SLURM (KillWait) and Kubernetes
(terminationGracePeriodSeconds) grant by default between SIGTERM and SIGKILL. A SIGTERM
that arrives while the handler works is ignored: the one being handled decides.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from queue import SimpleQueue

from .engine.threads import leave_signals_to_main_thread

DEFER_SECONDS = 5.0    # how long the handler waits for the main thread to leave steplog code
WORK_SECONDS = 20.0    # how long it waits for the flush, the run ends and the closes
RETRY_FIRST, RETRY_MAX = 0.001, 0.01   # delays before SIGTERM is sent again (doubling)

# Code that may hold a steplog lock or LMDB transaction when the main thread is in it...
_LOCKING_MODULES = ("steplog.store", "steplog.run", "steplog.engine", "steplog.query")
_LOCKING_PACKAGES = ("steplog.engine.", "steplog.query.")
# ... except these functions, which take none themselves (what they call is checked on its own).
_LOCK_FREE = {"steplog.run": ("Run.log", "Run._log_dict", "Run.log_batch", "Run.log_tensor", "Run.log_tensors",
                              "Run._buffer", "Run._cache_slot", "Run._caches", "_context_key"),
              "steplog.engine.writer": ("SeriesBuffer.next_step", "SeriesBuffer.latest_step", "SeriesBuffer.append")}
_CLOSING = {"steplog.store": ("Store.close",)}   # the handler lets these finish
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_IMPORTING = ("<frozen importlib._bootstrap>", os.path.join("importlib", "_bootstrap.py"))

_lock = threading.Lock()   # guards install and the helper's start (never taken by the handler)
_installed = False         # the choice is made (in this process, or the one it was forked from)
_handling = False          # our handler is installed (by this process or the one it was forked from)
_previous = None           # the handler ours replaced
_helper: "tuple[threading.Thread, SimpleQueue, int] | None" = None   # thread, requests, pid
_lock_free_codes: frozenset = frozenset()
_closing_codes: frozenset = frozenset()
_files_cache: tuple = (-1, frozenset())   # (len(sys.modules), files of _LOCKING_MODULES)
_busy = False              # the handler is running (a SIGTERM then is ignored)
_deferred_since: float | None = None
_retries = 0
_retry_token = 0           # a pending resend goes out only while this is unchanged


def install() -> None:
    """Install the SIGTERM handler on the first call from the main thread; start the
    helper thread where it is not running. Called by ``steplog.open()``."""
    global _installed, _handling, _previous, _lock_free_codes, _closing_codes
    if not _installed and _in_pool_worker():
        _installed = True
    if not _installed and threading.current_thread() is threading.main_thread():
        with _lock:
            if not _installed:
                try:
                    previous = signal.getsignal(signal.SIGTERM)
                    if previous is not None and previous is not _on_sigterm:
                        _lock_free_codes, _closing_codes = _find_codes(_LOCK_FREE), _find_codes(_CLOSING)
                        _previous = previous
                        signal.signal(signal.SIGTERM, _on_sigterm)
                        _handling = True
                except ValueError:   # the main thread of another interpreter than the main one
                    pass
                _installed = True
    if _handling:
        _start_helper()


def _in_pool_worker() -> bool:
    """Whether this is a daemonic multiprocessing child, such as a Pool worker. Its main
    thread waits for tasks in a semaphore, in C: a SIGTERM that the kernel hands to
    another thread (one of numpy's, say) would then never reach the handler, and
    Pool.terminate() would wait for ever. There SIGTERM keeps its own action: it kills."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.current_process().daemon


def _start_helper() -> None:
    global _helper
    if _helper_alive(_helper):
        return
    with _lock:
        if not _helper_alive(_helper):
            requests: SimpleQueue = SimpleQueue()
            thread = threading.Thread(target=_serve, args=(requests,), name="steplog-sigterm", daemon=True)
            thread.start()
            _helper = (thread, requests, os.getpid())


def _helper_alive(helper) -> bool:
    return helper is not None and helper[2] == os.getpid() and helper[0].is_alive()


def _serve(requests: SimpleQueue) -> None:
    leave_signals_to_main_thread()   # SIGTERM must reach the main thread, which runs the handler
    while True:
        request = requests.get()
        try:
            request()
        except BaseException:  # the helper must outlive any request
            pass


def _after_fork_in_child() -> None:
    global _lock, _helper, _busy, _deferred_since, _retries
    _lock = threading.Lock()   # the parent's may have been held by another thread
    _helper, _busy, _deferred_since, _retries = None, False, None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the handler (main thread) -----------------------------------------------------------

def _on_sigterm(signum, frame) -> None:
    global _busy
    if _busy:
        return   # a SIGTERM during the handling of one
    _busy = True
    try:
        try:
            go_on = _steplog_part(frame if frame is not None else sys._getframe(1))
        except Exception as exc:  # a fault of steplog's must not keep the signal from its course
            _report([repr(exc)])
            go_on = True
        if go_on:
            _chain(_previous, signum, frame)
    finally:
        _busy = False


def _steplog_part(frame) -> bool:
    """Flush the stores (end the runs, close the stores) unless the main thread may hold
    a lock that work needs; then False: put off, SIGTERM comes again shortly."""
    global _deferred_since, _retries, _retry_token
    helper = _helper
    if not _helper_alive(helper):   # no store opened in this process
        return True
    stores = _open_stores()
    held = _main_thread_may_hold_a_lock(frame, stores)
    if held == "steplog" or (held and stores):   # steplog code: may be closing a store too
        now = time.monotonic()
        if _deferred_since is None:
            _deferred_since = now
        if now - _deferred_since < DEFER_SECONDS:
            _retry_token += 1
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** min(_retries, 16))
            _retries += 1
            helper[1].put(_resend_later(_retry_token, delay))
            return False   # the main thread runs on, out of the locked section
        stores = _open_stores()
    _retry_token += 1   # cancels a pending resend
    _deferred_since, _retries = None, 0
    if stores:
        _report(_run_work(helper[1], final=_previous is not signal.SIG_IGN))
    return True


def _run_work(requests: SimpleQueue, final: bool) -> list[str]:
    done, errors = threading.Event(), []
    requests.put(_work(final, done, errors))
    if not done.wait(WORK_SECONDS):
        errors.append(f"flushing and closing the stores did not finish within {WORK_SECONDS:g} s")
    return list(errors)


def _chain(previous, signum, frame) -> None:
    if previous is signal.SIG_IGN:
        return
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)   # SIG_DFL: die of the signal, as without steplog
    os.kill(os.getpid(), signum)


def _report(errors: list[str]) -> None:
    if errors:
        try:   # a raw write: the main thread may be inside a write to sys.stderr
            os.write(2, ("steplog: on SIGTERM: " + "; ".join(errors) + "\n").encode(errors="replace"))
        except OSError:
            pass


def _main_thread_may_hold_a_lock(frame, stores: list) -> str:
    """"steplog" when the interrupted main thread runs steplog code and one of the
    steplog locks is taken (perhaps by it), or it closes a store; "interpreter" when it
    imports, or it may hold a lock of the threading, concurrent.futures or numba modules
    that a flush may need; else ""."""
    files = _locking_files()
    in_steplog = importing = False
    while frame is not None:
        code = frame.f_code
        if code in _closing_codes:   # let it finish: that store is no longer among the open ones
            return "steplog"
        if code.co_filename in files and code not in _lock_free_codes:
            in_steplog = True
        elif code.co_filename.endswith(_IMPORTING):   # holds a module's import lock, or the global one
            importing = True
        frame = frame.f_back
    if in_steplog and not all(map(_free, _steplog_locks(stores))):
        return "steplog"
    if importing or not all(map(_free, _interpreter_locks())):
        return "interpreter"
    return ""


def _free(lock) -> bool:
    """Not held by the main thread (which runs this); a plain lock: held by no thread."""
    if hasattr(lock, "_is_owned"):   # an RLock: acquiring it would succeed in its owner
        return not lock._is_owned()
    if lock.acquire(False):
        lock.release()
        return True
    return False   # held by the main thread, or for a moment by another


def _steplog_locks(stores: list) -> list:
    """The locks of the open stores and of the objects they hold (Writer, Index, ...),
    and those of steplog's modules: wherever they are, whatever their names."""
    locks, seen = [], set()
    todo = [(store, 0) for store in stores]
    todo += [(module, 1) for name, module in list(sys.modules.items())
             if name.startswith("steplog.") and name != __name__]
    while todo:
        holder, depth = todo.pop()
        if id(holder) in seen:
            continue
        seen.add(id(holder))
        values = list(getattr(holder, "__dict__", {}).values())
        values += [getattr(holder, slot, None) for slot in getattr(type(holder), "__slots__", ())]
        for value in values:
            if isinstance(value, _LOCK_TYPES):
                locks.append(value)
            elif isinstance(value, threading.Condition):
                locks.append(value._lock)
            elif depth < 2 and type(value).__module__.startswith("steplog."):
                todo.append((value, depth + 1))
    return locks


def _locking_files() -> frozenset:
    global _files_cache
    modules = list(sys.modules.items())
    if _files_cache[0] != len(modules):
        files = set()
        for name, module in modules:
            if name in _LOCKING_MODULES or name.startswith(_LOCKING_PACKAGES):
                file = getattr(module, "__file__", None)
                if file:
                    files.add(file)
        _files_cache = (len(modules), frozenset(files))
    return _files_cache[1]


def _interpreter_locks() -> list:
    """Locks a flush may need: starting a thread (the flusher's encoding pool),
    submitting to a ThreadPoolExecutor, compiling or loading a numba kernel."""
    locks = [getattr(threading, "_active_limbo_lock", None), getattr(threading, "_shutdown_locks_lock", None)]
    futures = sys.modules.get("concurrent.futures.thread")
    if futures is not None:
        locks.append(getattr(futures, "_global_shutdown_lock", None))
    numba_lock = sys.modules.get("numba.core.compiler_lock")
    if numba_lock is not None:
        locks.append(getattr(getattr(numba_lock, "global_compiler_lock", None), "_lock", None))
    return [lock for lock in locks if lock is not None and hasattr(lock, "acquire")]


def _find_codes(functions: dict) -> frozenset:
    codes = set()
    for module_name, names in functions.items():
        module = sys.modules.get(module_name)
        for name in names:
            found = module
            for part in name.split("."):
                found = getattr(found, part, None)
            code = getattr(found, "__code__", None)
            if code is not None:
                codes.add(code)
    return frozenset(codes)


def _open_stores() -> list:
    store_module = sys.modules.get("steplog.store")
    if store_module is None:
        return []
    pid = os.getpid()
    return [s for s in list(store_module._open_stores) if not s._closed and s._pid == pid]


# -- the work (helper thread) ------------------------------------------------------------

def _resend_later(token: int, delay: float):
    def resend() -> None:
        time.sleep(delay)
        if token == _retry_token and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
    return resend


def _work(final: bool, done: threading.Event, errors: list):
    def work() -> None:
        try:
            _shutdown(final, errors)
        except BaseException as exc:
            errors.append(repr(exc))
        finally:
            done.set()
    return work


def _shutdown(final: bool, errors: list) -> None:
    """Flush every open store; when ``final``, end the unended runs this process started
    or resumed as "killed" and close the stores."""
    stores = _open_stores()
    for store in stores:
        _attempt(errors, store, "flush", store.flush)
    if not final:
        return
    for store in stores:
        try:
            runs = _unended_runs(store)
        except Exception as exc:
            errors.append(f"{store.path}: finding its runs: {exc!r}")
            continue
        for run in runs:
            _attempt(errors, store, f"ending run {run.id}", run.end, "killed")
    for store in stores:
        _attempt(errors, store, "close", store.close)


def _unended_runs(store) -> list:
    return [run for run in list(store._runs.values()) if run._stop is None]


def _attempt(errors: list, store, what: str, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # one store failing must not keep the others open
        errors.append(f"{store.path}: {what}: {exc!r}")
