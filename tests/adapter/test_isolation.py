"""A connection of one company asks for another company's vehicles every way it can, also
with token claims naming them: everything is refused and nothing arrives (ARCHITECTURE §5).
In-process (was in tests/integration/test_isolation.py).

Negative checks are exact: the victim's fixes are published first and their eventIds learned
from the victim's own client; the attacker must then have seen a later eventId of its own.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.support.checks import at_lat, reach_event_id, wait_position
from tests.support.client import Msg, WsClient, gather_close
from tests.support.fleet import Company
from tests.support.inproc import Instance


async def _replies_until_pong(client: WsClient, request: dict[str, Any]) -> list[Msg]:
    start = len(client.received)
    await client.send(request)
    await client.request({"type": "ping"}, "pong")
    return client.received[start:]


def _assert_denied(replies: list[Msg], denied: list[str]) -> None:
    errors = [m for m in replies if m["type"] == "error"]
    assert len(errors) == 1, replies
    assert errors[0]["code"] == "SUBSCRIPTION_DENIED", errors[0]
    assert sorted(errors[0]["denied"]) == sorted(denied)
    assert not [m for m in replies if m["type"] == "subscribed"], replies


async def _attack(attacker: WsClient, victim: Company) -> None:
    """Every way of asking for the victim's vehicles is refused and yields nothing."""
    (group,) = victim.groups
    vehicles = victim.vehicles
    by_ids = {"type": "byIds", "ids": vehicles}
    by_group = {"type": "byGroup", "groupId": group}
    for flt, denied in ((by_ids, vehicles), (by_group, [group])):
        msg = {"type": "subscribe", "subscriptionType": "vehicles", "filter": flt}
        _assert_denied(await _replies_until_pong(attacker, msg), denied)
    replies = await _replies_until_pong(attacker, {"type": "getState", "vehicleIds": vehicles})
    _assert_denied(replies, vehicles)
    for m in replies:
        if m["type"] == "positionBatch":
            assert m["positions"] == [], m
    replies = await _replies_until_pong(attacker, {"type": "getState", "vehicleIds": None})
    for m in replies:
        if m["type"] == "positionBatch":
            assert not {e["vehicleId"] for e in m["positions"]} & set(vehicles), m


async def _victim_moves_then_attacker_checked(
    inst: Instance, victim_watch: WsClient, victim: Company, attacker: WsClient, own: str
) -> None:
    for i, vid in enumerate(victim.vehicles):
        await inst.send_fix(vid, lat=-(30.0 + i))
    learned = [
        (await wait_position(victim_watch, vid, at_lat(-(30.0 + i))))[0]
        for i, vid in enumerate(victim.vehicles)
    ]
    await inst.send_fix(own, lat=31.0)
    await wait_position(attacker, own, at_lat(31.0))
    await reach_event_id(attacker, max(learned))
    assert attacker.vehicles_seen() == {own}
    # Only the refusals name the victim's ids; no position of theirs, in any frame.
    for m in attacker.received:
        if m["type"] in ("position", "positionBatch"):
            raw = orjson.dumps(m).decode()
            assert not [x for x in (victim.company_id, *victim.vehicles) if x in raw], m


async def test_attacker_is_denied_everything_of_another_company(inst: Instance) -> None:
    mine = inst.company(2)
    victim = inst.company(2, groups=1)
    victim_watch = await inst.connect(victim.token())
    attacker = await inst.connect(mine.token())
    try:
        sub = await victim_watch.subscribe("vehicles", {"type": "all"})
        assert sub["count"] == 2
        sub = await attacker.subscribe("vehicles", {"type": "all"})
        assert sub["count"] == 2
        # The victim's vehicles have last positions, so a getState leak would show.
        for vid in victim.vehicles:
            await inst.send_fix(vid, lat=-20.0)
        for vid in victim.vehicles:
            await wait_position(victim_watch, vid, at_lat(-20.0))

        await _attack(attacker, victim)
        await _victim_moves_then_attacker_checked(
            inst, victim_watch, victim, attacker, mine.vehicles[0]
        )
    finally:
        await gather_close(attacker, victim_watch)


async def test_claims_naming_another_companys_vehicles_grant_nothing(inst: Instance) -> None:
    """A token of company A whose vehicleIds/groupIds claims list B's vehicles and group."""
    mine = inst.company(2)
    victim = inst.company(2, groups=1)
    own = mine.vehicles[0]
    victim_watch = await inst.connect(victim.token())
    attacker = await inst.connect(
        mine.token(vehicle_ids=[own, *victim.vehicles], group_ids=list(victim.groups)),
    )
    try:
        sub = await victim_watch.subscribe("vehicles", {"type": "all"})
        assert sub["count"] == 2
        sub = await attacker.subscribe("vehicles", {"type": "all"})
        assert sub["type"] == "subscribed" and sub["count"] == 1, sub
        for vid in victim.vehicles:
            await inst.send_fix(vid, lat=-20.0)
        for vid in victim.vehicles:
            await wait_position(victim_watch, vid, at_lat(-20.0))

        await _attack(attacker, victim)
        await _victim_moves_then_attacker_checked(inst, victim_watch, victim, attacker, own)
    finally:
        await gather_close(attacker, victim_watch)
