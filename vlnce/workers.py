"""Worker processes that do not outlive the command that started them."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from multiprocessing.pool import Pool
from typing import Any, Callable


def _exit_when_orphaned(parent: int, poll_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)  # nobody is left to read what this worker would return


def _start_worker(parent: int, poll_s: float, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    threading.Thread(target=_exit_when_orphaned, args=(parent, poll_s), daemon=True, name="exit-when-orphaned").start()
    if initializer is not None:
        initializer(*initargs)


def spawn_pool(processes: int, initializer: Callable[..., Any] | None = None, initargs: tuple = (),
               poll_s: float = 1.0) -> Pool:
    """A pool of ``processes`` fresh interpreters ("spawn": no forked torch threads or simulator
    state) whose workers exit within ``poll_s`` seconds of this process ending.

    A command stopped with SIGTERM or SIGKILL runs no clean-up, and a plain pool's workers would
    go on collecting or evaluating on every core for results nobody reads. Ctrl-C needs no help:
    the pool's context manager terminates its workers.
    """
    return mp.get_context("spawn").Pool(processes, _start_worker, (os.getpid(), poll_s, initializer, initargs))
