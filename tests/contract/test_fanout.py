"""The fan-out contract (tracker_ws/bus/fanout.py) on memory, one Redis and a Redis Cluster:
increasing ids, delivery per target and to '*', dedupe, stale fixes, last positions."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.conftest import Backend
from tracker_ws.bus import Outgoing
from tracker_ws.bus.base import ALL_INSTANCES
from tracker_ws.bus.keys import KeySpace
from tracker_ws.bus.redis import pack_batch, parse_delivery

ME = "ws-1"
PEER = "ws-2"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"


async def test_ids_increase_and_each_instance_gets_what_targets_it(backend: Backend) -> None:
    me = await backend.node(ME)
    ids = await me.bus.fanout.publish(
        [
            Outgoing([ME], b'{"a":1}'),
            Outgoing([PEER], b'{"not":"mine"}'),
            Outgoing([PEER, ME], b'{"b":2}'),
            Outgoing([], b'{"nobody":0}'),
            Outgoing([ALL_INSTANCES], b'{"all":3}'),
        ]
    )
    assert ids == list(range(ids[0], ids[0] + 5)) and ids[0] > 0
    assert await me.fence() == [(ids[0], b'{"a":1}'), (ids[2], b'{"b":2}'), (ids[4], b'{"all":3}')]
    assert await me.bus.fanout.publish([]) == []
    more = await me.bus.fanout.publish([Outgoing([ME], b"%d" % i) for i in range(3)])
    assert more[0] > ids[-1] and more == list(range(more[0], more[0] + 3))


async def test_delivery_across_instances_and_to_every_registered_one(shared: Backend) -> None:
    me, peer = await shared.node(ME), await shared.node(PEER)
    late = await shared.node("ws-3", alive=False)  # not in the set of instances: no '*'
    ids = await me.bus.fanout.publish(
        [
            Outgoing([PEER], b'{"p":1}'),
            Outgoing([ALL_INSTANCES], b'{"all":2}'),
            Outgoing([ME], b'{"m":3}'),
            Outgoing(["ws-3"], b'{"named":4}'),
        ]
    )
    assert await peer.fence() == [(ids[0], b'{"p":1}'), (ids[1], b'{"all":2}')]
    assert await me.fence() == [(ids[1], b'{"all":2}'), (ids[2], b'{"m":3}')]
    assert await late.fence() == [(ids[3], b'{"named":4}')]
    # The peer's own publishes share the one id sequence.
    [next_id] = await peer.bus.fanout.publish([Outgoing([ME], b"{}")])
    assert next_id > ids[-1]


async def test_stale_fixes_and_duplicates_are_dropped(backend: Backend) -> None:
    me = await backend.node(ME)
    pub = me.bus.fanout.publish
    first = await pub(
        [
            Outgoing([ME], b'{"p":1}', vehicle_id=V1, fix_ms=1000),
            Outgoing([ME], b'{"p":0}', vehicle_id=V1, fix_ms=1000),  # not newer: dropped
            Outgoing([ME], b'{"p":2}', vehicle_id=V2, fix_ms=5),
            Outgoing([ME], b'{"e":1}', dedupe_id="evt-1"),
            Outgoing([ME], b'{"e":1}', dedupe_id="evt-1"),  # seen: dropped
        ]
    )
    assert first[1] == 0 and first[4] == 0 and all(first[i] for i in (0, 2, 3))
    second = await pub(
        [
            Outgoing([ME], b'{"p":3}', vehicle_id=V1, fix_ms=999),  # older: dropped
            Outgoing([ME], b'{"p":4}', vehicle_id=V1, fix_ms=1001),
            Outgoing([ME], b'{"s":1}', vehicle_id=V2),  # no fix time: always goes
            Outgoing([ME], b'{"e":1}', dedupe_id="evt-1"),  # seen in an earlier batch
        ]
    )
    assert second[0] == 0 and second[3] == 0
    assert second[1] > first[3] and second[2] == second[1] + 1
    got = await me.fence()
    assert [p for _, p in got] == [b'{"p":1}', b'{"p":2}', b'{"e":1}', b'{"p":4}', b'{"s":1}']
    last = await me.bus.fanout.last_positions([V1, V2, "unknown"])
    assert last == {V1: (second[1], b'{"p":4}'), V2: (second[2], b'{"s":1}')}
    assert await me.bus.fanout.last_positions([]) == {}


async def test_a_dedupe_id_is_shared_by_instances(shared: Backend) -> None:
    """The same event read by two instances (or from Kafka and a Redis channel) goes once."""
    me, peer = await shared.node(ME), await shared.node(PEER)
    [first] = await me.bus.fanout.publish([Outgoing([ME], b'{"e":1}', dedupe_id="shared")])
    [again] = await peer.bus.fanout.publish([Outgoing([ME], b'{"e":1}', dedupe_id="shared")])
    assert first and again == 0
    assert await me.fence() == [(first, b'{"e":1}')]


async def test_any_strings_survive_packing(backend: Backend) -> None:
    """Non-ASCII, spaces and digits in every string field; a payload with spaces, a JSON
    newline escape and multi-byte text; targets and history streams of any length."""
    me = await backend.node(ME)
    vid = "машина 1 — ñ"
    stream = "ws:history:company:компания 7"
    payload = '{"name":"Грузовик №1 \\n x","emoji":"🚚"}'.encode()
    ids = await me.bus.fanout.publish(
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
    assert await me.fence() == [(ids[0], payload), (ids[1], b'{"x":1}')]
    assert await me.bus.fanout.last_positions([vid]) == {vid: (ids[0], payload)}
    history, trimmed = await me.bus.store.read_history([stream, "ws:history:user:u 1"], 0, 10)
    assert history == [(ids[0], payload), (ids[1], b'{"x":1}')] and not trimmed
    assert await me.bus.fanout.publish([Outgoing([ME], b"{}", dedupe_id="ключ 42")]) == [0]


async def test_connected_while_started(backend: Backend) -> None:
    bus = backend.bus(ME)
    assert not bus.fanout.connected
    assert await bus.fanout.ping()
    await bus.fanout.start(lambda records: None)
    assert bus.fanout.connected and bus.fanout.listener_state == "ok"
    await bus.fanout.close()
    assert not bus.fanout.connected and bus.fanout.listener_state != "ok"


async def test_input_channels_reach_the_input_handler(shared: Backend) -> None:
    """Other services PUBLISH on `events:{type}`; on a cluster, from any node."""
    bus = shared.bus(ME)
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    bus.fanout.on_input(lambda kind, data: got.put_nowait((kind, data)))
    await bus.fanout.start(lambda records: None)
    raw = shared.raw()
    await raw.publish("events:geo-events", b'{"g":1}')
    await raw.publish("events:notifications", b'{"n":2}')
    assert await asyncio.wait_for(got.get(), 5) == ("geo-events", b'{"g":1}')
    assert await asyncio.wait_for(got.get(), 5) == ("notifications", b'{"n":2}')


async def test_single_redis_keys_are_those_of_earlier_versions(shared: Backend) -> None:
    """Instances of two versions share one Redis during a rolling upgrade: on a single Redis
    every key keeps its name and value; a cluster adds one hash tag to the publish keys."""
    me = await shared.node(ME)
    [event_id] = await me.bus.fanout.publish(
        [Outgoing([ME], b'{"k":1}', vehicle_id="v1", fix_ms=7, dedupe_id="d1", history=["ws:h:x"])]
    )
    await me.fence()
    tag = "{ws}:" if shared.name == "cluster" else ""
    raw = shared.raw()
    assert int(await raw.get(f"{tag}ws:event_id")) >= event_id
    assert await raw.hget(f"{tag}ws:last_positions", "v1") == b'%d {"k":1}' % event_id
    assert await raw.hget(f"{tag}ws:last_fix_ms", "v1") == b"7"
    assert await raw.sismember(f"{tag}ws:instances", ME)
    assert await raw.get(f"{tag}ws:dedupe:d1") == b"1"
    entries = await raw.xrange(f"{tag}ws:h:x")
    assert entries == [(b"%d-0" % event_id, {b"e": b'{"k":1}'})]


def test_key_names() -> None:
    single, cluster = KeySpace(), KeySpace(cluster=True)
    assert (single.event_id, single.last_positions, single.last_fix, single.instances) == (
        "ws:event_id",
        "ws:last_positions",
        "ws:last_fix_ms",
        "ws:instances",
    )
    assert single.dedupe("d") == "ws:dedupe:d" and single.deliver("w") == "ws:deliver:w"
    assert single.history("ws:history:user:u") == "ws:history:user:u"
    assert single.floor("ws:history:user:u") == "ws:history:user:u:floor"
    assert single.instance_connections("w") == "ws:instance:w:connections"
    assert single.instance_conn_users("w") == "ws:instance:w:conn_users"
    assert single.instance_alive("w") == "ws:instance:w:alive"
    assert cluster.event_id == "{ws}:ws:event_id" and cluster.deliver("w") == "{ws}:ws:deliver:w"
    assert cluster.floor("ws:h") == "{ws}:ws:h:floor"
    assert cluster.instance_alive("w") == "ws:instance:{w}:alive"
    # Single keys need no tag on a cluster either.
    assert cluster.user_connections("u") == single.user_connections("u") == "ws:conn:user:u"
    assert cluster.state("u:d") == single.state("u:d") == "ws:state:u:d"


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


@pytest.mark.parametrize("n", [1, 250])
async def test_a_large_batch_keeps_order(backend: Backend, n: int) -> None:
    me = await backend.node(ME)
    items = [
        Outgoing([ME], b'{"i":%d}' % i, dedupe_id=f"b{i}" if i % 2 else None, history=["ws:b"])
        for i in range(n)
    ]
    ids = await me.bus.fanout.publish(items)
    assert ids == list(range(ids[0], ids[0] + n))
    assert await me.fence() == [(ids[i], items[i].payload) for i in range(n)]
