"""One flush loop per instance: every connection's outbound frames go out from here.

A connection with something to send is scheduled once, not woken per fix: a frame (reply,
event) or a position after an idle window is due at once, positions within the window are
due when it ends (domain/batching.Outbox.due_at). Due times are rounded up to a tick, so the
connections that flush in one tick share work: a position batch holding the same fixes is
built once (Outbox.take's `shared`) and every distinct message is framed once (wsframe.py);
the same bytes are then written to each transport. No task, event or timer per connection:
one `call_soon` for what is due at once, one timer for the earliest tick.

A connection whose transport holds more than its high-water mark (a peer that does not
read) is not written to; it is looked at again every tick while its positions keep
coalescing and its other frames queue up to the queue limit (then 4009, as before).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from typing import Protocol, TypeGuard

from tracker_ws.domain.batching import SharedBatches
from tracker_ws.domain.wsframe import FramedOnce

log = logging.getLogger(__name__)

IDLE = 0  # not scheduled
NOW = -1  # due at once


def reading(
    transport: asyncio.WriteTransport | None, high_water: int
) -> TypeGuard[asyncio.WriteTransport]:
    """A frame may be written now: the transport is open and holds no more than its
    high-water mark (over it, the peer does not read)."""
    return (
        transport is not None
        and not transport.is_closing()
        and transport.get_write_buffer_size() <= high_water
    )


class Flushable(Protocol):
    # IDLE, NOW, or the tick it is due at; owned by the Flusher.
    flush_slot: int

    def flush(self, now: float, shared: SharedBatches, framed: FramedOnce) -> int:
        """Write what is due; returns the number of frames written. Reschedules itself
        (Flusher.schedule) when something stays queued."""
        ...


class Flusher:
    def __init__(self, tick_s: float, on_sent: Callable[[dict[bytes, int]], None]) -> None:
        # on_sent: the writes of each message (payload) in one pass, for the metrics.
        self.tick = tick_s
        self.on_sent = on_sent
        self._now: list[Flushable] = []
        self._slots: dict[int, list[Flushable]] = {}
        self._heap: list[int] = []
        self._soon: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.runs = 0  # flushes done, for tests and the admin view

    def schedule(self, item: Flushable, due: float) -> None:
        """Flush `item` at loop time `due` (-inf: at once). An item already due earlier keeps
        its turn."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        slot = item.flush_slot
        if slot == NOW:
            return
        if due <= loop.time():
            item.flush_slot = NOW  # a stale entry in its tick is skipped there
            self._now.append(item)
            if self._soon is None:
                self._soon = loop.call_soon(self._run)
            return
        if slot != IDLE:
            return
        tick = math.ceil(due / self.tick)
        item.flush_slot = tick
        bucket = self._slots.get(tick)
        if bucket is None:
            self._slots[tick] = [item]
            heapq.heappush(self._heap, tick)
            self._arm(tick)
        else:
            bucket.append(item)

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            if self._timer_slot <= tick:
                return
            self._timer.cancel()
        assert self._loop is not None
        self._timer_slot = tick
        self._timer = self._loop.call_at(tick * self.tick, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # A timer may fire a little before its time (the loop's clock resolution): the tick
        # it was set for counts as come.
        self._run(self._timer_slot)

    def _run(self, reached: int = 0) -> None:
        loop = self._loop
        assert loop is not None
        if self._soon is not None:
            self._soon.cancel()  # this run does its work too
            self._soon = None
        self.runs += 1
        now = loop.time()
        due = self._now
        self._now = []
        heap = self._heap
        reached = max(reached, math.floor(now / self.tick))
        while heap and heap[0] <= reached:
            tick = heapq.heappop(heap)
            for item in self._slots.pop(tick):
                if item.flush_slot == tick:
                    due.append(item)
        now = max(now, reached * self.tick)
        for item in due:
            item.flush_slot = IDLE
        shared: SharedBatches = {}
        framed = FramedOnce()
        sent = 0
        for item in due:
            try:
                sent += item.flush(now, shared, framed)
            except Exception:
                # One connection's fault must not cost the others their turn.
                log.exception("flushing %r failed", item)
        if sent:
            self.on_sent(framed.counts())
        if heap:
            self._arm(heap[0])

    def pending(self) -> int:
        """Items waiting for a flush (stale tick entries included)."""
        return len(self._now) + sum(len(b) for b in self._slots.values())
