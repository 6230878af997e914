"""Batches agent output into one bus publish (one Redis round trip) per tick.

The agent appends and returns at once; a single task publishes whatever accumulated since
the previous publish. Idle: an event goes out at once. Busy (the previous publish was less
than TICK_S ago): the task gives the agent one tick to add more, so that a burst goes out
in a few round trips instead of one per event. Events that arrive while a publish is in
flight ride the next one together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tracker_ws.bus import Fanout, Outgoing
from tracker_ws.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BATCH = 2000
TICK_S = 0.002
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0
STOP_TIMEOUT_S = 5.0


def is_replayable(item: Outgoing) -> bool:
    """An event clients recover from history (it has a history stream or a dedupe id), not a
    position."""
    return bool(item.history or item.dedupe_id)


class Publisher:
    def __init__(self, bus: Fanout, metrics: Metrics) -> None:
        self.bus = bus
        self.metrics = metrics
        self._pending: list[Outgoing] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher")

    async def stop(self) -> None:
        # Bounded: with Redis away at shutdown, the kept events stay unacknowledged in Kafka.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), STOP_TIMEOUT_S)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(self, item: Outgoing) -> None:
        self._pending.append(item)
        self._idle.clear()
        self._wake.set()

    def add_many(self, items: list[Outgoing]) -> None:
        """add() for a batch of the agent's output (one wake-up, not one per item)."""
        if items:
            self._pending.extend(items)
            self._idle.clear()
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything added so far was handed to the bus. Without the task
        (before start(), after stop()) publish here: an agent that finishes an event while
        the instance starts or stops must not acknowledge an event nobody published. A bus
        error then propagates, and the event is not acknowledged."""
        if self._task is not None:
            await self._idle.wait()
            return
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                await self.bus.publish(batch)
            except BaseException:
                self._pending[:0] = batch  # kept, in order, for the next try
                raise
            self.published += len(batch)
        self._idle.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        retry_s = 0.0
        while True:
            await self._wake.wait()
            if loop.time() - last < TICK_S and len(self._pending) < MAX_BATCH:
                # Busy: one tick to batch (a timer, not a wait for a condition).
                await asyncio.sleep(TICK_S)
            last = loop.time()
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            if not self._pending:
                self._wake.clear()
            try:
                await self.bus.publish(batch)
                self.published += len(batch)
                retry_s = 0.0
            except Exception as exc:
                # Redis away. Positions are superseded by the next fix: dropped. Replayable
                # events are kept, in order, and retried: whoever waits for them in flush()
                # (the Kafka agents, before they acknowledge) waits until Redis has them.
                keep = [item for item in batch if is_replayable(item)]
                self._pending[:0] = keep
                self.dropped += len(batch) - len(keep)
                self.metrics.error("PUBLISH_FAILED")
                log.warning(
                    "publish of %d events failed (%d kept for a retry): %s",
                    len(batch),
                    len(keep),
                    exc,
                )
                if self._pending:
                    self._wake.set()
                    retry_s = min(RETRY_MAX_S, max(RETRY_MIN_S, retry_s * 2))
                    await asyncio.sleep(retry_s)  # a backoff timer: Redis gives no signal
            if not self._pending:
                self._idle.set()
