"""Every subscription type × filter of seed §2.1 against the real broker, Redis and worker.

Geofence events, notifications, maintenance events and system alerts come from their Kafka
topics (geo-events, notifications, maintenance-events, system-alerts) or from the Redis
channels `events:{type}` other services publish on (ARCHITECTURE §6); each table row runs once
per input source.

Negative checks are exact (tests/support/client.py, `wait_event_id_at_least`): eventIds are
global and every connection receives its events in increasing eventId order. Each event that
must NOT reach the subscriber is first seen by a watcher that legitimately receives it (so it
has been published and has its eventId); the next event is produced only after that. The row
ends with an event the subscriber must receive: it was published later, so it carries a larger
eventId, and once the subscriber has it, anything it was (wrongly) sent earlier has arrived too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tests.support.checks import live_positions, registered_company
from tests.support.client import Msg, WsClient, gather_close
from tests.support.fleet import Company, FleetDriver, new_id
from tests.support.streams import read_dead_letters, stream_count
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import Worker

SOURCES = ("kafka", "redis")
GEO, NOTIF, MAINT, ALERT = "geo-events", "notifications", "maintenance-events", "system-alerts"
EVENT_TOPICS = (GEO, NOTIF, MAINT, ALERT)

GEO_EVENT_KEYS = {
    "vehicleId",
    "vehicleName",
    "geozoneId",
    "geozoneName",
    "eventType",
    "position",
    "timestamp",
}
NOTIFICATION_KEYS = {"id", "title", "body", "category", "priority", "data"}

Marker = tuple[Any, ...]

# ------------------------------------------------------------------------------ unique values

_seq = itertools.count(1)
_last_ms = 0


def unique_lat() -> float:
    """A latitude no other event or fix of this session carries: identifies it on arrival."""
    return round(1.0 + next(_seq) * 0.0001, 6)


def stamp() -> int:
    """Strictly increasing epoch ms (geo events are de-duplicated by vehicle, zone, type and
    timestamp: two events of one crossing must not share a millisecond)."""
    global _last_ms
    _last_ms = max(int(time.time() * 1000), _last_ms + 1)
    return _last_ms


def iso(ms: int) -> str:
    """The server's rendering of epoch ms (`YYYY-MM-DDTHH:MM:SS.mmmZ`)."""
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


# ------------------------------------------------------------------------------ input events


def geo_event(
    company: Company,
    vehicle_id: str,
    geozone_id: str,
    event_type: str = "entered",
    *,
    geozone_name: str = "Depot",
) -> dict[str, Any]:
    ts = stamp()
    return {
        "vehicleId": vehicle_id,
        "vehicleName": f"Truck {vehicle_id[:4]}",
        "companyId": company.company_id,
        "geozoneId": geozone_id,
        "geozoneName": geozone_name,
        "eventType": event_type,
        "position": {
            "lat": unique_lat(),
            "lon": 37.62,
            "speed": 12.5,
            "course": 90,
            "altitude": 150,
            "satellites": 9,
            "timestamp": ts,
        },
        "timestamp": ts,
    }


def notification(user_id: str, **over: Any) -> dict[str, Any]:
    return {
        "userId": user_id,
        "notification": {
            "id": new_id(),
            "title": "Speeding",
            "body": "Truck А123ВС exceeded the limit: 95 km/h",
            "category": "speed",
            "priority": "high",
            "data": {"vehicleId": new_id(), "speed": "95"},
            **over,
        },
    }


def maintenance(company: Company, vehicle_id: str) -> dict[str, Any]:
    return {
        "companyId": company.company_id,
        "vehicleId": vehicle_id,
        "id": new_id(),
        "type": "oil_change",
        "title": "Oil change due",
        "body": "Oil change due in 500 km",
        "priority": "normal",
        "data": {"mileageKm": "14500"},
    }


def alert(level: str = "warning", targets: list[Company] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "level": level,
        "message": f"Planned maintenance in 30 minutes ({uuid.uuid4().hex[:8]})",
    }
    if targets is not None:
        value["targetCompanyIds"] = [c.company_id for c in targets]
    return value


