"""Worker processes (joblib's loky) that end with the process that started them."""

from __future__ import annotations

import os
import signal
import threading
import time
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
    finish (`ordered=False`). SIGTERM ends the workers with this process (`sigterm_as_interrupt`), and so does a
    SIGKILL, which no process can catch: each worker watches for the loss of its parent (`_watch_parent`)."""
    from joblib import Parallel
    with sigterm_as_interrupt():
        yield from Parallel(n_jobs=n_jobs, return_as="generator" if ordered else "generator_unordered",
                            initializer=_watch_parent, initargs=(os.getpid(),))(jobs)


def _watch_parent(parent: int, every: float = 1.0) -> None:
    """Run in each worker process as it starts: a daemon thread that ends the worker (at once, as the parent's
    SIGKILL would have) once its parent is no longer `parent` (the orphan is handed to init or a subreaper). Killed
    outright (the OOM killer, `kill -9`), the parent cannot stop its workers; loky's went on with their jobs (a
    whole evaluation unit: up to an hour) for no one, or idled on for loky's five-minute timeout."""
    def watch():   # loky starts its workers as the parent's own children: another parent means it is gone
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    if os.getppid() != parent:   # killed while this worker was starting up
        os._exit(1)
    threading.Thread(target=watch, name="diffaug-parent-watch", daemon=True).start()
