"""Registers vehicles and produces GPS fixes on the real broker for tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tracker_ws.auth import mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws_dev.stack import Worker, wait_for


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Company:
    company_id: str = field(default_factory=new_id)
    vehicles: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)  # groupId -> vehicleIds

    def token(self, user_id: str | None = None, **kw: Any) -> str:
        return mint_token(user_id or new_id(), self.company_id, secret=DEV_JWT_SECRET, **kw)


def fix(
    vehicle_id: str,
    *,
    lat: float = 55.75,
    lon: float = 37.62,
    speed: float = 40.0,
    ts_ms: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "vehicleId": vehicle_id,
        "latitude": lat,
        "longitude": lon,
        "speed": speed,
        "course": 90,
        "altitude": 150,
        "satellites": 12,
        "timestamp": ts_ms if ts_ms is not None else int(time.time() * 1000),
        **extra,
    }


class FleetDriver:
    """Thin wrapper over a real aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def register(
        self,
        vehicle_id: str,
        company_id: str,
        *,
        name: str = "",
        group_ids: list[str] | None = None,
    ) -> None:
        value = {
            "vehicleId": vehicle_id,
            "companyId": company_id,
            "name": name or f"V-{vehicle_id[:6]}",
            "groupIds": group_ids or [],
        }
        await self.producer.send_and_wait(
            "vehicle-registry", key=vehicle_id.encode(), value=orjson.dumps(value)
        )

    async def company(self, n_vehicles: int, *, groups: int = 0) -> Company:
        c = Company()
        group_ids = [new_id() for _ in range(groups)]
        for i in range(n_vehicles):
            vid = new_id()
            gids = [group_ids[i % groups]] if groups else []
            for g in gids:
                c.groups.setdefault(g, []).append(vid)
            await self.register(vid, c.company_id, group_ids=gids)
            c.vehicles.append(vid)
        return c

    async def send_fix(self, vehicle_id: str, **kw: Any) -> None:
        await self.producer.send_and_wait(
            "gps-events", key=vehicle_id.encode(), value=orjson.dumps(fix(vehicle_id, **kw))
        )

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await self.producer.send_and_wait(topic, key=key, value=value)


def wait_registry(worker: Worker, at_least: int, timeout: float = 15.0) -> None:
    """The worker's in-memory registry has caught up with what was produced."""
    wait_for(
        lambda: worker.health().get("registryVehicles", 0) >= at_least,
        timeout,
        what=f"worker registry to reach {at_least} vehicles",
    )


# --------------------------------------------------------------------------------------------
# Replayable events (geo events, notifications, maintenance events, system alerts), produced
# on their Kafka topics or on the Redis channels `events:{topic}` and remembered, so tests can
# compute what each subscriber is entitled to.

EVENT_TOPICS = {
    "notif": "notifications",
    "geo": "geo-events",
    "maint": "maintenance-events",
    "alert": "system-alerts",
}


@dataclass(frozen=True)
class Replayable:
    kind: str  # notif | geo | maint | alert
    marker: str  # notification id, geozone id (geo) or alert message: names it on arrival
    source: str  # kafka | redis
    company: str = ""  # geo, maint: the vehicle's company
    vehicle: str = ""  # geo, maint
    user: str = ""  # notif: the addressee
    companies: tuple[str, ...] | None = None  # alert: target companies; None = everyone
    at: float = 0.0  # monotonic time it was handed to the broker / Redis


def marker_of(msg: dict[str, Any]) -> str | None:
    """The marker of a replayable event frame (None for anything else)."""
    kind = msg.get("type")
    if kind == "notification":
        return str(msg["notification"]["id"])
    if kind == "geoEvent":
        return str(msg["event"]["geozoneId"])
    if kind == "systemAlert" and msg.get("eventId"):
        return str(msg["message"])
    return None


def entitled(
    event: Replayable, user: str, company: str, subscriptions: list[tuple[str, dict[str, Any]]]
) -> bool:
    """Whether a subscriber (user, company, subscribe messages) must receive `event`."""
    for stype, flt in subscriptions:
        covers = flt.get("type") == "all" or event.vehicle in flt.get("ids", ())
        same_company = event.company == company
        if (
            (event.kind == "notif" and stype == "notifications" and event.user == user)
            or (event.kind == "geo" and stype == "geoEvents" and same_company and covers)
            or (event.kind == "maint" and stype == "maintenance" and same_company and covers)
            or (
                event.kind == "alert"
                and stype == "systemAlerts"
                and (event.companies is None or company in event.companies)
            )
        ):
            return True
    return False