def marker_of(topic: str, value: dict[str, Any]) -> Marker:
    """What identifies this input event in the frame it turns into (see `markers`)."""
    if topic == GEO:
        return ("geo", value["position"]["lat"])
    if topic == NOTIF:
        return ("notif", value["notification"]["id"])
    if topic == MAINT:
        return ("notif", value["id"])
    return ("alert", value["message"])


def markers(msg: Msg) -> list[Marker]:
    """Markers of the events one received frame carries."""
    t = msg.get("type")
    if t == "geoEvent":
        return [("geo", msg["event"]["position"]["lat"])]
    if t == "notification":
        return [("notif", msg["notification"]["id"])]
    if t == "systemAlert":
        return [("alert", msg["message"])]
    return [("pos", vid, p["lat"]) for _, vid, p in live_positions(msg)]


def kafka_key(topic: str, value: dict[str, Any]) -> bytes:
    """Vehicle events are keyed by vehicleId (ARCHITECTURE §6), notifications by user, alerts
    by one fixed key: events of one key share a partition, so they are read in order."""
    key = value.get("vehicleId") or value.get("userId")
    return key.encode() if isinstance(key, str) else b"system-alerts"


@dataclass
class Source:
    """One input path: a Kafka topic via the fleet's producer, or a Redis `events:{type}`."""

    name: str
    fleet: FleetDriver
    redis: aioredis.Redis

    async def send(self, topic: str, value: dict[str, Any], *, channel: str | None = None) -> None:
        raw = orjson.dumps(value)
        if self.name == "kafka":
            await self.fleet.send_raw(topic, kafka_key(topic, value), raw)
        else:
            receivers = await self.redis.publish(f"events:{channel or topic}", raw)
            assert receivers >= 1, "nothing subscribed to events:* (is the worker on this Redis?)"


async def wait_marker(client: WsClient, marker: Marker, timeout: float = 10.0) -> Msg:
    """The frame that carried `marker`, already received or the next to arrive."""
    for m in client.received:
        if marker in markers(m):
            return m
    return await client.wait_for(lambda m: marker in markers(m), timeout, f"event {marker}")


def received_markers(client: WsClient) -> list[Marker]:
    return [mk for m in client.received for mk in markers(m)]


# ------------------------------------------------------------------------------ the world


@dataclass
class World:
    """Company `a` (the subscriber's) with 4 vehicles in groups g0 = {v0, v2}, g1 = {v1, v3};
    company `b` with 2 vehicles in one group. Watchers `wa` / `wb` (other users of a / b)
    subscribe to every type with `all`: they see every event the subscriber must not."""

    worker: Worker
    fleet: FleetDriver
    src: Source
    a: Company
    b: Company
    wa: WsClient
    wb: WsClient
    wa_user: str
    wb_user: str
    zone_a1: str = field(default_factory=new_id)
    zone_a2: str = field(default_factory=new_id)
    zone_b: str = field(default_factory=new_id)
    clients: list[WsClient] = field(default_factory=list)

    @property
    def v(self) -> list[str]:
        return self.a.vehicles

    @property
    def g(self) -> list[str]:
        return list(self.a.groups)

    async def connect(self, user_id: str | None = None, company: Company | None = None) -> WsClient:
        company = company or self.a
        client = await WsClient.connect(self.worker.ws_url, company.token(user_id))
        self.clients.append(client)
        return client

    async def send(self, topic: str, value: dict[str, Any]) -> Marker:
        await self.src.send(topic, value)
        return marker_of(topic, value)

    async def fix(self, vehicle_id: str) -> Marker:
        """A gps-events fix (always Kafka: positions have no Redis input)."""
        lat = unique_lat()
        await self.fleet.send_fix(vehicle_id, lat=lat)
        return ("pos", vehicle_id, lat)


ALL_TYPES = ("vehicles", "geoEvents", "notifications", "maintenance", "systemAlerts")


async def subscribe_everything(client: WsClient) -> None:
    for stype in ALL_TYPES:
        reply = await client.subscribe(stype, {"type": "all"})
        assert reply["type"] == "subscribed", reply


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=SOURCES)
def source(
    request: pytest.FixtureRequest, fleet: FleetDriver, redis_client: aioredis.Redis
) -> Source:
    return Source(request.param, fleet, redis_client)


