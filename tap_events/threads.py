"""Every thread the tap starts leaves SIGTERM and SIGINT to the main thread.

The kernel hands a signal sent to the process to any one of its threads that does not block
it. Python runs the handler on the main thread only, the next time that thread runs Python
code: if the signal lands on another thread while the main thread waits (joining the tail's
threads, reading a socket), the handler waits with it, for as long as that wait lasts (minutes
in tail mode), and the run does not end on SIGTERM. A thread started with the signals blocked
keeps them blocked (threads inherit their creator's mask), so the kernel has only the main
thread to give them to, and a signal interrupts whatever that thread is waiting in.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import typing as t

#: The signals the tap handles (`TapEvents.on_termination_signal`).
HANDLED = frozenset({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def signals_held() -> t.Iterator[None]:
    """Threads started inside block `HANDLED`. A signal that arrives meanwhile waits for the
    end of the block, then reaches the calling thread (microseconds later)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start(thread: threading.Thread) -> threading.Thread:
    """Start `thread` with `HANDLED` blocked in it."""
    with signals_held():
        thread.start()
    return thread
