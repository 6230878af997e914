"""group_leave: which stops need our own LeaveGroup, and that sending one is bounded."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from tracker_ws.kafka import group_leave
from tracker_ws_dev import stack as devstack


def app_with(member_id: str, generation: int) -> Any:
    coordinator = SimpleNamespace(member_id=member_id, generation=generation, group_id="g")
    kafka = SimpleNamespace(_coordinator=coordinator)
    thread = SimpleNamespace(_ensure_consumer=lambda: kafka)
    return SimpleNamespace(consumer=SimpleNamespace(_thread=thread))


def test_only_the_first_generation_needs_our_leave() -> None:
    first = group_leave.membership(app_with("m-1", 0))
    assert first == group_leave.Membership("g", "m-1", 0)
    assert not first.left_by_the_client  # aiokafka skips LeaveGroup in generation 0
    later = group_leave.membership(app_with("m-1", 3))
    assert later is not None and later.left_by_the_client


def test_no_membership_before_joining_or_without_a_consumer() -> None:
    assert group_leave.membership(app_with("", 0)) is None
    assert group_leave.membership(app_with("m-1", -1)) is None  # aiokafka's "no generation"
    assert group_leave.membership(SimpleNamespace()) is None


async def test_leave_without_a_broker_gives_up_within_its_bound() -> None:
    port = devstack.free_port()  # nothing listens there
    started = time.monotonic()
    ok = await group_leave.leave(f"127.0.0.1:{port}", group_leave.Membership("g", "m-1", 0))
    took = time.monotonic() - started
    assert not ok
    assert took < group_leave.LEAVE_TIMEOUT_S + 1.0, took