@pytest.fixture
async def world(worker: Worker, fleet: FleetDriver, source: Source) -> AsyncIterator[World]:
    a = await registered_company(fleet, worker, 4, groups=2)
    b = await registered_company(fleet, worker, 2, groups=1)
    wa_user, wb_user = new_id(), new_id()
    wa = await WsClient.connect(worker.ws_url, a.token(wa_user))
    wb = await WsClient.connect(worker.ws_url, b.token(wb_user))
    w = World(worker, fleet, source, a, b, wa, wb, wa_user, wb_user)
    w.clients += [wa, wb]
    try:
        await subscribe_everything(wa)
        await subscribe_everything(wb)
        yield w
    finally:
        await gather_close(*w.clients)


class Check:
    """Records what one subscriber must and must not receive, in production order."""

    def __init__(self, subscriber: WsClient, user: str) -> None:
        self.subscriber = subscriber
        self.user = user  # the subscriber's userId
        self.expected: list[Marker] = []
        self.forbidden: list[Marker] = []
        self.frames: list[Msg] = []
        self._last_was_yes = False

    async def yes(self, sent: Awaitable[Marker], *also: WsClient) -> Msg:
        """`sent` must reach the subscriber (and every client in `also`)."""
        marker = await sent
        frame = await wait_marker(self.subscriber, marker)
        for other in also:
            await wait_marker(other, marker)
        self.expected.append(marker)
        self.frames.append(frame)
        self._last_was_yes = True
        return frame

    async def no(self, sent: Awaitable[Marker], observer: WsClient) -> Msg:
        """`sent` must not reach the subscriber; `observer` legitimately receives it."""
        marker = await sent
        frame = await wait_marker(observer, marker)
        self.forbidden.append(marker)
        self._last_was_yes = False
        return frame

    def verify(self, kinds: tuple[str, ...] = ("geo", "notif", "alert", "pos")) -> None:
        """Exactly the expected events, each once, in order; none of the forbidden ones."""
        assert self._last_was_yes, "a row must end with an event the subscriber receives"
        got = [mk for mk in received_markers(self.subscriber) if mk[0] in kinds]
        leaked = [mk for mk in got if mk in self.forbidden]
        assert not leaked, f"received events it must not: {leaked}"
        assert got == self.expected
        ids = [f["eventId"] for f in self.frames]
        assert all(i > 0 for i in ids) and ids == sorted(set(ids)), ids


# ------------------------------------------------------------------------------ frame shapes


def check_geo_frame(frame: Msg, sent: dict[str, Any]) -> None:
    assert set(frame) == {"type", "eventId", "timestamp", "event"}, frame
    assert frame["type"] == "geoEvent" and frame["eventId"] > 0
    event = frame["event"]
    assert set(event) == GEO_EVENT_KEYS, event
    pos = sent["position"]
    assert event == {
        "vehicleId": sent["vehicleId"],
        "vehicleName": sent["vehicleName"],
        "geozoneId": sent["geozoneId"],
        "geozoneName": sent["geozoneName"],
        "eventType": sent["eventType"],
        "position": {
            "lat": pos["lat"],
            "lon": pos["lon"],
            "speed": pos["speed"],
            "course": pos["course"],
            "altitude": pos["altitude"],
            "satellites": pos["satellites"],
            "timestamp": iso(pos["timestamp"]),
        },
        "timestamp": iso(sent["timestamp"]),
    }


def check_notification_frame(frame: Msg, expected: dict[str, Any]) -> None:
    assert set(frame) == {"type", "eventId", "timestamp", "notification"}, frame
    assert frame["type"] == "notification" and frame["eventId"] > 0
    assert set(frame["notification"]) == NOTIFICATION_KEYS, frame
    assert frame["notification"] == expected
    assert all(isinstance(v, str) for v in expected["data"].values())  # Map[String, String]


