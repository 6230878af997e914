"""How late the event loop runs: one timer, due every `interval`, records how late it fired.

Every frame, fix and reply waits while the loop is busy with something else, so a stall shows
here before it shows anywhere else (a sweep that pinged 10,000 connections at once held the
loop for 0.3 s: bench/results/2026-12-07-i12-heartbeat.md; a gen-1 collection during a
connect storm, 0.28 s: 2026-12-07-i12-fanout.md). One `call_at` per interval, no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopLag:
    def __init__(self, interval_s: float, observe: Callable[[float], None]) -> None:
        self.interval = interval_s
        self._observe = observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._observe(max(0.0, now - self._due))
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._fire)
