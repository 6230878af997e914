"""A hard bound on shutdown.

With the broker gone, Faust's stop waits on it for good (`Flush producer buffer`, then the
producer and consumer stops). Everything that matters to clients and peers (the drain, the
instance's Redis deregistration) happens before those waits, so after the bound the process
exits anyway, with one line saying why, rather than hang until the orchestrator kills it.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# Non-zero: the stop was not clean (buffered broker writes may be lost).
EXIT_STOP_TIMEOUT = 1


class ShutdownWatchdog:
    """`arm(seconds)` once a stop begins; if the process is still alive after that, it exits.

    A thread, not an asyncio task: the event loop may be the thing that is stuck.
    """

    def __init__(self, exit_code: int = EXIT_STOP_TIMEOUT) -> None:
        self._exit_code = exit_code
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, seconds: float) -> None:
        """Start the countdown (a second call keeps the first deadline)."""
        with self._lock:
            if self._timer is not None:
                return
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
        # Where it was stuck, for whoever reads the log: every thread's stack.
        faulthandler.dump_traceback(all_threads=True)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(self._exit_code)
