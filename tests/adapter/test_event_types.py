"""Every subscription type × filter of seed §2.1, in-process: which connection gets which geo
event, notification, maintenance event, alert and position (was tests/integration/, once per
input source; the inputs themselves are tested there).

Events enter as the partition owners would publish them: `EventIngest.submit` with the
topic's JSON (tests/support/inproc.py). Negative checks are exact, see
tests/support/eventcases.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.client import Msg, WsClient
from tests.support.eventcases import (
    ALERT,
    GEO,
    INVALID_PAIRS,
    MAINT,
    NOTIF,
    Check,
    Marker,
    alert,
    check_alert_frame,
    check_geo_frame,
    check_notification_frame,
    expected_maintenance,
    filter_of,
    geo_event,
    maintenance,
    marker_of,
    notification,
    received_markers,
    subscribe_everything,
    subscribed,
    unique_lat,
    wait_marker,
)
from tests.support.fleet import Company, new_id
from tests.support.inproc import Instance


@dataclass
class World:
    """Company `a` (the subscriber's) with 4 vehicles in groups g0 = {v0, v2}, g1 = {v1, v3};
    company `b` with 2 vehicles in one group. Watchers `wa` / `wb` (other users of a / b)
    subscribe to every type with `all`: they see every event the subscriber must not."""

    inst: Instance
    a: Company
    b: Company
    wa: WsClient
    wb: WsClient
    wa_user: str
    wb_user: str
    zone_a1: str = field(default_factory=new_id)
    zone_a2: str = field(default_factory=new_id)
    zone_b: str = field(default_factory=new_id)

    @property
    def v(self) -> list[str]:
        return self.a.vehicles

    @property
    def g(self) -> list[str]:
        return list(self.a.groups)

    async def connect(self, user_id: str | None = None, company: Company | None = None) -> WsClient:
        return await self.inst.connect((company or self.a).token(user_id))

    async def send(self, topic: str, value: dict[str, Any]) -> Marker:
        """The event as its topic carries it, published; the marker of its frame."""
        await self.inst.event(topic, value)
        return marker_of(topic, value)

    async def fix(self, vehicle_id: str) -> Marker:
        lat = unique_lat()
        await self.inst.send_fix(vehicle_id, lat=lat)
        return ("pos", vehicle_id, lat)


@pytest.fixture
async def world(inst: Instance) -> AsyncIterator[World]:
    a = inst.company(4, groups=2)
    b = inst.company(2, groups=1)
    wa_user, wb_user = new_id(), new_id()
    wa = await inst.connect(a.token(wa_user))
    wb = await inst.connect(b.token(wb_user))
    await subscribe_everything(wa)
    await subscribe_everything(wb)
    yield World(inst, a, b, wa, wb, wa_user, wb_user)


# ------------------------------------------------------------------------------ the table
#
# One coroutine per (subscriptionType, filter) pair that makes sense (protocol.ALLOWED_FILTERS
# minus vehicles all/byIds/byGroup, covered by test_subscriptions.py). Each subscribes a fresh
# user of company `a`, then produces events in order with chk.yes / chk.no.

Row = Callable[[World, WsClient, Check], Awaitable[None]]
TABLE: dict[str, Row] = {}


def row(stype: str, kind: str) -> Callable[[Row], Row]:
    def register(fn: Row) -> Row:
        TABLE[f"{stype}-{kind}"] = fn
        return fn

    return register


@row("geoEvents", "all")
async def _geo_all(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "geoEvents", {"type": "all"}, 4)
    first = geo_event(w.a, w.v[0], w.zone_a1, "entered", geozone_name="Depot")
    check_geo_frame(await chk.yes(w.send(GEO, first), w.wa), first)
    await chk.no(w.send(GEO, geo_event(w.b, w.b.vehicles[0], w.zone_b)), w.wb)
    last = geo_event(w.a, w.v[1], w.zone_a2, "exited", geozone_name="Client site")
    check_geo_frame(await chk.yes(w.send(GEO, last), w.wa), last)


@row("geoEvents", "byIds")
async def _geo_by_ids(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "geoEvents", {"type": "byIds", "ids": [w.v[0]]}, 1)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a1, "entered")))
    await chk.no(w.send(GEO, geo_event(w.a, w.v[1], w.zone_a1, "entered")), w.wa)
    await chk.no(w.send(GEO, geo_event(w.b, w.b.vehicles[0], w.zone_b)), w.wb)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a1, "exited")))


@row("geoEvents", "byGroup")
async def _geo_by_group(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "geoEvents", {"type": "byGroup", "groupId": w.g[0]}, 2)  # v0, v2
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a1)))
    await chk.no(w.send(GEO, geo_event(w.a, w.v[1], w.zone_a1)), w.wa)
    await chk.no(w.send(GEO, geo_event(w.b, w.b.vehicles[0], w.zone_b)), w.wb)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[2], w.zone_a2)))


@row("geoEvents", "byGeozone")
async def _geo_by_geozone(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "geoEvents", {"type": "byGeozone", "geozoneId": w.zone_a1}, 0)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a1, "entered")))
    await chk.no(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a2, "entered")), w.wa)
    await chk.no(w.send(GEO, geo_event(w.b, w.b.vehicles[0], w.zone_b)), w.wb)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[1], w.zone_a1, "entered")))


@row("vehicles", "byGeozone")
async def _vehicles_by_geozone(w: World, sub: WsClient, chk: Check) -> None:
    """Positions of the vehicles currently inside the zone, learned from entered/exited."""
    zone = w.zone_a1
    await subscribed(sub, "vehicles", {"type": "byGeozone", "geozoneId": zone}, 0)
    await chk.no(w.fix(w.v[0]), w.wa)  # not inside yet
    await chk.no(w.send(GEO, geo_event(w.a, w.v[0], zone, "entered")), w.wa)  # no geoEvents sub
    await chk.yes(w.fix(w.v[0]))  # inside now
    await chk.no(w.fix(w.v[1]), w.wa)  # never inside
    await subscribed(sub, "vehicles", {"type": "byGeozone", "geozoneId": zone}, 1)
    await chk.no(w.send(GEO, geo_event(w.a, w.v[0], zone, "exited")), w.wa)
    await chk.no(w.fix(w.v[0]), w.wa)  # left the zone: stops
    await chk.no(w.send(GEO, geo_event(w.a, w.v[2], zone, "entered")), w.wa)
    await chk.yes(w.fix(w.v[2]))


@row("notifications", "all")
async def _notifications_all(w: World, sub: WsClient, chk: Check) -> None:
    """Only the connection's own user: not another user of the same company, not another
    company's user."""
    user = chk.user
    await subscribed(sub, "notifications", {"type": "all"}, 1)
    await chk.no(w.send(NOTIF, notification(w.wa_user)), w.wa)
    first = notification(user)
    check_notification_frame(await chk.yes(w.send(NOTIF, first)), first["notification"])
    await chk.no(w.send(NOTIF, notification(w.wb_user)), w.wb)
    await chk.yes(w.send(NOTIF, notification(user, category="geofence", priority="low")))


@row("maintenance", "all")
async def _maintenance_all(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "maintenance", {"type": "all"}, 4)
    first = maintenance(w.a, w.v[0])
    frame = await chk.yes(w.send(MAINT, first), w.wa)
    check_notification_frame(frame, expected_maintenance(first))
    await chk.no(w.send(MAINT, maintenance(w.b, w.b.vehicles[0])), w.wb)
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[3])))


