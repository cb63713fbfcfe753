"""Worker processes that exit with their parent.

joblib's loky workers outlive a parent that is killed with SIGKILL (no ``atexit``, no clean
shutdown): they sit idle until loky's idle timeout (300 s), holding memory, and a worker in
the middle of a training block keeps computing it. :func:`workers_exit_with_parent` is a
context in which every loky worker that joblib starts runs :func:`exit_with_parent` first: a
daemon thread that checks every :data:`PARENT_POLL_SECONDS` whether the process that started
the worker is still its parent, and ends the worker (``os._exit``) as soon as it is not (the
parent died and the worker was re-parented to init or a subreaper).

Polling the parent's pid works on every POSIX system and needs no cooperation from the parent.
(Linux's ``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the *thread* that spawned the
worker ends, and loky spawns replacement workers from its manager thread, so a live parent
could lose its workers.) The ``slam`` command runs every subcommand in this context.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from joblib import parallel_config

__all__ = ["PARENT_POLL_SECONDS", "exit_with_parent", "workers_exit_with_parent"]

#: Seconds between a worker's checks that its parent is alive (how long an orphan lives at most).
PARENT_POLL_SECONDS = 0.5


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone: nothing will collect this worker's results
        time.sleep(poll_seconds)


def exit_with_parent(parent_pid: int, poll_seconds: float = PARENT_POLL_SECONDS) -> None:
    """Worker initializer: end this process once ``parent_pid`` is no longer its parent.

    Parameters
    ----------
    parent_pid : int
        The pid of the process that starts the workers (``os.getpid()`` there).
    poll_seconds : float
        Seconds between checks.
    """
    if os.getppid() != parent_pid:  # the parent died before the worker started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), name="slamlib-parent-watch",
                     daemon=True).start()


@contextlib.contextmanager
def workers_exit_with_parent() -> Iterator[None]:
    """Within this context, joblib's process workers (loky) run :func:`exit_with_parent` when they start."""
    with parallel_config(backend="loky", initializer=exit_with_parent, initargs=(os.getpid(),)):
        yield