def expected_maintenance(sent: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": sent["id"],
        "title": sent["title"],
        "body": sent["body"],
        "category": "maintenance",
        "priority": sent["priority"],
        "data": {**sent["data"], "vehicleId": sent["vehicleId"], "type": sent["type"]},
    }


def check_alert_frame(frame: Msg, sent: dict[str, Any]) -> None:
    assert set(frame) == {"type", "eventId", "timestamp", "level", "message"}, frame
    assert frame["type"] == "systemAlert" and frame["eventId"] > 0
    assert (frame["level"], frame["message"]) == (sent["level"], sent["message"])


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


async def subscribed(client: WsClient, stype: str, flt: dict[str, Any], count: int) -> None:
    reply = await client.subscribe(stype, flt)
    assert reply == {**reply, "type": "subscribed", "subscriptionType": stype}, reply
    assert reply["count"] == count, reply


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


# ------------------------------------------------------------------------------ Redis aliases

CHANNELS = [
    ("geo-events", GEO),
    ("geo", GEO),
    ("geoEvents", GEO),
    ("notifications", NOTIF),
    ("notification", NOTIF),
    ("maintenance-events", MAINT),
    ("maintenance", MAINT),
    ("system-alerts", ALERT),
    ("systemAlerts", ALERT),
    ("alerts", ALERT),
]


@pytest.mark.parametrize(("channel", "topic"), CHANNELS, ids=[c for c, _ in CHANNELS])
async def test_redis_channel_names(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, channel: str, topic: str
) -> None:
    """`events:{type}` with the topic name or the subscription-type spelling."""
    company = await registered_company(fleet, worker, 1)
    user = new_id()
    client = await WsClient.connect(worker.ws_url, company.token(user))
    try:
        for stype in ALL_TYPES:
            assert (await client.subscribe(stype, {"type": "all"}))["type"] == "subscribed"
        vid = company.vehicles[0]
        value = {
            GEO: lambda: geo_event(company, vid, new_id()),
            NOTIF: lambda: notification(user),
            MAINT: lambda: maintenance(company, vid),
            ALERT: lambda: alert("info", [company]),
        }[topic]()
        await Source("redis", fleet, redis_client).send(topic, value, channel=channel)
        await wait_marker(client, marker_of(topic, value))
    finally:
        await client.close()


# ------------------------------------------------------------------------------ invalid pairs

INVALID_PAIRS = [
    ("notifications", "byIds"),
    ("notifications", "byGroup"),
    ("notifications", "byGeozone"),
    ("systemAlerts", "byIds"),
    ("systemAlerts", "byGroup"),
    ("systemAlerts", "byGeozone"),
    ("maintenance", "byGeozone"),
]


def filter_of(kind: str, target: str | None = None) -> dict[str, Any]:
    target = target or new_id()
    if kind == "all":
        return {"type": "all"}
    if kind == "byIds":
        return {"type": "byIds", "ids": [target]}
    if kind == "byGroup":
        return {"type": "byGroup", "groupId": target}
    return {"type": "byGeozone", "geozoneId": target}


@pytest.mark.parametrize(
    ("stype", "kind"), INVALID_PAIRS, ids=[f"{t}-{k}" for t, k in INVALID_PAIRS]
)
async def test_filter_that_does_not_apply_to_the_type_is_invalid_message(
    worker: Worker, fleet: FleetDriver, stype: str, kind: str
) -> None:
    company = await registered_company(fleet, worker, 1, groups=1)
    target = {
        "byIds": company.vehicles[0],
        "byGroup": next(iter(company.groups)),
        "byGeozone": new_id(),
    }[kind]
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
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
    finally:
        await client.close()


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
    client = await WsClient.connect(w.worker.ws_url, w.a.token(user, group_ids=[w.g[0]]))
    w.clients.append(client)
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


# ------------------------------------------------------------------------------ dedupe


def _dedupe_event(topic: str, company: Company, user: str) -> dict[str, Any]:
    vid = company.vehicles[0]
    if topic == GEO:
        return geo_event(company, vid, new_id())
    if topic == NOTIF:
        return notification(user)
    if topic == MAINT:
        return maintenance(company, vid)
    return {**alert("warning", [company]), "id": new_id()}