@row("maintenance", "byIds")
async def _maintenance_by_ids(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "maintenance", {"type": "byIds", "ids": [w.v[0]]}, 1)
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[0])))
    await chk.no(w.send(MAINT, maintenance(w.a, w.v[1])), w.wa)
    await chk.no(w.send(MAINT, maintenance(w.b, w.b.vehicles[0])), w.wb)
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[0])))


@row("maintenance", "byGroup")
async def _maintenance_by_group(w: World, sub: WsClient, chk: Check) -> None:
    await subscribed(sub, "maintenance", {"type": "byGroup", "groupId": w.g[1]}, 2)  # v1, v3
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[1])))
    await chk.no(w.send(MAINT, maintenance(w.a, w.v[0])), w.wa)
    await chk.no(w.send(MAINT, maintenance(w.b, w.b.vehicles[0])), w.wb)
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[3])))


@row("systemAlerts", "all")
async def _system_alerts_all(w: World, sub: WsClient, chk: Check) -> None:
    """Everyone subscribed to systemAlerts; with targetCompanyIds only those companies. A
    connection not subscribed to systemAlerts gets none."""
    bystander_user = new_id()
    bystander = await w.connect(bystander_user)  # company a, subscribed to notifications only
    await subscribed(bystander, "notifications", {"type": "all"}, 1)
    await subscribed(sub, "systemAlerts", {"type": "all"}, 1)
    first = alert("info")
    check_alert_frame(await chk.yes(w.send(ALERT, first), w.wa, w.wb), first)
    await chk.yes(w.send(ALERT, alert("warning", [w.a])), w.wa)
    await chk.no(w.send(ALERT, alert("critical", [w.b])), w.wb)
    last = alert("critical", [w.b, w.a])
    check_alert_frame(await chk.yes(w.send(ALERT, last), w.wa, w.wb), last)
    # The bystander's exact check: a notification of its own, published after every alert.
    sentinel = notification(bystander_user)
    await w.send(NOTIF, sentinel)
    await wait_marker(bystander, marker_of(NOTIF, sentinel))
    assert [m["type"] for m in bystander.received if m.get("eventId")] == ["notification"]


