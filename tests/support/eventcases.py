"""Inputs, markers and frame checks for the geo event, notification, maintenance and alert
tests: the in-process table (tests/adapter/test_event_types.py) and the real-input paths
(tests/integration/test_event_types.py).

Negative checks are exact (tests/support/client.py, `wait_event_id_at_least`): eventIds are
global and every connection receives its events in increasing eventId order. Each event that
must NOT reach the subscriber is first seen by a watcher that legitimately receives it (so it
has been published and has its eventId); the next event is produced only after that. A check
ends with an event the subscriber must receive: it was published later, so it carries a larger
eventId, and once the subscriber has it, anything it was (wrongly) sent earlier has arrived too.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from tests.support.checks import live_positions
from tests.support.client import Msg, WsClient
from tests.support.fleet import Company, new_id

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


async def wait_marker(client: WsClient, marker: Marker, timeout: float = 10.0) -> Msg:
    """The frame that carried `marker`, already received or the next to arrive."""
    for m in client.received:
        if marker in markers(m):
            return m
    return await client.wait_for(lambda m: marker in markers(m), timeout, f"event {marker}")


def received_markers(client: WsClient) -> list[Marker]:
    return [mk for m in client.received for mk in markers(m)]


ALL_TYPES = ("vehicles", "geoEvents", "notifications", "maintenance", "systemAlerts")


async def subscribe_everything(client: WsClient) -> None:
    for stype in ALL_TYPES:
        reply = await client.subscribe(stype, {"type": "all"})
        assert reply["type"] == "subscribed", reply


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


async def subscribed(client: WsClient, stype: str, flt: dict[str, Any], count: int) -> None:
    reply = await client.subscribe(stype, flt)
    assert reply == {**reply, "type": "subscribed", "subscriptionType": stype}, reply
    assert reply["count"] == count, reply


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