@pytest.mark.parametrize("first", ["kafka-first", "redis-first"])
@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_same_event_on_kafka_and_redis_is_delivered_once(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topic: str, first: str
) -> None:
    """The same event (same notification.id; same id for maintenance and alerts; same vehicle,
    zone, type and timestamp for geo events) from both inputs gets one eventId."""
    kafka, redis = Source("kafka", fleet, redis_client), Source("redis", fleet, redis_client)
    one, two = (kafka, redis) if first == "kafka-first" else (redis, kafka)
    company = await registered_company(fleet, worker, 1)
    user = new_id()
    client = await WsClient.connect(worker.ws_url, company.token(user))
    try:
        await subscribe_everything(client)
        event = _dedupe_event(topic, company, user)
        marker = marker_of(topic, event)
        await one.send(topic, event)
        await wait_marker(client, marker)
        await two.send(topic, event)
        # A later event on the second copy's path (same Redis channel / same Kafka key, hence
        # partition): processed after the copy, so it has a larger eventId than the copy would.
        sentinel = _dedupe_event(topic, company, user)
        await two.send(topic, sentinel)
        await wait_marker(client, marker_of(topic, sentinel))
        got = [mk for mk in received_markers(client) if mk[0] != "pos"]
        assert got == [marker, marker_of(topic, sentinel)], got
    finally:
        await client.close()


# ------------------------------------------------------------------------------ malformed input


def _bad_events(topic: str, w: World) -> list[tuple[str, bytes | None, bytes, str, str]]:
    """(name, key, value, reason substring, marker) — one of each kind of malformed record."""
    out: list[tuple[str, bytes | None, bytes, str, str]] = []
    v0 = w.v[0]

    def add(name: str, value: Any, reason: str, key: bytes | None = None) -> None:
        marker = f"dlq-marker-{uuid.uuid4().hex}"
        if isinstance(value, dict):
            raw = orjson.dumps({**value, "marker": marker})
        else:
            raw = bytes(value) + marker.encode()
        out.append((name, key, raw, reason, marker))

    add("not-json", b"{not json ", "not JSON")
    add("oversize", {"pad": "p" * (70 * 1024)}, "exceeds")
    if topic == GEO:
        good = geo_event(w.a, v0, w.zone_a1)
        add("missing-vehicleId", {k: v for k, v in good.items() if k != "vehicleId"}, "vehicleId")
        add("eventType-inside", {**good, "eventType": "inside"}, "eventType")
        add("no-companyId", {k: v for k, v in good.items() if k != "companyId"}, "companyId")
        add("position-lat-200", {**good, "position": {"lat": 200, "lon": 1}}, "position.lat")
        add("key-mismatch", good, "does not match", key=new_id().encode())
    elif topic == NOTIF:
        good = notification(w.wa_user)
        add("missing-userId", {"notification": good["notification"]}, "userId")
        add(
            "id-not-uuid",
            {**good, "notification": {**good["notification"], "id": "n-1"}},
            "notification.id",
        )
        add(
            "no-title",
            {**good, "notification": {**good["notification"], "title": ""}},
            "notification.title",
        )
        add("notification-string", {**good, "notification": "hello"}, "notification")
    elif topic == MAINT:
        good = maintenance(w.a, v0)
        add("missing-companyId", {k: v for k, v in good.items() if k != "companyId"}, "companyId")
        add("vehicleId-not-uuid", {**good, "vehicleId": "truck-1"}, "vehicleId")
        add("data-not-object", {**good, "data": "oil"}, "data")
    else:
        add("level-panic", alert("panic"), "level")
        add("no-message", {"level": "info"}, "message")
        add("targets-empty", {**alert("info"), "targetCompanyIds": []}, "targetCompanyIds")
        add("targets-not-uuid", {**alert("info"), "targetCompanyIds": ["acme"]}, "targetCompanyIds")
    return out


def _good_event(topic: str, w: World) -> dict[str, Any]:
    if topic == GEO:
        return geo_event(w.a, w.v[0], w.zone_a1)
    if topic == NOTIF:
        return notification(w.wa_user)
    if topic == MAINT:
        return maintenance(w.a, w.v[0])
    return alert("info", [w.a])


