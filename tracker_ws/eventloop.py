"""The worker's event loop: uvloop where it is installed (TRACKER_WS_UVLOOP, on by default).

uvloop runs the loop's own machinery (callbacks, timers, socket reads and writes) in C: per
frame written and per message read that is CPU the fan-out does not spend in Python. It is a
dependency on Linux and macOS; elsewhere, or with TRACKER_WS_UVLOOP=0, the worker runs on
asyncio's loop. Chosen through mode's `mode.loop.use`, what Faust's own `--loop uvloop` does,
before anything creates a loop.
"""

from __future__ import annotations

import asyncio
import importlib.util

UVLOOP = "uvloop"
ASYNCIO = "asyncio"


def choose(use_uvloop: bool) -> str:
    """Installs uvloop's policy when wanted and installed; returns the loop's name."""
    if not use_uvloop or importlib.util.find_spec("uvloop") is None:
        return ASYNCIO
    import mode.loop

    mode.loop.use(UVLOOP)
    return UVLOOP


def running() -> str:
    """The name of the running loop's implementation (for the start-up log line)."""
    loop = asyncio.get_running_loop()
    return UVLOOP if type(loop).__module__.startswith("uvloop") else ASYNCIO
