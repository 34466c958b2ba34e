"""Worker processes (joblib's loky) that end with the process that started them."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is taken."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt():
    """While worker processes run, SIGTERM (`kill PID`, a job scheduler's stop) raises in the main thread as Ctrl-C
    does, so joblib stops the workers before this process ends. With SIGTERM's default action this process ended at
    once and its workers ran on, orphaned, finishing their jobs for no one. Only in the main thread and where SIGTERM
    has its default action: an application's own handler, or an enclosing use of this one, is left alone.
    A context manager and a decorator: held over a whole command (the CLI, `evaluate`, a benchmark's main), it also
    covers the main process's own work between two pools, while a pool's workers wait idle for the next one (loky
    keeps them); the interpreter's normal exit then ends them."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def in_processes(n_jobs: int, jobs, ordered: bool = True):
    """Each job's result (`joblib.delayed` calls) from `n_jobs` worker processes: in the jobs' order, or as they
    finish (`ordered=False`); SIGTERM ends the workers with this process (`sigterm_as_interrupt`)."""
    from joblib import Parallel
    with sigterm_as_interrupt():
        yield from Parallel(n_jobs=n_jobs, return_as="generator" if ordered else "generator_unordered")(jobs)