@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_malformed_kafka_events_are_dead_lettered_and_good_ones_flow(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topics: str, topic: str
) -> None:
    a = await registered_company(fleet, worker, 1)
    user = new_id()
    watcher = await WsClient.connect(worker.ws_url, a.token(user))
    w = World(worker, fleet, Source("kafka", fleet, redis_client), a, a, watcher, watcher, user, "")
    try:
        await subscribe_everything(watcher)
        bad = _bad_events(topic, w)
        invalid_before = await asyncio.to_thread(stream_count, worker, topic, "invalid")
        expected = [await w.send(topic, _good_event(topic, w))]
        await wait_marker(watcher, expected[-1])
        good_key = kafka_key(topic, _good_event(topic, w))
        for _, key, raw, _, _ in bad:
            # The good events' key (same partition) unless the record is about its key.
            await fleet.send_raw(topic, key or good_key, raw)
            good = _good_event(topic, w)
            await fleet.send_raw(topic, good_key, orjson.dumps(good))
            expected.append(marker_of(topic, good))
            await wait_marker(watcher, expected[-1])
        got = [mk for mk in received_markers(watcher) if mk[0] != "pos"]
        assert got == expected
        # A record keyed otherwise (key-mismatch) sits on another partition: wait for its count.
        want = invalid_before + len(bad)
        await asyncio.to_thread(
            devstack.wait_for,
            lambda: stream_count(worker, topic, "invalid") >= want,
            10,
            what=f"{len(bad)} invalid {topic} events counted",
        )
        invalid_after = await asyncio.to_thread(stream_count, worker, topic, "invalid")
        assert invalid_after == want, (invalid_before, invalid_after)
    finally:
        await watcher.close()
    letters = await read_dead_letters(topics, f"{topic}-dlq", {b[4] for b in bad}, timeout=20)
    missing = [name for name, _, _, _, marker in bad if marker not in letters]
    assert not missing, f"not dead-lettered on {topic}-dlq: {missing}"
    for name, _, _, reason, marker in bad:
        letter = letters[marker]
        assert letter["topic"] == topic, (name, letter)
        assert reason in letter["error"], (name, reason, letter["error"])


@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_malformed_redis_events_are_skipped_and_counted(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topic: str
) -> None:
    a = await registered_company(fleet, worker, 1)
    user = new_id()
    watcher = await WsClient.connect(worker.ws_url, a.token(user))
    redis = Source("redis", fleet, redis_client)
    w = World(worker, fleet, redis, a, a, watcher, watcher, user, "")
    label = f"redis:events:{topic}"
    try:
        await subscribe_everything(watcher)
        bad = _bad_events(topic, w)
        before = {
            o: await asyncio.to_thread(stream_count, worker, label, o) for o in ("ok", "invalid")
        }
        unknown_before = await asyncio.to_thread(
            stream_count, worker, "redis:events:no-such-type", "unknown_type"
        )
        expected = []
        bad = [b for b in bad if b[1] is None]  # a Redis message has no key
        for _, _, raw, _, _ in bad:
            assert await redis_client.publish(f"events:{topic}", raw) >= 1
            assert await redis_client.publish("events:no-such-type", raw) >= 1
            good = _good_event(topic, w)
            await redis.send(topic, good)
            expected.append(marker_of(topic, good))
            await wait_marker(watcher, expected[-1])
        got = [mk for mk in received_markers(watcher) if mk[0] != "pos"]
        assert got == expected
        # Redis delivers a channel's messages in order: the bad ones were counted before the
        # last good one was delivered.
        after = {
            o: await asyncio.to_thread(stream_count, worker, label, o) for o in ("ok", "invalid")
        }
        assert after["invalid"] == before["invalid"] + len(bad), (before, after)
        assert after["ok"] == before["ok"] + len(bad), (before, after)
        unknown_after = await asyncio.to_thread(
            stream_count, worker, "redis:events:no-such-type", "unknown_type"
        )
        assert unknown_after == unknown_before + len(bad)
    finally:
        await watcher.close()