@pytest.mark.parametrize(
    "pair",
    [p for p in TABLE],
)
async def test_type_filter_table(world: World, pair: str) -> None:
    user = new_id()
    sub = await world.connect(user)
    chk = Check(sub, user)
    await TABLE[pair](world, sub, chk)
    chk.verify()


@pytest.mark.parametrize(
    ("stype", "kind"), INVALID_PAIRS, ids=[f"{t}-{k}" for t, k in INVALID_PAIRS]
)
async def test_filter_that_does_not_apply_to_the_type_is_invalid_message(
    inst: Instance, stype: str, kind: str
) -> None:
    company = inst.company(1, groups=1)
    target = {
        "byIds": company.vehicles[0],
        "byGroup": next(iter(company.groups)),
        "byGeozone": new_id(),
    }[kind]
    client = await inst.connect(company.token())
    for verb in ("subscribe", "unsubscribe"):
        start = len(client.received)
        await client.send(
            {"type": verb, "subscriptionType": stype, "filter": filter_of(kind, target)}
        )
        await client.request({"type": "ping"}, "pong")
        replies = client.received[start:]
        assert [m["type"] for m in replies] == ["error", "pong"], replies
        err = replies[0]
        assert err["code"] == "INVALID_MESSAGE", err
        assert kind in err["message"] and stype in err["message"], err
    # The valid filter of the same type is accepted on the same connection.
    assert (await client.subscribe(stype, {"type": "all"}))["type"] == "subscribed"


# ------------------------------------------------------------------------------ permissions


async def test_geozone_and_group_of_another_company_are_denied(world: World) -> None:
    w = world
    # Zone B becomes known as company b's from b's own geofence event.
    learn = geo_event(w.b, w.b.vehicles[0], w.zone_b, "entered")
    await wait_marker(w.wb, await w.send(GEO, learn))
    b_group = next(iter(w.b.groups))
    user = new_id()
    client = await w.connect(user)
    await subscribed(client, "notifications", {"type": "all"}, 1)  # for the final sentinel
    attempts = [
        ("geoEvents", filter_of("byGeozone", w.zone_b), w.zone_b),
        ("vehicles", filter_of("byGeozone", w.zone_b), w.zone_b),
        ("geoEvents", filter_of("byGroup", b_group), b_group),
        ("maintenance", filter_of("byGroup", b_group), b_group),
        ("vehicles", filter_of("byGroup", b_group), b_group),
        ("geoEvents", filter_of("byIds", w.b.vehicles[0]), w.b.vehicles[0]),
        ("maintenance", filter_of("byIds", w.b.vehicles[0]), w.b.vehicles[0]),
    ]
    for stype, flt, denied in attempts:
        start = len(client.received)
        await client.send({"type": "subscribe", "subscriptionType": stype, "filter": flt})
        await client.request({"type": "ping"}, "pong")
        replies = client.received[start:]
        assert [m["type"] for m in replies] == ["error", "pong"], (stype, flt, replies)
        err = replies[0]
        assert err["code"] == "SUBSCRIPTION_DENIED", err
        assert err["denied"] == [denied] and err["subscriptionType"] == stype, err
    # Nothing was subscribed: b's events in that zone / group never reach the client.
    await wait_marker(w.wb, await w.send(GEO, geo_event(w.b, w.b.vehicles[0], w.zone_b, "exited")))
    await wait_marker(w.wb, await w.send(MAINT, maintenance(w.b, w.b.vehicles[1])))
    await wait_marker(w.wb, await w.fix(w.b.vehicles[0]))
    sentinel = notification(user)
    await wait_marker(client, await w.send(NOTIF, sentinel))
    assert received_markers(client) == [marker_of(NOTIF, sentinel)]


