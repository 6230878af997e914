"""Vehicle registry changes re-evaluate who receives a vehicle (issue 5, acceptance 2).

A vehicle produces fixes continuously (every 50 ms) while its vehicle-registry record is
re-published with new groups or a new company. Subscribers that lose it are told
(`SUBSCRIPTION_REVOKED` naming the vehicle) and stop receiving it; subscribers that gain it
start receiving without resubscribing, within 1 s of the record being produced. The measured
times are printed (run with -s to see them).

"Stops receiving" is exact: the moved vehicle's first position at a gaining subscriber has
eventId E; a losing subscriber must hold no position of it with eventId ≥ E. After the fixes
stop, a sentinel fix of a vehicle the losing subscriber still sees is produced; once it has
arrived (a larger eventId than any fix of the moved vehicle), nothing else can still come.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.checks import live_positions
from tests.support.client import Msg, WsClient, gather_close
from tests.support.fleet import Company, FleetDriver, new_id, wait_registry
from tracker_ws_dev.stack import Worker

FIX_EVERY_S = 0.05
MAX_SWITCH_S = 1.0

_lat = itertools.count(1)


def unique_lat() -> float:
    return round(20.0 + next(_lat) * 0.0001, 6)


class FixStream:
    """Fixes of one vehicle every FIX_EVERY_S until stopped (the vehicle keeps driving)."""

    def __init__(self, fleet: FleetDriver, vehicle_id: str) -> None:
        self.fleet = fleet
        self.vehicle_id = vehicle_id
        self.sent = 0
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.fleet.send_fix(self.vehicle_id, lat=unique_lat())
            self.sent += 1
            # Pacing of a GPS unit: the next fix is due in FIX_EVERY_S (or stop sooner).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FIX_EVERY_S)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def positions_of(client: WsClient, vehicle_id: str) -> list[int]:
    """eventIds of the live frames that carried a position of `vehicle_id`."""
    return [eid for m in client.received for eid, v, _ in live_positions(m) if v == vehicle_id]


def has_position(vehicle_id: str, lat: float | None = None) -> Any:
    def pred(m: Msg) -> bool:
        return any(
            v == vehicle_id and (lat is None or p["lat"] == lat) for _, v, p in live_positions(m)
        )

    return pred


def is_revoked(m: Msg) -> bool:
    return m.get("type") == "error" and m.get("code") == "SUBSCRIPTION_REVOKED"


async def timed(coro: Any, t0: float) -> tuple[Msg, float]:
    """Await `coro` (a client wait) and return its result with the seconds since t0."""
    msg = await coro
    return msg, time.monotonic() - t0


async def register(
    fleet: FleetDriver, worker: Worker, records: list[tuple[str, Company, list[str]]]
) -> None:
    before = worker.health()["registryVehicles"]
    for vid, company, groups in records:
        await fleet.register(vid, company.company_id, group_ids=groups)
        company.vehicles.append(vid)
    await asyncio.to_thread(wait_registry, worker, before + len(records))


async def subscribe(client: WsClient, stype: str, flt: dict[str, Any], count: int) -> None:
    reply = await client.subscribe(stype, flt)
    assert reply == {**reply, "type": "subscribed", "subscriptionType": stype}, reply
    assert reply["count"] == count, reply


def check_revoked(err: Msg, vehicle_id: str, types: list[str]) -> None:
    assert err["eventId"] == 0, err
    assert err["revoked"] == [vehicle_id], err
    assert err["subscriptionTypes"] == types, err
    assert vehicle_id in err["message"], err


async def sentinel(fleet: FleetDriver, vehicle_id: str, *clients: WsClient) -> None:
    """A fix of `vehicle_id`, produced now, reaches every client in `clients`."""
    lat = unique_lat()
    await fleet.send_fix(vehicle_id, lat=lat)
    for c in clients:
        await c.wait_for(has_position(vehicle_id, lat), 10, f"sentinel fix of {vehicle_id}")


@dataclass
class Switch:
    """What one registry change did, as seen by the subscribers."""

    gained_after_s: dict[str, float]
    revoked_after_s: dict[str, float]


def report(what: str, switch: Switch) -> None:
    gained = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in switch.gained_after_s.items())
    revoked = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in switch.revoked_after_s.items())
    print(
        f"\n{what}: registry record produced → first position at the gaining subscriber: "
        f"{gained}; → SUBSCRIPTION_REVOKED at the losing subscriber: {revoked}"
    )


# ------------------------------------------------------------------------------ groups


async def test_moving_a_vehicle_between_groups_switches_its_group_subscribers(
    worker: Worker, fleet: FleetDriver
) -> None:
    company = Company()
    g1, g2 = new_id(), new_id()
    moved, stays_g1, stays_g2 = new_id(), new_id(), new_id()
    await register(
        fleet,
        worker,
        [(moved, company, [g1]), (stays_g1, company, [g1]), (stays_g2, company, [g2])],
    )

    # A dispatcher whose token is narrowed to group g1 loses access to the moved vehicle; a
    # dispatcher narrowed to g2 gains it; a plain user subscribed byGroup g2 gains it too.
    old = await WsClient.connect(worker.ws_url, company.token(group_ids=[g1]))
    new_narrowed = await WsClient.connect(worker.ws_url, company.token(group_ids=[g2]))
    new_plain = await WsClient.connect(worker.ws_url, company.token())
    clients = [old, new_narrowed, new_plain]
    stream: FixStream | None = None
    try:
        await subscribe(old, "vehicles", {"type": "byGroup", "groupId": g1}, 2)
        await subscribe(old, "geoEvents", {"type": "byGroup", "groupId": g1}, 2)
        await subscribe(new_narrowed, "vehicles", {"type": "byGroup", "groupId": g2}, 1)
        await subscribe(new_plain, "vehicles", {"type": "byGroup", "groupId": g2}, 1)

        stream = FixStream(fleet, moved)
        await old.wait_for(has_position(moved), 10, "the moved vehicle before the move")

        t0 = time.monotonic()
        await fleet.register(moved, company.company_id, group_ids=[g2])
        (
            (first_new, t_new),
            (first_narrowed, t_narrowed),
            (revoked, t_revoked),
        ) = await asyncio.gather(
            timed(new_plain.wait_for(has_position(moved), 10, "gain at g2"), t0),
            timed(new_narrowed.wait_for(has_position(moved), 10, "gain at g2 narrowed"), t0),
            timed(old.wait_for(is_revoked, 10, "SUBSCRIPTION_REVOKED"), t0),
        )
        # A few more fixes flow to the new group, then the vehicle stops reporting.
        more = len(positions_of(new_plain, moved)) + 3
        await new_plain.wait_for(
            lambda m: len(positions_of(new_plain, moved)) >= more, 10, "more fixes at g2"
        )
        await stream.stop()
        await sentinel(fleet, stays_g1, old)
        await sentinel(fleet, stays_g2, new_plain, new_narrowed)
    finally:
        if stream is not None:
            await stream.stop()
        await gather_close(*clients)

    switch = Switch(
        {"byGroup g2": t_new, "byGroup g2 (token narrowed to g2)": t_narrowed},
        {"token narrowed to g1": t_revoked},
    )
    report(f"group move ({stream.sent} fixes at {1 / FIX_EVERY_S:.0f}/s)", switch)
    check_revoked(revoked, moved, ["geoEvents", "vehicles"])
    first_id = min(positions_of(new_plain, moved) + positions_of(new_narrowed, moved))
    assert positions_of(old, moved), "the old group had the vehicle before the move"
    assert max(positions_of(old, moved)) < first_id, "old group still received it after the move"
    # Within a second, and both gaining subscribers without resubscribing.
    assert t_new < MAX_SWITCH_S and t_narrowed < MAX_SWITCH_S, switch
    assert t_revoked < MAX_SWITCH_S, switch
    assert first_new["eventId"] > 0 and first_narrowed["eventId"] > 0


async def test_plain_byGroup_subscriber_of_the_old_group_is_told(
    worker: Worker, fleet: FleetDriver
) -> None:
    """A user who may see every vehicle of the company, subscribed `byGroup` to the old group:
    the vehicle leaves that subscription, so it stops flowing and the connection is told."""
    company = Company()
    g1, g2 = new_id(), new_id()
    moved, stays_g1, stays_g2 = new_id(), new_id(), new_id()
    await register(
        fleet,
        worker,
        [(moved, company, [g1]), (stays_g1, company, [g1]), (stays_g2, company, [g2])],
    )
    old = await WsClient.connect(worker.ws_url, company.token())
    new = await WsClient.connect(worker.ws_url, company.token())
    stream: FixStream | None = None
    try:
        await subscribe(old, "vehicles", {"type": "byGroup", "groupId": g1}, 2)
        await subscribe(new, "vehicles", {"type": "byGroup", "groupId": g2}, 1)
        stream = FixStream(fleet, moved)
        await old.wait_for(has_position(moved), 10, "the moved vehicle before the move")
        t0 = time.monotonic()
        await fleet.register(moved, company.company_id, group_ids=[g2])
        (_, t_new), (revoked, t_revoked) = await asyncio.gather(
            timed(new.wait_for(has_position(moved), 10, "gain at g2"), t0),
            timed(old.wait_for(is_revoked, 5, "SUBSCRIPTION_REVOKED"), t0),
        )
        await stream.stop()
        await sentinel(fleet, stays_g1, old)
    finally:
        if stream is not None:
            await stream.stop()
        await gather_close(old, new)
    report("group move, plain byGroup subscriber", Switch({"byGroup g2": t_new}, {"g1": t_revoked}))
    check_revoked(revoked, moved, ["vehicles"])
    assert max(positions_of(old, moved)) < min(positions_of(new, moved))


# ------------------------------------------------------------------------------ companies


async def test_moving_a_vehicle_to_another_company_switches_company_subscribers(
    worker: Worker, fleet: FleetDriver
) -> None:
    a, b = Company(), Company()
    ga, gb = new_id(), new_id()
    moved, stays_a, stays_b = new_id(), new_id(), new_id()
    await register(fleet, worker, [(moved, a, [ga]), (stays_a, a, [ga]), (stays_b, b, [gb])])

    a_all = await WsClient.connect(worker.ws_url, a.token())
    a_ids = await WsClient.connect(worker.ws_url, a.token())
    b_all = await WsClient.connect(worker.ws_url, b.token())
    clients = [a_all, a_ids, b_all]
    stream: FixStream | None = None
    try:
        await subscribe(a_all, "vehicles", {"type": "all"}, 2)
        await subscribe(a_all, "maintenance", {"type": "all"}, 2)
        await subscribe(a_ids, "vehicles", {"type": "byIds", "ids": [moved, stays_a]}, 2)
        await subscribe(b_all, "vehicles", {"type": "all"}, 1)

        stream = FixStream(fleet, moved)
        await a_all.wait_for(has_position(moved), 10, "the moved vehicle at a (all)")
        await a_ids.wait_for(has_position(moved), 10, "the moved vehicle at a (byIds)")

        t0 = time.monotonic()
        await fleet.register(moved, b.company_id, group_ids=[gb])
        (first_b, t_b), (rev_all, t_rev_all), (rev_ids, t_rev_ids) = await asyncio.gather(
            timed(b_all.wait_for(has_position(moved), 10, "gain at company b"), t0),
            timed(a_all.wait_for(is_revoked, 10, "SUBSCRIPTION_REVOKED (all)"), t0),
            timed(a_ids.wait_for(is_revoked, 10, "SUBSCRIPTION_REVOKED (byIds)"), t0),
        )
        more = len(positions_of(b_all, moved)) + 3
        await b_all.wait_for(
            lambda m: len(positions_of(b_all, moved)) >= more, 10, "more fixes at company b"
        )
        await stream.stop()
        # byIds kept its other vehicle; the moved one is no longer grantable to company a.
        await sentinel(fleet, stays_a, a_all, a_ids)
        await sentinel(fleet, stays_b, b_all)
        denied = await a_ids.subscribe("vehicles", {"type": "byIds", "ids": [moved]})
        assert denied["type"] == "error" and denied["code"] == "SUBSCRIPTION_DENIED", denied
        assert denied["denied"] == [moved], denied
    finally:
        if stream is not None:
            await stream.stop()
        await gather_close(*clients)

    switch = Switch(
        {"company b, all": t_b}, {"company a, all": t_rev_all, "company a, byIds": t_rev_ids}
    )
    report(f"company move ({stream.sent} fixes at {1 / FIX_EVERY_S:.0f}/s)", switch)
    check_revoked(rev_all, moved, ["maintenance", "vehicles"])
    check_revoked(rev_ids, moved, ["vehicles"])
    first_id = min(positions_of(b_all, moved))
    for client in (a_all, a_ids):
        assert positions_of(client, moved), "company a had the vehicle before the move"
        assert max(positions_of(client, moved)) < first_id, "company a still received it"
    assert first_b["eventId"] == first_id
    assert max(switch.gained_after_s.values()) < MAX_SWITCH_S, switch
    assert max(switch.revoked_after_s.values()) < MAX_SWITCH_S, switch


@pytest.mark.parametrize("topic", ["geo-events", "maintenance-events"])
async def test_events_of_a_vehicle_that_left_the_company_stop_even_if_the_producer_lags(
    worker: Worker, fleet: FleetDriver, redis_url: str, topic: str
) -> None:
    import orjson
    import redis.asyncio as aioredis

    a, b = Company(), Company()
    moved, stays_a = new_id(), new_id()
    await register(fleet, worker, [(moved, a, []), (stays_a, a, [])])
    a_all = await WsClient.connect(worker.ws_url, a.token())
    redis = aioredis.Redis.from_url(redis_url)
    stype = "geoEvents" if topic == "geo-events" else "maintenance"
    try:
        await subscribe(a_all, stype, {"type": "all"}, 2)
        await fleet.register(moved, b.company_id)
        await a_all.wait_for(is_revoked, 10, "SUBSCRIPTION_REVOKED")

        def event(vid: str) -> dict[str, Any]:
            ts = int(time.time() * 1000)
            if topic == "maintenance-events":
                return {"companyId": a.company_id, "vehicleId": vid, "id": new_id(), "title": "x"}
            return {
                "vehicleId": vid,
                "vehicleName": "",
                "companyId": a.company_id,  # what the lagging producer still believes
                "geozoneId": new_id(),
                "geozoneName": "Depot",
                "eventType": "entered",
                "position": {"lat": 55.7, "lon": 37.6},
                "timestamp": ts,
            }

        stale, later = event(moved), event(stays_a)
        # One Redis channel: the worker handles its messages in order, so `later` gets the
        # larger eventId and, once it has arrived, `stale` would have too.
        await redis.publish(f"events:{topic}", orjson.dumps(stale))
        await redis.publish(f"events:{topic}", orjson.dumps(later))
        await a_all.wait_for(lambda m: stays_a in orjson.dumps(m).decode(), 10, "later event")
        events = [m for m in a_all.received if m.get("eventId")]
        assert [m["type"] for m in events] == [
            "geoEvent" if topic == "geo-events" else "notification"
        ], events
        assert moved not in orjson.dumps(events).decode(), events
    finally:
        await redis.aclose()
        await a_all.close()
