"""The control contract (tracker_ws/bus/control.py): a command runs on each target instance
and its reply comes back by instance id; a target that does not answer is missing after the
timeout; a failing handler answers with its error."""

from __future__ import annotations

import time
from typing import Any

from tests.contract.conftest import Backend
from tracker_ws.bus import Bus

ME = "ws-1"
PEER = "ws-2"


def answering(bus: Bus, name: str) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def handler(command: str, args: dict[str, Any]) -> dict[str, Any] | None:
        seen.append((command, args))
        if command == "fail":
            raise RuntimeError("no such thing")
        if command == "silent":
            return None
        return {"by": name, "echo": args}

    bus.control.on_command(handler)
    return seen


async def test_call_and_reply_on_this_instance(backend: Backend) -> None:
    me = await backend.node(ME)
    seen = answering(me.bus, ME)
    replies = await me.bus.control.call([ME], "stats", {"x": 1}, timeout=5)
    assert replies == {ME: {"by": ME, "echo": {"x": 1}}}
    assert seen == [("stats", {"x": 1})]
    assert await me.bus.control.call([ME], "fail", {}, timeout=5) == {
        ME: {"error": "no such thing"}
    }
    assert await me.bus.control.call([ME], "silent", {}, timeout=5) == {ME: {}}


async def test_nobody_to_ask_returns_at_once(backend: Backend) -> None:
    me = await backend.node(ME)
    started = time.monotonic()
    assert await me.bus.control.call([], "stats", {}, timeout=5) == {}
    req = me.bus.control.new_request([])
    assert await me.bus.control.gather_replies(req, 5) == {}
    assert time.monotonic() - started < 1


async def test_missing_targets_time_out(backend: Backend) -> None:
    me = await backend.node(ME)
    answering(me.bus, ME)
    started = time.monotonic()
    replies = await me.bus.control.call([ME, "ws-gone"], "stats", {}, timeout=0.3)
    assert replies == {ME: {"by": ME, "echo": {}}}
    assert 0.25 < time.monotonic() - started < 3


async def test_call_across_instances(shared: Backend) -> None:
    me, peer = await shared.node(ME), await shared.node(PEER)
    answering(me.bus, ME)
    seen = answering(peer.bus, PEER)
    replies = await me.bus.control.call([ME, PEER], "kick", {"connId": "c1"}, timeout=5)
    assert replies == {
        ME: {"by": ME, "echo": {"connId": "c1"}},
        PEER: {"by": PEER, "echo": {"connId": "c1"}},
    }
    assert seen == [("kick", {"connId": "c1"})]
    # A request opened first collects replies sent on its behalf (the admin broadcast).
    req = me.bus.control.new_request([PEER])
    await peer.bus.control.reply(ME, req, {"delivered": 3})
    assert await me.bus.control.gather_replies(req, 5) == {PEER: {"delivered": 3}}
