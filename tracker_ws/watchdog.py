"""A hard bound on shutdown.

With the broker gone, Faust's stop waits on it for good (`Flush producer buffer`, then the
producer and consumer stops). Everything that matters to clients and peers (the drain, the
instance's Redis deregistration) happens before those waits, so after the bound the process
exits anyway, with one line saying why, rather than hang until the orchestrator kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# Non-zero: the stop was not clean (buffered broker writes may be lost).
EXIT_STOP_TIMEOUT = 1
TASK_LIST_WAIT_S = 1.0  # for the loop to list its tasks before the exit


class ShutdownWatchdog:
    """`arm(seconds)` once a stop begins; if the process is still alive after that, it exits.

    A thread, not an asyncio task: the event loop may be the thing that is stuck.
    """

    def __init__(self, exit_code: int = EXIT_STOP_TIMEOUT) -> None:
        self._exit_code = exit_code
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, seconds: float) -> None:
        """Start the countdown (a second call keeps the first deadline). Called on the event
        loop, it also lists that loop's tasks when it fires."""
        with self._lock:
            if self._timer is not None:
                return
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
            self._timer = threading.Timer(seconds, self._fire, args=(seconds,))
            self._timer.name = "shutdown-watchdog"
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self, seconds: float) -> None:
        log.error(
            "shutdown still not finished after %.0f s (broker unreachable?): exiting now", seconds
        )
        # Where it was stuck, for whoever reads the log: every thread's stack, on the
        # process's own stderr (Faust's worker replaces sys.stderr with a logging proxy
        # that has no file descriptor). Nothing may keep the exit below from happening.
        with contextlib.suppress(Exception):
            faulthandler.dump_traceback(file=sys.__stderr__ or sys.stderr, all_threads=True)
        # A loop that is only waiting can still say what each of its tasks waits for.
        if self._loop is not None:
            listed = threading.Event()
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(_log_tasks, listed)
                listed.wait(TASK_LIST_WAIT_S)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(self._exit_code)


def _log_tasks(done: threading.Event) -> None:
    """On the loop: each unfinished task and the line it is suspended at."""
    try:
        lines = []
        for task in asyncio.all_tasks():
            stack = task.get_stack(limit=1)
            where = f"{stack[0].f_code.co_filename}:{stack[0].f_lineno}" if stack else "(no frame)"
            coro = getattr(task.get_coro(), "__qualname__", "?")
            lines.append(f"  {coro} ({task.get_name():.40}) at {where}")
        log.error("tasks still running at the shutdown bound:\n%s", "\n".join(sorted(lines)))
    finally:
        done.set()