class EventSource:
    """Publishes replayable events through Kafka (`producer`) or Redis (`redis`, a
    redis.asyncio client) and remembers each one in `published`."""

    def __init__(self, producer: AIOKafkaProducer, redis: Any) -> None:
        self.producer = producer
        self.redis = redis
        self.published: list[Replayable] = []
        self._ts = 0

    def _stamp(self) -> int:
        self._ts = max(int(time.time() * 1000), self._ts + 1)
        return self._ts

    async def _send(
        self,
        event: Replayable,
        key: str | None,
        value: dict[str, Any],
        partition: int | None = None,
    ) -> Replayable:
        topic = EVENT_TOPICS[event.kind]
        raw = orjson.dumps(value)
        if event.source == "kafka":
            await self.producer.send_and_wait(
                topic, key=key.encode() if key else None, value=raw, partition=partition
            )
        else:
            await self.redis.publish(f"events:{topic}", raw)
        event = Replayable(**{**event.__dict__, "at": time.monotonic()})
        self.published.append(event)
        return event

    async def notification(
        self, user: str, *, source: str, pad: int = 0, partition: int | None = None
    ) -> Replayable:
        """`pad` > 0 makes it about that many bytes (a big one, to fill a slow socket);
        `partition` picks the Kafka partition (default: by key, the userId)."""
        marker = new_id()
        data = {f"k{i}": "x" * 4000 for i in range(pad // 4000)}
        value = {
            "userId": user,
            "notification": {
                "id": marker,
                "title": "Speeding",
                "body": "Truck exceeded the limit: 95 km/h",
                "category": "speed",
                "priority": "high",
                "data": data,
            },
        }
        event = Replayable("notif", marker, source, user=user)
        return await self._send(event, user, value, partition)

    async def geo(self, company: str, vehicle: str, *, source: str) -> Replayable:
        marker = new_id()  # a geozone of its own: names the event
        ts = self._stamp()
        value = {
            "vehicleId": vehicle,
            "vehicleName": f"Truck {vehicle[:4]}",
            "companyId": company,
            "geozoneId": marker,
            "geozoneName": "Depot",
            "eventType": "exited",
            "position": {"lat": 55.7, "lon": 37.6, "speed": 10, "course": 90, "timestamp": ts},
            "timestamp": ts,
        }
        event = Replayable("geo", marker, source, company=company, vehicle=vehicle)
        return await self._send(event, vehicle, value)

    async def maintenance(self, company: str, vehicle: str, *, source: str) -> Replayable:
        marker = new_id()
        value = {
            "companyId": company,
            "vehicleId": vehicle,
            "id": marker,
            "title": "Oil change due",
            "type": "oil-change",
        }
        event = Replayable("maint", marker, source, company=company, vehicle=vehicle)
        return await self._send(event, vehicle, value)

    async def alert(self, companies: list[str] | None, *, source: str) -> Replayable:
        marker = f"alert {new_id()}"
        value = {"level": "warning", "message": marker, "targetCompanyIds": companies, "id": marker}
        targets = tuple(sorted(companies)) if companies else None
        return await self._send(Replayable("alert", marker, source, companies=targets), None, value)


async def where_published(redis: Any, events: list[Replayable]) -> list[str]:
    """For failure messages: each event's fate as the history streams tell it — published
    with an eventId (so lost on the way to a client) or never published (lost at ingest)."""
    found: dict[str, int] = {}
    async for key in redis.scan_iter(match="ws:history:*", count=1000):
        if key.endswith(b":floor"):
            continue
        for entry_id, fields in await redis.xrange(key):
            payload = fields.get(b"e", b"").decode(errors="replace")
            for e in events:
                if e.marker in payload:
                    found[e.marker] = int(entry_id.split(b"-")[0])
    return [
        f"{e.kind}/{e.source} {e.marker[:8]}: "
        + (f"published as eventId {found[e.marker]}" if e.marker in found else "never published")
        for e in events
    ]


async def publish_some(
    events: EventSource, company: Company, user: str, vid: str, n: int, sources: tuple[str, ...]
) -> list[Replayable]:
    """`n` replayable events, notifications for `user` and geo events of `vid` in turn, their
    sources taking turns from `sources` ("kafka", "redis")."""
    out = []
    for i in range(n):
        source = sources[i % len(sources)]
        if i % 2:
            out.append(await events.geo(company.company_id, vid, source=source))
        else:
            out.append(await events.notification(user, source=source))
    return out
