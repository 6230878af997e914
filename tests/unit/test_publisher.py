"""Publisher: an event the agents wait for is published whether or not the task runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tracker_ws.agents.publisher import Publisher
from tracker_ws.bus import Outgoing
from tracker_ws.bus.memory import MemoryFanout, MemoryStore
from tracker_ws.metrics import Metrics


def event(n: int) -> Outgoing:
    return Outgoing(["*"], b'{"t":"notif","n":%d}' % n, dedupe_id=f"d{n}", history=["h"])


class FailingBus(MemoryFanout):
    def __init__(self) -> None:
        super().__init__("i1")
        self.fail = True
        self.failures = 0
        self.failed_thrice = asyncio.Event()

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        if self.fail:
            self.failures += 1
            if self.failures >= 3:
                self.failed_thrice.set()
            raise ConnectionError("Redis is away")
        return await super().publish(items)


async def published(bus: MemoryFanout) -> list[bytes]:
    events, _ = await MemoryStore(bus.history).read_history(["h"], 0, 100)
    return [payload for _, payload in events]


async def test_flush_before_start_publishes_what_was_added() -> None:
    bus = MemoryFanout("i1")
    pub = Publisher(bus, Metrics("i1"))
    pub.add(event(1))
    await pub.flush()
    assert await published(bus) == [event(1).payload]


async def test_flush_after_stop_publishes_what_was_added() -> None:
    bus = MemoryFanout("i1")
    pub = Publisher(bus, Metrics("i1"))
    pub.start()
    pub.add(event(1))
    await pub.stop()
    pub.add(event(2))  # an agent still finishing an event while the instance stops
    await pub.flush()
    assert await published(bus) == [event(1).payload, event(2).payload]


async def test_without_the_task_a_bus_error_reaches_the_agent_and_keeps_the_event() -> None:
    bus = FailingBus()
    pub = Publisher(bus, Metrics("i1"))
    pub.add(event(1))
    with pytest.raises(ConnectionError):
        await pub.flush()
    bus.fail = False
    pub.add(event(2))
    await pub.flush()
    assert await published(bus) == [event(1).payload, event(2).payload]


def position(n: int) -> Outgoing:
    return Outgoing(["i1"], b'{"t":"pos","n":%d}' % n, vehicle_id="v1", fix_ms=n)


async def test_while_redis_is_away_events_wait_and_positions_are_dropped() -> None:
    bus = FailingBus()
    pub = Publisher(bus, Metrics("i1"))
    pub.start()
    try:
        pub.add(position(1))
        pub.add(event(1))
        waiting = asyncio.ensure_future(pub.flush())  # what a Kafka agent does before its ack
        await asyncio.wait_for(bus.failed_thrice.wait(), 5)  # retried while Redis is away
        assert not waiting.done()
        assert pub.dropped == 1
        bus.fail = False
        await asyncio.wait_for(waiting, 5)
        assert await published(bus) == [event(1).payload]
        assert pub.published == 1
    finally:
        await pub.stop()
