"""Shared position streams, in-process (web/streams.py): connections with the same
subscriptions are written by one stream, and what each client sees is what it would see on
its own — every fix's latest position, eventIds in order, events in between, a peer that
stops reading left behind without holding up the others."""

from __future__ import annotations

from tests.support.checks import live_positions
from tests.support.client import WsClient
from tests.support.eventcases import NOTIF, notification
from tests.support.fleet import new_id
from tests.support.inproc import Instance, running, settings, until
from tracker_ws.web.streams import PositionStream

ALL = {"type": "all"}


def stream_of(inst: Instance, client_index: int = 0) -> PositionStream:
    streams = list(inst.rt.hub.streams._streams.values())
    assert streams, "no position stream"
    return streams[client_index] if client_index < len(streams) else streams[0]


def last_lat(client: WsClient, vid: str) -> float | None:
    lats = [p["lat"] for m in client.received for _, v, p in live_positions(m) if v == vid]
    return lats[-1] if lats else None


async def test_connections_with_the_same_subscription_share_one_stream(inst: Instance) -> None:
    company = inst.company(2)
    a, b = company.vehicles
    clients = [await inst.connect(company.token()) for _ in range(5)]
    for c in clients:
        await c.subscribe("vehicles", ALL)
    other = await inst.connect(company.token())
    await other.subscribe("vehicles", {"type": "byIds", "ids": [a]})
    assert len(inst.rt.hub.streams) == 2  # `all` and `byIds [a]`

    await inst.send_fix(a, lat=1.0)
    for c in [*clients, other]:
        await c.wait_for(lambda m: bool(live_positions(m)), 5, "the first fix")
    stream = next(s for s in inst.rt.hub.streams._streams.values() if len(s) == 5)
    # After the first frame (each member was handed it privately) all five are shared.
    await until(lambda: len(stream.shared) == 5, "the five members shared")

    for lat in (2.0, 3.0):
        await inst.send_fix(a, lat=lat)
    await inst.send_fix(b, lat=4.0)
    for c in clients:
        await c.wait_for(lambda m: any(p["lat"] == 4.0 for _, _, p in live_positions(m)), 5)
        assert last_lat(c, a) == 3.0 and last_lat(c, b) == 4.0
    await other.wait_for(lambda m: any(p["lat"] == 3.0 for _, _, p in live_positions(m)), 5)
    assert other.vehicles_seen() == {a}
    # Every client got the same frames, eventIds in order and none twice.
    seen = [[m["eventId"] for m in c.received if live_positions(m)] for c in clients]
    assert all(ids == seen[0] for ids in seen), seen
    assert seen[0] == sorted(set(seen[0])), seen[0]


async def test_an_event_for_one_member_keeps_every_client_in_event_id_order(
    inst: Instance,
) -> None:
    """A member sent an event of its own leaves the stream with its pending positions (they
    go first) and joins again at a later flush; nothing is lost, repeated or reordered."""
    company = inst.company(3)
    users = [new_id() for _ in range(4)]
    clients = []
    for user in users:
        c = await inst.connect(company.token(user))
        await c.subscribe("vehicles", ALL)
        await c.subscribe("notifications", ALL)
        clients.append(c)
    for i in range(40):
        await inst.send_fix(company.vehicles[i % 3], lat=10.0 + i)
        if i % 5 == 0:
            await inst.event(NOTIF, notification(users[i % 4]))
    await inst.send_fix(company.vehicles[0], lat=89.0)
    for c in clients:
        await c.wait_for(
            lambda m: any(p["lat"] == 89.0 for _, _, p in live_positions(m)), 5, "the last fix"
        )
        ids = [m["eventId"] for m in c.received if m.get("eventId")]
        assert ids == sorted(set(ids)), ids
        for vid in company.vehicles:
            lats = [p["lat"] for m in c.received for _, v, p in live_positions(m) if v == vid]
            assert lats == sorted(lats) and lats, (vid, lats)
        # The newest fix of every vehicle arrived (coalescing keeps the latest).
        assert [last_lat(c, v) for v in company.vehicles] == [89.0, 47.0, 48.0]
    notes = [sum(m["type"] == "notification" for m in c.received) for c in clients]
    assert notes == [2, 2, 2, 2], notes


async def test_a_peer_that_stops_reading_leaves_the_stream_the_others_go_on() -> None:
    async with running(settings(flush_window_ms=5)) as inst:
        company = inst.company(0)
        # Many vehicles with long names make big batches (~100 kB): the paused peer's socket
        # fills after a few dozen.
        vehicles = [new_id() for _ in range(300)]
        for vid in vehicles:
            inst.register(company.company_id, vid, name="x" * 200)
        slow = await inst.seed_client(company.token(), [("vehicles", ALL)])
        fast = await inst.connect(company.token())
        await fast.subscribe("vehicles", ALL)
        await inst.send_fix(vehicles[0], lat=1.0)
        await fast.wait_for(lambda m: bool(live_positions(m)), 5, "the first fix")
        stream = stream_of(inst)
        await until(lambda: len(stream.shared) == 2, "both shared")
        slow.pause()
        lat = 1.0
        while len(stream.shared) == 2:
            assert lat < 2, "the paused peer never left the stream (1,000 batches)"
            lat += 0.001
            flushes = inst.rt.flusher.runs
            await inst.publish(*(inst.position(inst.fix(v, lat=lat)) for v in vehicles))
            await until(lambda f=flushes: inst.rt.flusher.runs > f, "a flush")  # type: ignore[misc]
        assert len(stream.private) == 1
        await inst.send_fix(vehicles[0], lat=50.0)
        await fast.wait_for(lambda m: any(p["lat"] == 50.0 for _, _, p in live_positions(m)), 5)
        slow.resume()
        await slow.wait_for(
            lambda: slow.last_positions().get(vehicles[0]) == 50.0, 10, "the latest fix"
        )
        # Back in the stream once it has caught up (at the stream's next flush).
        await inst.send_fix(vehicles[1], lat=51.0)
        await until(lambda: len(stream.shared) == 2, "the slow peer shared again")
        await inst.send_fix(vehicles[1], lat=52.0)
        await fast.wait_for(lambda m: any(p["lat"] == 52.0 for _, _, p in live_positions(m)), 5)
        await slow.wait_for(lambda: slow.last_positions().get(vehicles[1]) == 52.0, 5, "52")
