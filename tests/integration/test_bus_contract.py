"""The publish contract both bus backends keep (tracker_ws/bus/base.py): the memory bus and
the Redis bus (publish.lua against a real redis-server) give the same ids, deliveries, drops,
last positions and history for the same batches, whatever the strings in them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync

import tracker_ws.bus.memory as memory_mod
import tracker_ws.bus.redis as redis_mod
from tracker_ws.bus import Bus, Outgoing
from tracker_ws.bus.base import ALL_INSTANCES
from tracker_ws.bus.memory import MemoryBus
from tracker_ws.bus.redis import RedisBus, pack_batch, parse_delivery

ME = "ws-1"
PEER = "ws-2"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
DB = 7


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[int, bytes]] = []

    def __call__(self, items: list[tuple[int, bytes]]) -> None:
        self.items.extend(items)

    async def wait(self, n: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.items) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and nothing more than expected arrives
        return self.items


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Sink]]:
    sink = Sink()
    backend: Bus
    if request.param == "memory":
        backend = MemoryBus(ME)
    else:
        base = request.getfixturevalue("redis_url")
        url = base.rsplit("/", 1)[0] + f"/{DB}"
        redis_sync.Redis.from_url(url).flushdb()
        backend = RedisBus(url, ME)
        await backend.heartbeat(30)  # a member of ws:instances: '*' reaches it
    await backend.start(sink)
    try:
        yield backend, sink
    finally:
        await backend.close()


async def test_ids_routing_and_order(bus: tuple[Bus, Sink]) -> None:
    b, sink = bus
    ids = await b.publish(
        [
            Outgoing([ME], b'{"a":1}'),
            Outgoing([PEER], b'{"not":"mine"}'),
            Outgoing([PEER, ME], b'{"b":2}'),
            Outgoing([], b'{"nobody":0}'),
            Outgoing([ALL_INSTANCES], b'{"all":3}'),
        ]
    )
    assert len(ids) == 5 and ids == sorted(ids) and ids == list(range(ids[0], ids[0] + 5))
    got = await sink.wait(3)
    assert got == [(ids[0], b'{"a":1}'), (ids[2], b'{"b":2}'), (ids[4], b'{"all":3}')]
    more = await b.publish([Outgoing([ME], b"{}")])
    assert more == [ids[-1] + 1]


async def test_stale_fixes_and_duplicates_are_dropped(bus: tuple[Bus, Sink]) -> None:
    b, sink = bus
    first = await b.publish(
        [
            Outgoing([ME], b'{"p":1}', vehicle_id=V1, fix_ms=1000),
            Outgoing([ME], b'{"p":0}', vehicle_id=V1, fix_ms=1000),  # not newer: dropped
            Outgoing([ME], b'{"p":2}', vehicle_id=V2, fix_ms=5),
            Outgoing([ME], b'{"e":1}', dedupe_id="evt-1"),
            Outgoing([ME], b'{"e":1}', dedupe_id="evt-1"),  # seen: dropped
        ]
    )
    assert first[1] == 0 and first[4] == 0
    assert all(first[i] for i in (0, 2, 3))
    second = await b.publish(
        [
            Outgoing([ME], b'{"p":3}', vehicle_id=V1, fix_ms=999),  # older: dropped
            Outgoing([ME], b'{"p":4}', vehicle_id=V1, fix_ms=1001),
            Outgoing([ME], b'{"s":1}', vehicle_id=V2),  # no fix time: always goes
        ]
    )
    assert second[0] == 0 and second[1] > first[3] and second[2] == second[1] + 1
    got = await sink.wait(5)
    assert [p for _, p in got] == [b'{"p":1}', b'{"p":2}', b'{"e":1}', b'{"p":4}', b'{"s":1}']
    last = await b.last_positions([V1, V2, "unknown"])
    assert last == {V1: (second[1], b'{"p":4}'), V2: (second[2], b'{"s":1}')}


async def test_any_strings_survive_packing(bus: tuple[Bus, Sink]) -> None:
    """Non-ASCII, spaces and digits in every string field; a payload with spaces, a JSON
    newline escape and multi-byte text; targets and history streams of any length."""
    b, sink = bus
    vid = "машина 1 — ñ"
    stream = "ws:history:company:компания 7"
    payload = '{"name":"Грузовик №1 \\n x","emoji":"🚚"}'.encode()
    ids = await b.publish(
        [
            Outgoing(
                [PEER, "", ME, "ws-3 with spaces", "ещё"],
                payload,
                vehicle_id=vid,
                fix_ms=1_764_000_000_000,
                dedupe_id="ключ 42",
                history=[stream, "ws:history:user:u 1"],
            ),
            Outgoing([ME], b'{"x":1}', history=[stream]),
        ]
    )
    assert all(ids)
    assert await sink.wait(2) == [(ids[0], payload), (ids[1], b'{"x":1}')]
    assert await b.last_positions([vid]) == {vid: (ids[0], payload)}
    history, trimmed = await b.read_history([stream, "ws:history:user:u 1"], 0, 10)
    assert history == [(ids[0], payload), (ids[1], b'{"x":1}')] and not trimmed
    again = await b.publish([Outgoing([ME], b"{}", dedupe_id="ключ 42")])
    assert again == [0]


async def test_history_trim_sets_the_floor(
    bus: tuple[Bus, Sink], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, _ = bus
    monkeypatch.setattr(memory_mod, "HISTORY_CAP", 3)
    monkeypatch.setattr(redis_mod, "HISTORY_CAP", 3)
    stream = "ws:history:company:c1"
    ids = await b.publish([Outgoing([], b'{"n":%d}' % i, history=[stream]) for i in range(5)])
    history, trimmed = await b.read_history([stream], ids[0], 10)
    assert trimmed  # ids[1] is gone
    assert history == [(ids[i], b'{"n":%d}' % i) for i in (2, 3, 4)]
    history, trimmed = await b.read_history([stream], ids[1], 10)
    assert not trimmed


def test_pack_batch_layout() -> None:
    """The header publish.lua reads; lengths in bytes, not characters."""
    packed = pack_batch(
        [
            Outgoing(["w1"], b'{"a":1}', vehicle_id="v1", fix_ms=12),
            Outgoing(["ж", "w2"], b"{}", dedupe_id="d", history=["h"]),
        ]
    )
    assert packed == (b'1 0 12 2 0 7 2\nv1w1{"a":1}' + "2 1 - 0 1 2 2 2 1\ndжw2h{}".encode())


def test_parse_delivery() -> None:
    assert parse_delivery(b"") == []
    assert parse_delivery(b'7 {"a":"b c"}\n8 {}\n') == [(7, b'{"a":"b c"}'), (8, b"{}")]