async def test_geozone_subscribed_before_it_was_known_shows_nothing_of_another_company(
    world: World,
) -> None:
    """A zone never seen is accepted (its owner is unknown). When its events turn out to be
    another company's, the early subscription must not leak them, nor that company's
    positions inside it."""
    w = world
    zone = new_id()
    user = new_id()
    client = await w.connect(user)
    await subscribed(client, "geoEvents", {"type": "byGeozone", "geozoneId": zone}, 0)
    await subscribed(client, "vehicles", {"type": "byGeozone", "geozoneId": zone}, 0)
    await subscribed(client, "notifications", {"type": "all"}, 1)
    intruder = w.b.vehicles[0]
    await wait_marker(w.wb, await w.send(GEO, geo_event(w.b, intruder, zone, "entered")))
    await wait_marker(w.wb, await w.fix(intruder))  # inside b's zone: b's byGeozone would get it
    # Now known as b's: subscribing again is refused.
    again = await client.subscribe("geoEvents", {"type": "byGeozone", "geozoneId": zone})
    assert again["type"] == "error" and again["code"] == "SUBSCRIPTION_DENIED", again
    sentinel = notification(user)
    await wait_marker(client, await w.send(NOTIF, sentinel))
    assert received_markers(client) == [marker_of(NOTIF, sentinel)]


async def test_token_narrowed_to_a_group_gets_its_groups_geo_and_maintenance_events(
    world: World,
) -> None:
    w = world
    user = new_id()
    client = await w.inst.connect(w.a.token(user, group_ids=[w.g[0]]))
    chk = Check(client, user)
    await subscribed(client, "geoEvents", {"type": "all"}, 2)  # v0, v2
    await subscribed(client, "maintenance", {"type": "all"}, 2)
    await chk.yes(w.send(GEO, geo_event(w.a, w.v[0], w.zone_a1)))
    await chk.no(w.send(GEO, geo_event(w.a, w.v[1], w.zone_a1)), w.wa)
    await chk.no(w.send(MAINT, maintenance(w.a, w.v[3])), w.wa)
    await chk.yes(w.send(MAINT, maintenance(w.a, w.v[2])))
    chk.verify()


# ------------------------------------------------------------------------------ unsubscribe


async def test_unsubscribe_removes_exactly_the_filter_or_the_whole_type(world: World) -> None:
    w = world
    user = new_id()
    sub = await w.connect(user)
    chk = Check(sub, user)
    v = w.v
    await subscribed(sub, "geoEvents", {"type": "byIds", "ids": [v[0], v[1]]}, 2)
    await subscribed(sub, "geoEvents", {"type": "byGeozone", "geozoneId": w.zone_a2}, 0)
    await subscribed(sub, "maintenance", {"type": "all"}, 4)
    await subscribed(sub, "notifications", {"type": "all"}, 1)

    await chk.yes(w.send(GEO, geo_event(w.a, v[0], w.zone_a1)))
    await chk.yes(w.send(GEO, geo_event(w.a, v[1], w.zone_a1)))
    await chk.yes(w.send(GEO, geo_event(w.a, v[3], w.zone_a2)))

    async def unsubscribe(stype: str, flt: dict[str, Any] | None) -> Msg:
        msg = {"type": "unsubscribe", "subscriptionType": stype, "filter": flt}
        reply = await sub.request(msg, "unsubscribed")
        assert reply["subscriptionType"] == stype, reply
        return reply

    # A part never subscribed: nothing changes.
    gone = await unsubscribe("geoEvents", {"type": "byGeozone", "geozoneId": w.zone_a1})
    assert gone["count"] == 0, gone
    # Exactly v0 goes; v1 (same byIds filter) and the geozone part stay.
    assert (await unsubscribe("geoEvents", {"type": "byIds", "ids": [v[0]]}))["count"] == 1
    await chk.no(w.send(GEO, geo_event(w.a, v[0], w.zone_a1, "exited")), w.wa)
    await chk.yes(w.send(GEO, geo_event(w.a, v[1], w.zone_a1, "exited")))
    await chk.no(w.send(GEO, geo_event(w.a, v[2], w.zone_a1, "entered")), w.wa)
    await chk.yes(w.send(GEO, geo_event(w.a, v[2], w.zone_a2, "entered")))
    # filter null: the whole type; maintenance (another type) is untouched.
    await unsubscribe("geoEvents", None)
    await chk.no(w.send(GEO, geo_event(w.a, v[1], w.zone_a2, "entered")), w.wa)
    await chk.no(w.send(GEO, geo_event(w.a, v[3], w.zone_a2, "exited")), w.wa)
    await chk.yes(w.send(MAINT, maintenance(w.a, v[1])))
    assert (await unsubscribe("maintenance", {"type": "all"}))["count"] == 1
    await chk.no(w.send(MAINT, maintenance(w.a, v[1])), w.wa)
    await chk.yes(w.send(NOTIF, notification(user)))
    chk.verify()
