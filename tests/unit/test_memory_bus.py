"""The in-process fan-out (tracker_ws/bus/memory.py): ids, delivery and last positions without
Redis (tests/contract/ runs the shared contract on every backend)."""

from __future__ import annotations

import asyncio

import pytest

from tracker_ws.bus import Outgoing
from tracker_ws.bus.memory import MemoryFanout

ME = "ws-1"
PEER = "ws-2"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"


class Sink:
    def __init__(self) -> None:
        self.calls: list[list[tuple[int, bytes]]] = []

    def __call__(self, items: list[tuple[int, bytes]]) -> None:
        self.calls.append(list(items))

    @property
    def items(self) -> list[tuple[int, bytes]]:
        return [item for call in self.calls for item in call]


async def settle() -> None:
    # Deliveries are scheduled with call_soon: one loop turn runs them.
    await asyncio.sleep(0)


@pytest.fixture
def bus() -> MemoryFanout:
    return MemoryFanout(ME)


async def test_consecutive_event_ids_across_publishes(bus: MemoryFanout) -> None:
    await bus.start(Sink())
    assert await bus.publish([Outgoing([ME], b"a"), Outgoing([], b"b")]) == [1, 2]
    assert await bus.publish([]) == []
    assert await bus.publish([Outgoing([PEER], b"c")]) == [3]
    assert await bus.publish([Outgoing([ME], b"%d" % i) for i in range(5)]) == [4, 5, 6, 7, 8]


async def test_ids_assigned_even_without_a_handler(bus: MemoryFanout) -> None:
    # Before start (or after close) nothing is delivered, but ids keep counting.
    assert not bus.connected
    assert await bus.publish([Outgoing([ME], b"x")]) == [1]
    await settle()
    sink = Sink()
    await bus.start(sink)
    assert bus.connected
    assert await bus.publish([Outgoing([ME], b"y")]) == [2]
    await settle()
    assert sink.items == [(2, b"y")]  # the early one is not replayed
    await bus.close()
    assert not bus.connected
    assert await bus.publish([Outgoing([ME], b"z")]) == [3]
    await settle()
    assert sink.items == [(2, b"y")]


async def test_delivers_only_items_targeted_at_this_instance_in_order(bus: MemoryFanout) -> None:
    sink = Sink()
    await bus.start(sink)
    ids = await bus.publish(
        [
            Outgoing([ME], b"one"),
            Outgoing([PEER], b"not mine"),
            Outgoing([PEER, ME], b"two"),
            Outgoing([], b"nobody"),
            Outgoing((ME,), b"three"),
        ]
    )
    assert ids == [1, 2, 3, 4, 5]
    assert sink.calls == []  # not synchronously inside publish
    await settle()
    assert sink.calls == [[(1, b"one"), (3, b"two"), (5, b"three")]]  # one call per publish


async def test_nothing_for_this_instance_means_no_call(bus: MemoryFanout) -> None:
    sink = Sink()
    await bus.start(sink)
    await bus.publish([Outgoing([PEER], b"a"), Outgoing([], b"b")])
    await settle()
    assert sink.calls == []


async def test_delivery_order_across_publishes(bus: MemoryFanout) -> None:
    sink = Sink()
    await bus.start(sink)
    for i in range(10):
        await bus.publish([Outgoing([ME] if i % 3 else [PEER], b"%d" % i)])
    await settle()
    ids = [eid for eid, _ in sink.items]
    assert ids == sorted(ids)
    assert sink.items == [(i + 1, b"%d" % i) for i in range(10) if i % 3]


async def test_two_instances_have_separate_id_spaces() -> None:
    # The memory backend is single-instance: each MemoryFanout is its own world.
    a, b = MemoryFanout("a"), MemoryFanout("b")
    sa, sb = Sink(), Sink()
    await a.start(sa)
    await b.start(sb)
    assert await a.publish([Outgoing(["a", "b"], b"x")]) == [1]
    await settle()
    assert sa.items == [(1, b"x")]
    assert sb.items == []


async def test_last_positions_mirror_keeps_newest(bus: MemoryFanout) -> None:
    await bus.start(Sink())
    await bus.publish(
        [
            Outgoing([PEER], b"v1-a", vehicle_id=V1),
            Outgoing([ME], b"geo", vehicle_id=None),
            Outgoing([], b"v2-a", vehicle_id=V2),  # mirrored even with no target
        ]
    )
    assert await bus.last_positions([V1, V2]) == {V1: (1, b"v1-a"), V2: (3, b"v2-a")}
    await bus.publish(
        [Outgoing([ME], b"v1-b", vehicle_id=V1), Outgoing([], b"v1-c", vehicle_id=V1)]
    )
    assert await bus.last_positions([V1]) == {V1: (5, b"v1-c")}
    assert await bus.last_positions([V2]) == {V2: (3, b"v2-a")}


async def test_last_positions_unknown_and_empty(bus: MemoryFanout) -> None:
    assert await bus.last_positions([]) == {}
    assert await bus.last_positions([V1]) == {}
    await bus.publish([Outgoing([], b"p", vehicle_id=V1)])
    assert await bus.last_positions(iter([V2, V1])) == {V1: (1, b"p")}


async def test_ping_and_instance_id(bus: MemoryFanout) -> None:
    assert bus.instance_id == ME
    assert await bus.ping() is True
