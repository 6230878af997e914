"""Single-instance backend: the same contract in process memory (TRACKER_WS_REDIS_URL=memory://)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from tracker_ws.bus.base import Bus, DeliveryHandler, Outgoing


class MemoryBus(Bus):
    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self._next_id = 1
        self._last: dict[str, tuple[int, bytes]] = {}
        self._handler: DeliveryHandler | None = None

    async def start(self, on_deliver: DeliveryHandler) -> None:
        self._handler = on_deliver

    async def close(self) -> None:
        self._handler = None

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        first = self._next_id
        self._next_id += len(items)
        mine: list[tuple[int, bytes]] = []
        for event_id, item in enumerate(items, first):
            if item.vehicle_id is not None:
                self._last[item.vehicle_id] = (event_id, item.payload)
            if self.instance_id in item.targets:
                mine.append((event_id, item.payload))
        if mine and self._handler is not None:
            # Deliver on the next loop turn, like a pub/sub message would arrive.
            asyncio.get_running_loop().call_soon(self._handler, mine)
        return list(range(first, self._next_id))

    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        return {v: self._last[v] for v in vehicle_ids if v in self._last}

    async def ping(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return self._handler is not None
