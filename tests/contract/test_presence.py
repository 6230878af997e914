"""The presence contract (tracker_ws/bus/presence.py): the connection registry (seed §4) and
instance liveness: heartbeat, live and dead instances, clean-up by one survivor, leaving."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.conftest import Backend
from tracker_ws.bus.base import ConnectionEntry

ME = "ws-1"
PEER = "ws:2"  # an instance id may contain ':'


def entry(conn: str, user: str, instance: str = ME, seen: int = 2000) -> ConnectionEntry:
    return ConnectionEntry(conn, user, instance, 1000, seen)


def by_conn(entries: list[ConnectionEntry]) -> dict[str, ConnectionEntry]:
    return {e.conn_id: e for e in entries}


async def test_register_touch_unregister(backend: Backend) -> None:
    presence = backend.bus(ME).presence
    assert await presence.user_connections("u1") == []
    await presence.register_connection(entry("c1", "u1"))
    await presence.register_connections([entry("c2", "u1"), entry("c3", "u2")])
    assert by_conn(await presence.user_connections("u1")) == {
        "c1": entry("c1", "u1"),
        "c2": entry("c2", "u1"),
    }
    await presence.touch_connections([entry("c1", "u1", seen=5000), entry("c3", "u2", seen=6)])
    assert by_conn(await presence.user_connections("u1"))["c1"].last_seen_ms == 5000
    assert await presence.user_connections("u2") == [entry("c3", "u2", seen=6)]
    await presence.unregister_connection("c1", "u1")
    assert await presence.user_connections("u1") == [entry("c2", "u1")]
    await presence.apply_writes([entry("c4", "u2")], [("c2", "u1"), ("c3", "u2")])
    assert await presence.user_connections("u1") == []
    assert await presence.user_connections("u2") == [entry("c4", "u2")]
    await presence.apply_writes([], [])
    await presence.touch_connections([])


async def test_alone_an_instance_is_live_and_registered(backend: Backend) -> None:
    presence = backend.bus(ME).presence
    await presence.heartbeat(30)
    assert await presence.is_registered()
    assert await presence.instances() == ([ME], [])


async def test_liveness_expiry_cleanup_by_one_survivor(shared: Backend) -> None:
    me, peer = shared.bus(ME).presence, shared.bus(PEER).presence
    third = shared.bus("ws-3").presence
    await me.heartbeat(30)
    await peer.heartbeat(0.15)
    await peer.register_connections([entry("p1", "u1", PEER), entry("p2", "u2", PEER)])
    await me.register_connection(entry("m1", "u1"))
    assert await me.instances() == ([ME, PEER], [])
    # Only time passing expires the liveness key.
    await asyncio.sleep(0.3)
    assert await me.instances() == ([ME], [PEER])
    assert await peer.is_registered()  # listed until cleaned up
    assert await me.cleanup_instance(PEER) == 2
    assert await third.cleanup_instance(PEER) == -1  # another survivor is on it
    assert await me.instances() == ([ME], [])
    assert not await peer.is_registered()
    assert await me.user_connections("u1") == [entry("m1", "u1")]
    assert await me.user_connections("u2") == []
    # Back from the dead: it announces itself again (the janitor re-registers its entries).
    await peer.heartbeat(30)
    assert await peer.is_registered() and await me.instances() == ([ME, PEER], [])


async def test_deregister_removes_the_instance_and_its_entries(shared: Backend) -> None:
    me, peer = shared.bus(ME).presence, shared.bus(PEER).presence
    await me.heartbeat(30)
    await peer.heartbeat(30)
    await me.register_connections([entry("m1", "u1"), entry("m2", "u2")])
    await peer.register_connection(entry("p1", "u1", PEER))
    await me.deregister_instance()
    assert not await me.is_registered()
    assert await peer.instances() == ([PEER], [])
    assert await peer.user_connections("u1") == [entry("p1", "u1", PEER)]
    assert await peer.user_connections("u2") == []


async def test_memory_deregister_forgets_the_registry(backend: Backend) -> None:
    if backend.shared:
        pytest.skip("covered with two instances above")
    presence = backend.bus(ME).presence
    await presence.register_connection(entry("m1", "u1"))
    await presence.deregister_instance()
    assert await presence.user_connections("u1") == []
    assert await presence.cleanup_instance(PEER) == 0


async def test_single_redis_registry_layout(shared: Backend) -> None:
    """seed §4, byte for byte on a single Redis; a cluster tags only the instance's keys."""
    presence = shared.bus(ME).presence
    await presence.heartbeat(30)
    await presence.register_connection(entry("c1", "u1"))
    raw = shared.raw()
    own = "ws:instance:{ws-1}:" if shared.name == "cluster" else "ws:instance:ws-1:"
    assert await raw.hgetall("ws:conn:user:u1") == {b"c1": b"ws-1:1000:2000"}
    assert await raw.smembers(own + "connections") == {b"c1"}
    assert await raw.hgetall(own + "conn_users") == {b"c1": b"u1"}
    assert await raw.get(own + "alive") == b"1"


async def test_a_cleanup_cut_short_is_finished_by_the_next_survivor(shared: Backend) -> None:
    """A survivor that died after cleanup.lua (liveness and list gone, pairs not yet removed
    from the users' hashes) leaves the instance listed and dead: the next one finishes."""
    me, peer = shared.bus(ME).presence, shared.bus(PEER).presence
    await me.heartbeat(30)
    await peer.heartbeat(30)
    await peer.register_connections([entry("p1", "u1", PEER), entry("p2", "u2", PEER)])
    own = "ws:instance:{ws:2}:" if shared.name == "cluster" else "ws:instance:ws:2:"
    raw = shared.raw()
    await raw.delete(own + "alive")
    await raw.delete(own + "connections")
    assert await me.instances() == ([ME], [PEER])
    assert await me.cleanup_instance(PEER) == 2
    assert await me.user_connections("u1") == [] and await me.user_connections("u2") == []
    assert await me.instances() == ([ME], [])
    assert not await raw.exists(own + "conn_users")
