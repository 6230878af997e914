"""Recovery by lastEventId on one instance, in-process (ARCHITECTURE §3, seed §1.5 and §4):
`recovered: true` with exactly the missed events, once each, in eventId order, then the
current positions, then live events; `recovered: false` with its reason; getState; ack.

Recovery across instances, restarts and kills: tests/integration/test_recovery.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.support.client import Msg, SeedLikeClient, is_replayable
from tests.support.eventcases import (
    GEO,
    MAINT,
    NOTIF,
    Marker,
    geo_event,
    maintenance,
    marker_of,
    markers,
    notification,
)
from tests.support.fleet import Company, new_id
from tests.support.inproc import Instance, running, settings, until
from tracker_ws.bus.base import HISTORY_CAP
from tracker_ws.domain.close import CloseCode

Sub = tuple[str, dict[str, Any]]
ALL: dict[str, Any] = {"type": "all"}


def got(client: SeedLikeClient) -> list[Marker]:
    """Markers of the replayable events every connection of `client` received, in order."""
    return [mk for m in client.messages() if is_replayable(m) for mk in markers(m)]


def frames(client: SeedLikeClient) -> list[Msg]:
    """What the current connection received."""
    return [m for _, m in client.conn.messages]


async def send(inst: Instance, topic: str, value: dict[str, Any]) -> Marker:
    await inst.event(topic, value)
    return marker_of(topic, value)


async def get_state(client: SeedLikeClient, vehicle_ids: list[str]) -> Msg:
    start = len(client.conn.messages)
    await client.send({"type": "getState", "vehicleIds": vehicle_ids})

    def answer() -> Msg | None:
        return next((m for m in frames(client)[start:] if m["type"] == "positionBatch"), None)

    await client.wait_for(lambda: answer() is not None, 5, "the getState answer")
    found = answer()
    assert found is not None and found["eventId"] == 0, found
    return found


async def test_missed_events_are_replayed_once_in_order_then_positions_then_live(
    inst: Instance,
) -> None:
    """The seed client re-sends its subscribes after the reconnect: replay, snapshot and live
    events still come once each, in eventId order."""
    company = inst.company(2)
    v1, v2 = company.vehicles
    user = new_id()
    subs: list[Sub] = [
        ("notifications", ALL),
        ("geoEvents", ALL),
        ("maintenance", {"type": "byIds", "ids": [v1]}),
        ("vehicles", {"type": "byIds", "ids": [v1]}),
    ]
    client = await inst.seed_client(company.token(user), subs)
    first = await send(inst, NOTIF, notification(user))
    await client.wait_for(lambda: first in got(client), 5, "the first notification")
    await client.close()
    seen = client.last_event_id
    skipped = maintenance(company, v2)  # not subscribed
    missed = [
        await send(inst, NOTIF, notification(user)),
        await send(inst, GEO, geo_event(company, v2, new_id())),
        await send(inst, MAINT, maintenance(company, v1)),
        await send(inst, MAINT, skipped),
        await send(inst, NOTIF, notification(user)),
    ]
    await inst.send_fix(v1, lat=5.0)  # while away: in the snapshot
    await inst.send_fix(v2, lat=6.0)  # not subscribed

    hello = await inst.reopen(client)
    assert hello["recovered"] is True and hello["restoredSubscriptions"] == 4, hello
    assert hello["lastEventId"] == seen, hello
    live = [
        await send(inst, GEO, geo_event(company, v1, new_id())),
        await send(inst, NOTIF, notification(user)),
    ]
    await client.wait_for(lambda: got(client)[-1:] == live[-1:], 5, "the live events")

    owed = [first, *[mk for mk in missed if mk != marker_of(MAINT, skipped)], *live]
    assert got(client) == owed
    ids = [m["eventId"] for m in client.messages() if is_replayable(m)]
    assert ids == sorted(set(ids)) and ids[0] == seen, ids
    kinds = [m["type"] for m in frames(client)]
    assert kinds.count("connected") == 1 and kinds.count("subscribed") == 4, kinds
    # The replay, then the one snapshot with the position missed, then live.
    snapshot = kinds.index("positionBatch")
    assert kinds[1:snapshot] == ["notification", "geoEvent", "notification", "notification"]
    batch = frames(client)[snapshot]
    assert batch["eventId"] == 0
    assert [(p["vehicleId"], p["position"]["lat"]) for p in batch["positions"]] == [(v1, 5.0)]
    assert kinds.count("positionBatch") == 1, kinds


async def test_more_missed_events_than_the_queue_limit_are_all_replayed() -> None:
    async with running(settings(queue_limit=20)) as inst:
        user = new_id()
        client = await inst.seed_client(Company().token(user), [("notifications", ALL)])
        first = await send(inst, NOTIF, notification(user))
        await client.wait_for(lambda: first in got(client), 5, "the first notification")
        await client.close()
        missed = [await send(inst, NOTIF, notification(user)) for _ in range(30)]
        hello = await inst.reopen(client)
        assert hello["recovered"] is True, hello
        await client.wait_for(lambda: got(client) == [first, *missed], 5, "every missed one")


async def test_slow_consumer_is_closed_4009_and_recovers_what_it_missed() -> None:
    """A client that stops reading: big notifications fill its socket, then its queue; it is
    closed with 4009 after its state is saved and gets the rest when it reconnects."""
    async with running(settings(queue_limit=10)) as inst:
        user = new_id()
        client = await inst.seed_client(Company().token(user), [("notifications", ALL)])
        client.pause()
        big = {f"k{i}": "x" * 4000 for i in range(15)}  # about 60 kB each
        sent: list[Marker] = []
        while not inst.metric("ws_slow_consumer_closes_total"):
            assert len(sent) < 1000, "no 4009 after 1000 big notifications"
            sent.append(await send(inst, NOTIF, notification(user, data=big)))
        client.resume()
        assert await client.wait_closed(10) == CloseCode.SLOW_CONSUMER
        received = got(client)
        assert received == sent[: len(received)] and len(received) < len(sent)
        hello = await inst.reopen(client)
        assert hello["recovered"] is True, hello
        await client.wait_for(lambda: got(client) == sent, 10, "the rest")


async def test_expired_state_is_not_recovered_and_get_state_works() -> None:
    """Once the saved state's TTL has passed: `recovered: false, reason: expired`, nothing
    restored; getState and subscribing again work."""
    async with running(settings(state_ttl_s=0.2)) as inst:
        company = inst.company(1)
        (vid,) = company.vehicles
        user = new_id()
        subs: list[Sub] = [("vehicles", {"type": "byIds", "ids": [vid]}), ("notifications", ALL)]
        client = await inst.seed_client(company.token(user), subs)
        await inst.send_fix(vid, lat=10.0)
        await client.wait_for(lambda: client.last_positions().get(vid) == 10.0, 5, "a fix")
        await client.close()
        seen = client.last_event_id

        async def expired() -> bool:
            state, was_saved = await inst.rt.bus.store.load_state(user)
            return state is None and was_saved

        await until(expired, "the saved state to expire")
        await inst.send_fix(vid, lat=11.5)  # while away
        hello = await inst.reopen(client)
        assert hello["recovered"] is False and hello["reason"] == "expired", hello
        assert hello["lastEventId"] == seen and not hello.get("restoredSubscriptions"), hello
        batch = await get_state(client, [vid])
        assert [(p["vehicleId"], p["position"]["lat"]) for p in batch["positions"]] == [(vid, 11.5)]
        await inst.send_fix(vid, lat=12.5)  # the re-sent subscribes work
        await client.wait_for(lambda: client.last_positions().get(vid) == 12.5, 5, "live again")


async def test_history_trimmed_past_last_event_id_is_not_recovered(inst: Instance) -> None:
    """More than the history cap published for one user while away: `recovered: false,
    reason: trimmed`, nothing replayed; getState works."""
    company = inst.company(1)
    (vid,) = company.vehicles
    user = new_id()
    subs: list[Sub] = [("notifications", ALL), ("vehicles", {"type": "byIds", "ids": [vid]})]
    client = await inst.seed_client(company.token(user), subs)
    first = await send(inst, NOTIF, notification(user))
    await client.wait_for(lambda: first in got(client), 5, "the first notification")
    await client.close()
    await inst.send_fix(vid, lat=21.5)
    for _ in range(HISTORY_CAP + 1):
        inst.ingest.submit(NOTIF, None, orjson.dumps(notification(user)))
    await inst.publisher.flush()
    hello = await inst.reopen(client)
    assert hello["recovered"] is False and hello["reason"] == "trimmed", hello
    assert not any(is_replayable(m) for m in frames(client)), "replayed anyway"
    batch = await get_state(client, [vid])
    assert [p["position"]["lat"] for p in batch["positions"]] == [21.5]


async def test_never_seen_user_with_last_event_id_gets_no_state(inst: Instance) -> None:
    client = SeedLikeClient(Company().token(), [("notifications", ALL)])
    inst.seed_clients.append(client)
    client.last_event_id = 12345
    hello = await inst.reopen(client)
    assert hello["recovered"] is False and hello["reason"] == "no_state", hello
    assert [m["type"] for m in frames(client)] == ["connected", "subscribed"]


async def test_same_user_in_another_company_gets_permissions_changed(inst: Instance) -> None:
    user = new_id()
    old, new = Company(), Company()
    subs: list[Sub] = [("notifications", ALL), ("geoEvents", ALL)]
    client = await inst.seed_client(old.token(user), subs)
    first = await send(inst, NOTIF, notification(user))
    await client.wait_for(lambda: first in got(client), 5, "a notification")
    await client.close()
    await send(inst, NOTIF, notification(user))  # missed; must not be replayed
    moved = SeedLikeClient(new.token(user), subs)
    inst.seed_clients.append(moved)
    moved.last_event_id = client.last_event_id
    hello = await inst.reopen(moved)
    assert hello["recovered"] is False and hello["reason"] == "permissions_changed", hello
    assert not hello.get("restoredSubscriptions"), hello
    assert not any(is_replayable(m) for m in moved.messages())


async def test_vehicle_moved_to_another_company_is_not_restored(inst: Instance) -> None:
    """The registry moves v2 to another company while the user is away: on recovery v1
    comes back, v2 does not, and a SUBSCRIPTION_REVOKED error names v2."""
    company = inst.company(2)
    v1, v2 = company.vehicles
    other = Company()
    user = new_id()
    ids = {"type": "byIds", "ids": sorted([v1, v2])}
    client = await inst.seed_client(company.token(user), [("vehicles", ids), ("geoEvents", ids)])
    await inst.send_fix(v1, lat=30.0)
    await inst.send_fix(v2, lat=31.0)
    await client.wait_for(lambda: {v1, v2} <= set(client.last_positions()), 5, "both vehicles")
    await client.close()
    inst.register(other.company_id, v2)

    hello = await inst.reopen(client)
    assert hello["recovered"] is True and hello["restoredSubscriptions"] == 2, hello
    await client.wait_for(
        lambda: any(m["type"] == "positionBatch" for m in frames(client)), 5, "the snapshot"
    )
    errors = [m for m in frames(client) if m["type"] == "error"]
    assert errors and errors[0]["code"] == "SUBSCRIPTION_REVOKED", frames(client)
    assert v2 in errors[0]["revoked"] and v1 not in errors[0]["revoked"], errors
    snapshot = next(m for m in frames(client) if m["type"] == "positionBatch")
    assert [p["vehicleId"] for p in snapshot["positions"]] == [v1], snapshot
    # Exact negative check: v2's fix is published (and seen by its new company) before v1's.
    watcher = await inst.connect(other.token())
    assert (await watcher.subscribe("vehicles", {"type": "byIds", "ids": [v2]}))["count"] == 1
    await inst.send_fix(v2, lat=40.0)
    await watcher.wait_for(lambda m: m.get("type") in ("position", "positionBatch"), 5, "v2")
    await inst.send_fix(v1, lat=41.0)
    await client.wait_for(lambda: client.last_positions().get(v1) == 41.0, 5, "v1 live")
    assert client.last_positions().get(v2) == 31.0  # from before the move, never after


async def test_ack_is_recorded_shown_as_acked_event_id_and_saved(inst: Instance) -> None:
    user = new_id()
    client = await inst.seed_client(Company().token(user), [("notifications", ALL)])
    first = await send(inst, NOTIF, notification(user))
    await client.wait_for(lambda: first in got(client), 5, "a notification")
    eid = client.last_event_id
    await client.send({"type": "ack", "eventId": eid})
    await client.send({"type": "ack", "eventId": eid - 1})  # never goes back
    # Frames are handled in order: once the ping is answered, the acks were.
    await client.send({"type": "ping"})
    await client.wait_for(lambda: frames(client)[-1]["type"] == "pong", 5, "pong")
    body = await inst.admin_get(f"/api/v1/ws/users/{user}/connections")
    [row] = body["connections"]
    assert client.conn.hello is not None and row["id"] == client.conn.hello["connectionId"]
    assert row["ackedEventId"] == eid and row["lastEventId"] == eid, row
    await client.close()

    async def saved() -> bool:
        state, _ = await inst.rt.bus.store.load_state(user)
        return state is not None and b'"ackedEventId":%d' % eid in state

    await until(saved, "ackedEventId in the saved state")


async def test_each_device_of_one_user_recovers_its_own_state(inst: Instance) -> None:
    """`&device=` keeps one state per device: the other device's subscriptions stay its own."""
    user = new_id()
    company = Company()
    mine = await inst.seed_client(
        company.token(user), [("notifications", ALL)], query="device=phone"
    )
    other = await inst.seed_client(
        company.token(user), [("systemAlerts", ALL), ("geoEvents", ALL)], query="device=web"
    )
    first = await send(inst, NOTIF, notification(user))
    await mine.wait_for(lambda: first in got(mine), 5, "a notification")
    await mine.close()
    await other.close()
    mine.subscriptions = []  # nothing re-sent: only the restored state subscribes
    hello = await inst.reopen(mine)
    assert hello["recovered"] is True and hello["restoredSubscriptions"] == 1, hello
    missed = await send(inst, NOTIF, notification(user))
    await mine.wait_for(lambda: missed in got(mine), 5, "the restored subscription")
