"""Subscriptions, permissions, getState and batching, in-process (seed §3; was in
tests/integration/, with fixes produced to the broker).

Negative checks ("X never arrives") are exact: eventIds are global and every connection
receives its events in increasing eventId order, so the forbidden fix is produced first, its
eventId learned from a client that legitimately receives it, and the checked client must then
have seen a later eventId (from one of its own vehicles) without ever seeing the forbidden one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.support.checks import (
    at_lat,
    live_positions,
    reach_event_id,
    ts_now_ms,
    wait_position,
)
from tests.support.client import Msg, WsClient, gather_close
from tests.support.fleet import Company, fix, new_id
from tests.support.inproc import Instance

STATUSES = {"moving", "stopped", "parking", "offline", "noGps"}
POSITION_KEYS = {"lat", "lon", "speed", "course", "altitude", "satellites", "timestamp"}
ENTRY_KEYS = {"vehicleId", "vehicleName", "position", "status"}


def iso_ms(text: str) -> int:
    """An ISO-8601 UTC timestamp as epoch ms (asserting it really is one)."""
    assert isinstance(text, str) and text.endswith("Z"), text
    dt = datetime.fromisoformat(text)
    offset = dt.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, text
    return round((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


def expected_position(sent: dict[str, Any]) -> dict[str, Any]:
    """The seed `Position` object a fix should turn into (timestamp compared separately)."""
    return {
        "lat": sent["latitude"],
        "lon": sent["longitude"],
        "speed": sent["speed"],
        "course": sent["course"],
        "altitude": sent["altitude"],
        "satellites": sent["satellites"],
    }


def check_position(pos: dict[str, Any], sent: dict[str, Any]) -> None:
    assert set(pos) == POSITION_KEYS, pos
    assert {k: v for k, v in pos.items() if k != "timestamp"} == expected_position(sent)
    assert iso_ms(pos["timestamp"]) == sent["timestamp"]


def check_entry(entry: dict[str, Any], vehicle_id: str) -> None:
    """A positionBatch element: seed VehiclePosition field names."""
    assert ENTRY_KEYS <= set(entry) <= ENTRY_KEYS | {"sensors"}, entry
    assert entry["vehicleId"] == vehicle_id
    assert entry["vehicleName"] == f"V-{vehicle_id[:6]}"  # FleetDriver.register's default name
    assert entry["status"] in STATUSES


def carrier(client: WsClient, vehicle_id: str, lat: float) -> tuple[Msg, dict[str, Any] | None]:
    """The live message that delivered `vehicle_id` at `lat`, and its batch entry if batched."""
    for m in client.received:
        if m.get("type") == "position" and m["vehicleId"] == vehicle_id:
            if m["position"]["lat"] == lat:
                return m, None
        elif m.get("type") == "positionBatch" and m["eventId"]:
            for p in m["positions"]:
                if p["vehicleId"] == vehicle_id and p["position"]["lat"] == lat:
                    return m, p
    raise AssertionError(f"no position of {vehicle_id} at lat {lat}")


def check_delivery(client: WsClient, sent: dict[str, Any]) -> None:
    """Field names and values of the frame that carried `sent`, in either form."""
    vid = sent["vehicleId"]
    msg, entry = carrier(client, vid, sent["latitude"])
    assert msg["eventId"] > 0
    iso_ms(msg["timestamp"])
    if entry is None:
        assert set(msg) == {"type", "eventId", "timestamp", "vehicleId", "position"}, msg
        check_position(msg["position"], sent)
    else:
        assert set(msg) == {"type", "eventId", "timestamp", "positions"}, msg
        check_entry(entry, vid)
        check_position(entry["position"], sent)
        assert entry["status"] == "moving"  # speed 40 km/h, good GPS, fresh
        assert "sensors" not in entry


def lats_of(client: WsClient, vehicle_id: str) -> list[float]:
    return [p["lat"] for m in client.received for _, v, p in live_positions(m) if v == vehicle_id]


async def connect(inst: Instance, company: Company, **claims: Any) -> WsClient:
    return await inst.connect(company.token(**claims))


async def watcher(inst: Instance, company: Company) -> WsClient:
    """A legitimate `all` subscriber of `company`: learns the eventIds of its fixes."""
    client = await connect(inst, company)
    sub = await client.subscribe("vehicles", {"type": "all"})
    assert sub["type"] == "subscribed", sub
    return client


async def replies_until_pong(client: WsClient) -> list[Msg]:
    """Everything the client received up to the reply to a fresh ping (replies are in order)."""
    start = len(client.received)
    await client.request({"type": "ping"}, "pong")
    return client.received[start:]


def group_of(company: Company, vehicle_id: str) -> str:
    return next(g for g, members in company.groups.items() if vehicle_id in members)


# ------------------------------------------------------------------------------ the filters


@pytest.mark.parametrize("kind", ["all", "byIds", "byGroup"])
async def test_subscription_delivers_covered_vehicles_only(inst: Instance, kind: str) -> None:
    company = inst.company(4, groups=2)
    other = inst.company(1)
    v = company.vehicles
    g0 = group_of(company, v[0])
    cases: dict[str, tuple[Msg, set[str]]] = {
        "all": ({"type": "all"}, set(v)),
        "byIds": ({"type": "byIds", "ids": [v[0], v[1]]}, {v[0], v[1]}),
        "byGroup": ({"type": "byGroup", "groupId": g0}, set(company.groups[g0])),
    }
    flt, covered = cases[kind]
    forbidden = sorted(set(v) - covered)
    mine, theirs = await watcher(inst, company), await watcher(inst, other)
    client = await connect(inst, company)
    try:
        sub = await client.subscribe("vehicles", flt)
        assert sub == {**sub, "type": "subscribed", "subscriptionType": "vehicles"}
        assert sub["count"] == len(covered)
        assert sub["eventId"] == 0

        # Forbidden first: uncovered vehicles of the same company, and another company's.
        for i, vid in enumerate(forbidden):
            await inst.send_fix(vid, lat=1.0 + i)
        await inst.send_fix(other.vehicles[0], lat=9.0)
        learned = [
            (await wait_position(mine, vid, at_lat(1.0 + i)))[0] for i, vid in enumerate(forbidden)
        ]
        learned.append((await wait_position(theirs, other.vehicles[0], at_lat(9.0)))[0])

        sent = [await inst.send_fix(vid, lat=20.0 + i) for i, vid in enumerate(sorted(covered))]
        for s in sent:
            await wait_position(client, s["vehicleId"], at_lat(s["latitude"]))
            check_delivery(client, s)
        await reach_event_id(client, max(learned))
        assert client.vehicles_seen() == covered
    finally:
        await gather_close(client, mine, theirs)


# ------------------------------------------------------------------------------ unsubscribe


@pytest.mark.parametrize("kind", ["all", "byIds", "byGroup"])
async def test_unsubscribe_stops_positions(inst: Instance, kind: str) -> None:
    company = inst.company(4, groups=2)
    v = company.vehicles
    gone, kept = v[0], v[3]  # different groups (FleetDriver assigns round-robin)
    g_gone, g_kept = group_of(company, gone), group_of(company, kept)
    assert g_gone != g_kept
    # Every subscription the client holds; the one it then removes.
    cases: dict[str, tuple[list[Msg], Msg]] = {
        "all": ([{"type": "all"}, {"type": "byIds", "ids": [kept]}], {"type": "all"}),
        "byIds": ([{"type": "byIds", "ids": [gone, kept]}], {"type": "byIds", "ids": [gone]}),
        "byGroup": (
            [{"type": "byGroup", "groupId": g_gone}, {"type": "byGroup", "groupId": g_kept}],
            {"type": "byGroup", "groupId": g_gone},
        ),
    }
    subscribe, removed = cases[kind]
    watch = await watcher(inst, company)
    client = await connect(inst, company)
    try:
        for flt in subscribe:
            sub = await client.subscribe("vehicles", flt)
            assert sub["type"] == "subscribed", sub
        await inst.send_fix(gone, lat=1.0)
        await wait_position(client, gone, at_lat(1.0))

        reply = await client.request(
            {"type": "unsubscribe", "subscriptionType": "vehicles", "filter": removed},
            "unsubscribed",
        )
        assert reply["subscriptionType"] == "vehicles"
        assert reply["eventId"] == 0

        await inst.send_fix(gone, lat=2.0)
        forbidden_id, _ = await wait_position(watch, gone, at_lat(2.0))
        await inst.send_fix(kept, lat=3.0)
        await wait_position(client, kept, at_lat(3.0))
        await reach_event_id(client, forbidden_id)
        assert lats_of(client, gone) == [1.0]
    finally:
        await gather_close(client, watch)


async def test_unsubscribe_with_null_filter_removes_the_whole_type(inst: Instance) -> None:
    company = inst.company(4, groups=2)
    v = company.vehicles
    watch = await watcher(inst, company)
    client = await connect(inst, company)
    try:
        for flt in (
            {"type": "all"},
            {"type": "byIds", "ids": [v[0], v[1]]},
            {"type": "byGroup", "groupId": group_of(company, v[2])},
        ):
            sub = await client.subscribe("vehicles", flt)
            assert sub["type"] == "subscribed", sub
        await inst.send_fix(v[3], lat=1.0)
        await wait_position(client, v[3], at_lat(1.0))

        reply = await client.request(
            {"type": "unsubscribe", "subscriptionType": "vehicles", "filter": None},
            "unsubscribed",
        )
        assert reply["subscriptionType"] == "vehicles"

        # Nothing is subscribed now: none of these may reach the client.
        for vid in v:
            await inst.send_fix(vid, lat=2.0)
        learned = [(await wait_position(watch, vid, at_lat(2.0)))[0] for vid in v]
        # Only a new subscription, made after those fixes were delivered, brings positions back.
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [v[1]]})
        assert sub["type"] == "subscribed" and sub["count"] == 1, sub
        await inst.send_fix(v[1], lat=3.0)
        await wait_position(client, v[1], at_lat(3.0))
        await reach_event_id(client, max(learned))
        seen = [(vid, p["lat"]) for m in client.received for _, vid, p in live_positions(m)]
        assert seen == [(v[3], 1.0), (v[1], 3.0)]
    finally:
        await gather_close(client, watch)


# ------------------------------------------------------------------------------ permissions


async def test_by_ids_partly_forbidden_subscribes_the_permitted_part(inst: Instance) -> None:
    company = inst.company(2)
    other = inst.company(1)
    own, foreign, unknown = company.vehicles[0], other.vehicles[0], new_id()
    theirs = await watcher(inst, other)
    client = await connect(inst, company)
    try:
        await client.send(
            {
                "type": "subscribe",
                "subscriptionType": "vehicles",
                "filter": {"type": "byIds", "ids": [own, foreign, unknown]},
            }
        )
        replies = await replies_until_pong(client)
        errors = [m for m in replies if m["type"] == "error"]
        subscribed = [m for m in replies if m["type"] == "subscribed"]
        assert len(errors) == 1, replies
        err = errors[0]
        assert err["code"] == "SUBSCRIPTION_DENIED"
        assert err["eventId"] == 0
        assert sorted(err["denied"]) == sorted([foreign, unknown])
        assert foreign in err["message"] and unknown in err["message"]
        assert own not in err["message"]
        assert len(subscribed) == 1, replies
        assert subscribed[0]["count"] == 1

        # Only `own` is covered: the refused vehicle's fixes never arrive.
        await inst.send_fix(foreign, lat=5.0)
        forbidden_id, _ = await wait_position(theirs, foreign, at_lat(5.0))
        await inst.send_fix(own, lat=6.0)
        await wait_position(client, own, at_lat(6.0))
        await reach_event_id(client, forbidden_id)
        assert client.vehicles_seen() == {own}
    finally:
        await gather_close(client, theirs)


@pytest.mark.parametrize("kind", ["byIds", "byGroup"])
async def test_wholly_forbidden_subscription_is_only_an_error(inst: Instance, kind: str) -> None:
    company = inst.company(1)
    other = inst.company(2, groups=1)
    (group,) = other.groups
    flt, denied = {
        "byIds": ({"type": "byIds", "ids": other.vehicles}, sorted(other.vehicles)),
        "byGroup": ({"type": "byGroup", "groupId": group}, [group]),
    }[kind]
    theirs = await watcher(inst, other)
    client = await connect(inst, company)
    try:
        await client.send({"type": "subscribe", "subscriptionType": "vehicles", "filter": flt})
        replies = await replies_until_pong(client)
        assert [m["type"] for m in replies] == ["error", "pong"], replies
        assert replies[0]["code"] == "SUBSCRIPTION_DENIED"
        assert sorted(replies[0]["denied"]) == denied

        # The client's own vehicle moves the eventId on; the other company's never arrive.
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": company.vehicles})
        assert sub["type"] == "subscribed" and sub["count"] == 1, sub
        for i, vid in enumerate(other.vehicles):
            await inst.send_fix(vid, lat=1.0 + i)
        learned = [
            (await wait_position(theirs, vid, at_lat(1.0 + i)))[0]
            for i, vid in enumerate(other.vehicles)
        ]
        await inst.send_fix(company.vehicles[0], lat=7.0)
        await wait_position(client, company.vehicles[0], at_lat(7.0))
        await reach_event_id(client, max(learned))
        assert client.vehicles_seen() == set(company.vehicles)
    finally:
        await gather_close(client, theirs)


@pytest.mark.parametrize("kind", ["all", "byGroup"])
async def test_token_narrowed_to_one_vehicle_sees_only_it(inst: Instance, kind: str) -> None:
    company = inst.company(4, groups=2)
    v0, v1, v2, _ = company.vehicles
    group = group_of(company, v1)  # holds v1 and v3
    flt = {"all": {"type": "all"}, "byGroup": {"type": "byGroup", "groupId": group}}[kind]
    watch = await watcher(inst, company)
    client = await connect(inst, company, vehicle_ids=[v1])
    try:
        sub = await client.subscribe("vehicles", flt)
        assert sub["type"] == "subscribed" and sub["count"] == 1, sub
        others = [vid for vid in company.vehicles if vid != v1]
        for i, vid in enumerate(others):
            await inst.send_fix(vid, lat=1.0 + i)
        learned = [
            (await wait_position(watch, vid, at_lat(1.0 + i)))[0] for i, vid in enumerate(others)
        ]
        await inst.send_fix(v1, lat=9.0)
        await wait_position(client, v1, at_lat(9.0))
        await reach_event_id(client, max(learned))
        assert client.vehicles_seen() == {v1}
        # getState is narrowed the same way.
        state = await client.request({"type": "getState", "vehicleIds": None}, "positionBatch")
        assert [e["vehicleId"] for e in state["positions"]] == [v1]
        await client.send({"type": "getState", "vehicleIds": [v0, v1, v2]})
        replies = await replies_until_pong(client)
        errors = [m for m in replies if m["type"] == "error"]
        assert len(errors) == 1 and sorted(errors[0]["denied"]) == sorted([v0, v2]), replies
        batch = next(m for m in replies if m["type"] == "positionBatch")
        assert [e["vehicleId"] for e in batch["positions"]] == [v1]
    finally:
        await gather_close(client, watch)


# ------------------------------------------------------------------------------ getState


async def test_get_state_returns_latest_positions_with_status_and_sensors(inst: Instance) -> None:
    company = inst.company(3)
    moving, stopped, no_gps = company.vehicles
    watch = await watcher(inst, company)
    client = await connect(inst, company)
    try:
        t = ts_now_ms()
        sensors = {"fuel": 50.5, "ignition": True}
        for vid in company.vehicles:
            await inst.send_fix(vid, lat=1.0, speed=0.0, ts_ms=t - 1000)
        latest = {
            moving: await inst.send_fix(moving, lat=2.0, speed=40.0, ts_ms=t),
            stopped: await inst.send_fix(stopped, lat=2.0, speed=0.0, ts_ms=t, sensors=sensors),
            no_gps: await inst.send_fix(no_gps, lat=2.0, speed=0.0, satellites=2, ts_ms=t),
        }
        for vid in company.vehicles:
            await wait_position(watch, vid, at_lat(2.0))

        await client.send({"type": "getState", "vehicleIds": company.vehicles})
        replies = await replies_until_pong(client)
        batches = [m for m in replies if m["type"] == "positionBatch"]
        assert len(batches) == 1, replies
        assert [m["type"] for m in replies] == ["positionBatch", "pong"], replies
        batch = batches[0]
        assert batch["eventId"] == 0
        iso_ms(batch["timestamp"])
        entries = {e["vehicleId"]: e for e in batch["positions"]}
        assert len(entries) == len(batch["positions"]) == 3
        assert set(entries) == set(company.vehicles)
        for vid, entry in entries.items():
            check_entry(entry, vid)
            check_position(entry["position"], latest[vid])
        # Status rules (domain/status.py): speed ≥ 3 moving; still with ignition on: stopped;
        # fewer than 3 satellites: noGps.
        assert entries[moving]["status"] == "moving"
        assert entries[stopped]["status"] == "stopped"
        assert entries[no_gps]["status"] == "noGps"
        assert entries[stopped]["sensors"] == sensors
        assert "sensors" not in entries[moving] and "sensors" not in entries[no_gps]
    finally:
        await gather_close(client, watch)


async def test_get_state_without_ids_returns_every_visible_vehicle_of_the_company(
    inst: Instance,
) -> None:
    company = inst.company(3)
    other = inst.company(2)
    mine, theirs = await watcher(inst, company), await watcher(inst, other)
    client = await connect(inst, company)
    try:
        for c, w in ((company, mine), (other, theirs)):
            for vid in c.vehicles:
                await inst.send_fix(vid, lat=4.0)
            for vid in c.vehicles:
                await wait_position(w, vid, at_lat(4.0))
        reply = await client.request({"type": "getState", "vehicleIds": None}, "positionBatch")
        assert reply["eventId"] == 0
        assert sorted(e["vehicleId"] for e in reply["positions"]) == sorted(company.vehicles)
        for e in reply["positions"]:
            check_entry(e, e["vehicleId"])
            assert e["position"]["lat"] == 4.0
    finally:
        await gather_close(client, mine, theirs)


async def test_get_state_refuses_forbidden_ids(inst: Instance) -> None:
    company = inst.company(1)
    other = inst.company(1)
    own, foreign = company.vehicles[0], other.vehicles[0]
    mine, theirs = await watcher(inst, company), await watcher(inst, other)
    client = await connect(inst, company)
    try:
        # Both have a last position: a leak would show.
        await inst.send_fix(own, lat=3.0)
        await inst.send_fix(foreign, lat=4.0)
        await wait_position(mine, own, at_lat(3.0))
        await wait_position(theirs, foreign, at_lat(4.0))

        await client.send({"type": "getState", "vehicleIds": [own, foreign]})
        replies = await replies_until_pong(client)
        errors = [m for m in replies if m["type"] == "error"]
        assert len(errors) == 1, replies
        assert errors[0]["code"] == "SUBSCRIPTION_DENIED"
        assert errors[0]["denied"] == [foreign]
        batches = [m for m in replies if m["type"] == "positionBatch"]
        assert len(batches) == 1, replies
        assert [e["vehicleId"] for e in batches[0]["positions"]] == [own]
        assert foreign not in orjson.dumps(batches).decode()
    finally:
        await gather_close(client, mine, theirs)


# ------------------------------------------------------------------------------ batching


async def test_fast_fixes_are_coalesced_into_batches(inst: Instance) -> None:
    company = inst.company(5)
    client = await connect(inst, company)
    try:
        sub = await client.subscribe("vehicles", {"type": "all"})
        assert sub["count"] == 5
        rounds = 4
        t = ts_now_ms()
        sent: dict[str, list[dict[str, Any]]] = {vid: [] for vid in company.vehicles}
        items = []
        for r in range(rounds):
            for k, vid in enumerate(company.vehicles):
                value = fix(vid, lat=10.0 + r + k / 100, ts_ms=t + r)
                sent[vid].append(value)
                items.append(inst.position(value))
        # One publish: every fix reaches the hub within one flush window.
        await inst.publish(*items)

        for vid, values in sent.items():
            await wait_position(client, vid, at_lat(values[-1]["latitude"]))

        frames = [m for m in client.received if live_positions(m)]
        n_fixes = rounds * len(company.vehicles)
        assert len(frames) < n_fixes, f"{len(frames)} frames for {n_fixes} fixes"
        event_ids = [m["eventId"] for m in frames]
        assert event_ids == sorted(set(event_ids)), event_ids
        for m in frames:
            if m["type"] == "positionBatch":
                ids = [e["vehicleId"] for e in m["positions"]]
                assert len(ids) == len(set(ids)), f"vehicle listed twice in one batch: {m}"
                for e in m["positions"]:
                    check_entry(e, e["vehicleId"])
        final: dict[str, dict[str, Any]] = {}
        for m in frames:
            for _, vid, pos in live_positions(m):
                # Never an older fix after a newer one.
                if vid in final:
                    assert iso_ms(pos["timestamp"]) >= iso_ms(final[vid]["timestamp"])
                final[vid] = pos
        assert set(final) == set(company.vehicles)
        for vid, values in sent.items():
            check_position(final[vid], values[-1])
    finally:
        await client.close()
