"""When each connection's token expires: one heap and one timer for the whole instance.

A `call_later` per connection costs about 0.7 KiB under uvloop (a handle, a libuv timer, the
bound method and its arguments: measured with 100,000 of them), a fifth of what an idle
connection may cost (bench S1). An entry here is a three-item list. A connection that ends
first cancels its entry, which drops the reference to it at once; the heap sheds cancelled
entries when they are the majority.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Any, Protocol

# A timer may fire a little early (the loop's clock resolution): what is due this soon counts.
EARLY_S = 0.001


class Expirable(Protocol):
    def on_token_expired(self) -> None: ...


Entry = list[Any]  # [loop time, sequence, Expirable or None when cancelled]


class Expiries:
    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = 0
        self._cancelled = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def add(self, when: float, target: Expirable) -> Entry:
        """Call `target.on_token_expired()` at loop time `when`; returns the entry to cancel."""
        self._seq += 1
        entry: Entry = [when, self._seq, target]
        heapq.heappush(self._heap, entry)
        if when < self._timer_at:
            self._arm(when)
        return entry

    def cancel(self, entry: Entry) -> None:
        if entry[2] is None:
            return
        entry[2] = None
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        heap = self._heap
        now = asyncio.get_running_loop().time() + EARLY_S
        due = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[2] is None:
                self._cancelled -= 1
            else:
                due.append(entry[2])
                entry[2] = None
        while heap and heap[0][2] is None:  # the next live one sets the timer
            heapq.heappop(heap)
            self._cancelled -= 1
        if heap:
            self._arm(heap[0][0])
        for target in due:
            target.on_token_expired()
