"""Threads that steplog starts leave process signals to the main thread.

SIGINT and SIGTERM have Python handlers, which only the main thread runs. The kernel
hands a process-directed signal to any thread that does not block it; given to one of
steplog's threads, it wakes nobody, and a main thread blocked in a C call (a lock or
semaphore wait, as in multiprocessing's pool workers) never runs the handler: Ctrl-C
or Pool.terminate() then hang. So every thread steplog starts blocks them first.
"""

from __future__ import annotations

import signal

MAIN_THREAD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def leave_signals_to_main_thread() -> None:
    """Block SIGINT and SIGTERM in the calling thread (a thread steplog started)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
