"""Publisher: an event the agents wait for is published whether or not the task runs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tracker_ws.agents.publisher import Publisher
from tracker_ws.bus import Outgoing
from tracker_ws.bus.memory import MemoryBus
from tracker_ws.metrics import Metrics


def event(n: int) -> Outgoing:
    return Outgoing(["*"], b'{"t":"notif","n":%d}' % n, dedupe_id=f"d{n}", history=["h"])


class FailingBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__("i1")
        self.fail = True

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        if self.fail:
            raise ConnectionError("Redis is away")
        return await super().publish(items)


async def published(bus: MemoryBus) -> list[bytes]:
    events, _ = await bus.read_history(["h"], 0, 100)
    return [payload for _, payload in events]


async def test_flush_before_start_publishes_what_was_added() -> None:
    bus = MemoryBus("i1")
    pub = Publisher(bus, Metrics("i1"))
    pub.add(event(1))
    await pub.flush()
    assert await published(bus) == [event(1).payload]


async def test_flush_after_stop_publishes_what_was_added() -> None:
    bus = MemoryBus("i1")
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
