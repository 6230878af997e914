"""The store contract (tracker_ws/bus/store.py): history written by the fan-out, read back
merged and flagged when trimmed; saved states with their TTL and their day-long mark."""

from __future__ import annotations

import asyncio

import pytest

import tracker_ws.bus.memory as memory_mod
import tracker_ws.bus.redis as redis_mod
from tests.contract.conftest import Backend
from tracker_ws.bus import Outgoing
from tracker_ws.bus.base import STATE_SEEN_TTL_S

ME = "ws-1"
A = "ws:history:company:c1"
B = "ws:history:user:u1"


async def test_history_merges_streams_in_id_order(backend: Backend) -> None:
    bus = backend.bus(ME)
    ids = await bus.fanout.publish(
        [
            Outgoing([], b'{"n":0}', history=[A]),
            Outgoing([], b'{"n":1}', history=[A, B]),  # in both: read once
            Outgoing([], b'{"n":2}', history=[B]),
            Outgoing([], b'{"n":3}'),  # not replayable
            Outgoing([], b'{"n":4}', history=[A]),
        ]
    )
    store = bus.store
    everything = [(ids[i], b'{"n":%d}' % i) for i in (0, 1, 2, 4)]
    assert await store.read_history([A, B], 0, 100) == (everything, False)
    assert await store.read_history([B, A], ids[1], 100) == (everything[2:], False)
    assert await store.read_history([A, B], 0, 2) == (everything[:2], False)
    assert await store.read_history([B], 0, 100) == ([everything[1], everything[2]], False)
    assert await store.read_history(["ws:history:user:nobody"], 0, 100) == ([], False)
    assert await store.read_history([], 0, 100) == ([], False)


async def test_history_trim_sets_the_floor(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_mod, "HISTORY_CAP", 3)
    monkeypatch.setattr(redis_mod, "HISTORY_CAP", 3)
    bus = backend.bus(ME)
    ids = await bus.fanout.publish([Outgoing([], b'{"n":%d}' % i, history=[A]) for i in range(5)])
    history, trimmed = await bus.store.read_history([A], ids[0], 10)
    assert trimmed  # ids[1] is gone
    assert history == [(ids[i], b'{"n":%d}' % i) for i in (2, 3, 4)]
    assert await bus.store.read_history([A], ids[1], 10) == (history, False)
    # A stream that was not trimmed does not hide the other's floor, nor gets one.
    assert (await bus.store.read_history([B, A], ids[0], 10))[1]
    assert not (await bus.store.read_history([B], 0, 10))[1]


async def test_state_save_load_and_seen(backend: Backend) -> None:
    store = backend.bus(ME).store
    assert await store.load_state("u1") == (None, False)  # never saved
    await store.save_state("u1", b'{"s":1}', 30)
    assert await store.load_state("u1") == (b'{"s":1}', True)
    await store.save_states({"u1": b'{"s":2}', "u2:phone": b'{"s":3}'}, 30)
    assert await store.load_state("u1") == (b'{"s":2}', True)
    assert await store.load_state("u2:phone") == (b'{"s":3}', True)
    assert await store.load_state("u2") == (None, False)  # a device has a state of its own
    await store.save_states({}, 30)


async def test_an_expired_state_is_remembered_and_refresh_keeps_one(backend: Backend) -> None:
    store = backend.bus(ME).store
    await store.save_states({"gone": b"g", "kept": b"k"}, 0.15)
    await store.refresh_states(["kept", "never-saved"], 30)
    # The TTL itself is what is tested: only time passing can make the state expire.
    await asyncio.sleep(0.3)
    assert await store.load_state("gone") == (None, True)  # expired: "seen", not "no state"
    assert await store.load_state("kept") == (b"k", True)
    assert await store.load_state("never-saved") == (None, False)


async def test_single_redis_state_layout(shared: Backend) -> None:
    """`ws:state:{key}` and its mark, named and valued as by earlier versions."""
    store = shared.bus(ME).store
    await store.save_states({"u1:phone": b'{"s":1}'}, 30)
    raw = shared.raw()
    assert await raw.get("ws:state:u1:phone") == b'{"s":1}'
    assert 0 < await raw.pttl("ws:state:u1:phone") <= 30_000
    assert await raw.get("ws:state:u1:phone:seen") == b"1"
    assert STATE_SEEN_TTL_S - 5 < await raw.ttl("ws:state:u1:phone:seen") <= STATE_SEEN_TTL_S
    await store.refresh_states(["u1:phone"], 100)
    assert 30_000 < await raw.pttl("ws:state:u1:phone") <= 100_000
