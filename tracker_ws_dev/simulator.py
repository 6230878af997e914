"""A fleet simulator: registers vehicles and produces GPS fixes (dev mode, demos, tests).

Besides positions it produces every other input of ARCHITECTURE §6, so `make run` shows every
message type: geofence crossings (entered/exited, detected from the simulated positions
against a few circular and rectangular zones per company) on `geo-events`, speeding
notifications for the dev user on `notifications`, a maintenance reminder every ~30 s on
`maintenance-events` and an occasional info alert on `system-alerts`. Rates are modest; ids,
zones and who speeds are deterministic by seed.

Ids are derived from names (uuid5), so a dev token minted for "company 0" always matches.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tracker_ws.tables.definitions import GPS_EVENTS, VEHICLE_REGISTRY

NAMESPACE = uuid.UUID("6f1c1b8e-3f5a-4d7e-9a51-2b7f1f3c9d10")
_PLATE = "АВЕКМНОРСТУХ"

GEO_EVENTS = "geo-events"
NOTIFICATIONS = "notifications"
MAINTENANCE_EVENTS = "maintenance-events"
SYSTEM_ALERTS = "system-alerts"

ZONE_NAMES = ("Depot", "Client site", "Warehouse", "Service station", "Fuel station", "Parking")
# (type, title, body template) of the maintenance reminders, taken in turn.
MAINTENANCE_KINDS = (
    ("oil_change", "Oil change due", "{name}: oil change due in {km} km"),
    ("tire_rotation", "Tire rotation due", "{name}: tire rotation due in {km} km"),
    ("brake_inspection", "Brake inspection due", "{name}: brake inspection due in {km} km"),
)
_M_PER_DEG_LAT = 111_320.0
# A zone's radius (half-height for rectangles) as a share of its host vehicle's loop radius.
ZONE_SIZE = 0.8

# (topic, key, value) of one input event to produce.
Produced = tuple[str, str, dict[str, Any]]


def sim_id(kind: str, n: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}-{n}"))


def dev_user_id() -> str:
    """The user of the dev token (`python -m tracker_ws dev`): speeding notifications go here."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "tracker-ws-dev-user"))


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular distance between (lat, lon) points: exact enough within a city."""
    mean_lat = math.radians((a[0] + b[0]) / 2)
    dy = (a[0] - b[0]) * _M_PER_DEG_LAT
    dx = (a[1] - b[1]) * _M_PER_DEG_LAT * math.cos(mean_lat)
    return math.hypot(dx, dy)


@dataclass(frozen=True)
class Geozone:
    """A circle (`radius_m` > 0) or a rectangle (`half_span_deg` = half its lat and lon span)
    around `center` (lat, lon)."""

    geozone_id: str
    company_id: str
    name: str
    center: tuple[float, float]
    radius_m: float = 0.0
    half_span_deg: tuple[float, float] | None = None

    def contains(self, lat: float, lon: float) -> bool:
        if self.half_span_deg is not None:
            half_lat, half_lon = self.half_span_deg
            return abs(lat - self.center[0]) <= half_lat and abs(lon - self.center[1]) <= half_lon
        return distance_m(self.center, (lat, lon)) <= self.radius_m

    @property
    def shape(self) -> str:
        return "rectangle" if self.half_span_deg is not None else "circle"


def crossings(
    inside: frozenset[str], zones: Iterable[Geozone], lat: float, lon: float
) -> tuple[frozenset[str], list[Geozone], list[Geozone]]:
    """Geofence crossings of one position: (ids of the zones it is inside now, zones entered,
    zones exited), both lists in geozone id order. `inside` is what the previous position
    was inside (empty for a vehicle not seen yet: one first seen inside a zone enters it)."""
    zones = list(zones)
    now = frozenset(z.geozone_id for z in zones if z.contains(lat, lon))
    entered = sorted((z for z in zones if z.geozone_id in now - inside), key=_zone_id)
    exited = sorted((z for z in zones if z.geozone_id in inside - now), key=_zone_id)
    return now, entered, exited


def _zone_id(zone: Geozone) -> str:
    return zone.geozone_id


@dataclass
class SimVehicle:
    vehicle_id: str
    company_id: str
    name: str
    group_ids: list[str]
    center: tuple[float, float]
    radius_deg: float
    phase: float
    angular_speed: float  # radians per second

    def registry_record(self) -> dict[str, Any]:
        return {
            "vehicleId": self.vehicle_id,
            "companyId": self.company_id,
            "name": self.name,
            "groupIds": self.group_ids,
        }

    def fix(self, now: float) -> dict[str, Any]:
        # Every fourth minute the vehicle stands still: status flips moving/stopped.
        moving = int(now // 60 + self.phase) % 4 != 0
        angle = self.phase + (now * self.angular_speed if moving else 0.0)
        lat = self.center[0] + self.radius_deg * math.sin(angle)
        lon = self.center[1] + self.radius_deg * math.cos(angle) * 1.8
        speed = abs(self.angular_speed) * self.radius_deg * 111_000 * 3.6 if moving else 0.0
        return {
            "vehicleId": self.vehicle_id,
            "latitude": round(lat, 6),
            "longitude": round(lon, 6),
            "speed": round(speed, 1),
            "course": int(math.degrees(angle + math.pi / 2)) % 360,
            "altitude": 150,
            "satellites": 12,
            "timestamp": int(now * 1000),
            "sensors": {"fuel": 40.0 + (hash(self.vehicle_id) % 20), "ignition": moving},
        }


@dataclass
class Fleet:
    vehicles: list[SimVehicle] = field(default_factory=list)
    geozones: list[Geozone] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        n_vehicles: int,
        n_companies: int = 2,
        groups_per_company: int = 2,
        seed: int = 1,
        geozones_per_company: int = 4,
    ) -> Fleet:
        rng = random.Random(seed)
        fleet = cls()
        for i in range(n_vehicles):
            c = i % max(1, n_companies)
            g = (i // max(1, n_companies)) % max(1, groups_per_company)
            plate = (
                f"{_PLATE[i % 12]}{100 + i % 900}{_PLATE[(i // 12) % 12]}{_PLATE[(i // 144) % 12]}"
            )
            fleet.vehicles.append(
                SimVehicle(
                    vehicle_id=sim_id("vehicle", i),
                    company_id=sim_id("company", c),
                    name=plate,
                    group_ids=[sim_id(f"group-{c}", g)],
                    center=(55.75 + rng.uniform(-0.1, 0.1), 37.62 + rng.uniform(-0.2, 0.2)),
                    radius_deg=rng.uniform(0.005, 0.03),
                    phase=rng.uniform(0, 2 * math.pi),
                    angular_speed=rng.uniform(0.002, 0.01) * rng.choice((-1, 1)),
                )
            )
        # Zones are drawn after the vehicles: the vehicles of a seed stay what they were.
        for c in range(max(1, n_companies)):
            fleet.geozones += _company_zones(fleet, c, geozones_per_company, rng)
        return fleet

    def company_ids(self) -> list[str]:
        return sorted({v.company_id for v in self.vehicles})

    def zones_of(self, company_id: str) -> list[Geozone]:
        return [z for z in self.geozones if z.company_id == company_id]


def _company_zones(fleet: Fleet, c: int, n: int, rng: random.Random) -> list[Geozone]:
    """`n` zones of company `c`, each astride the loop of one of its fastest vehicles (that one
    crosses it twice per lap, every 10-20 minutes, and others may too): circles and rectangles
    in turn, named Depot, Client site, …; ids `sim_id("geozone-{c}", k)`."""
    company_id = sim_id("company", c)
    hosts = sorted(
        (v for v in fleet.vehicles if v.company_id == company_id),
        key=lambda v: (-abs(v.angular_speed), v.vehicle_id),
    )
    zones = []
    for k, host in enumerate(hosts[:n]):
        angle = rng.uniform(0, 2 * math.pi)
        center = (
            round(host.center[0] + host.radius_deg * math.sin(angle), 6),
            round(host.center[1] + host.radius_deg * math.cos(angle) * 1.8, 6),
        )
        name = ZONE_NAMES[k % len(ZONE_NAMES)]
        if k >= len(ZONE_NAMES):
            name = f"{name} {k // len(ZONE_NAMES) + 1}"
        zone_id = sim_id(f"geozone-{c}", k)
        if k % 2 == 0:
            radius_m = round(ZONE_SIZE * host.radius_deg * _M_PER_DEG_LAT, 1)
            zones.append(Geozone(zone_id, company_id, name, center, radius_m=radius_m))
        else:
            half = 0.9 * ZONE_SIZE * host.radius_deg
            span = (round(half, 6), round(half * 1.8, 6))
            zones.append(Geozone(zone_id, company_id, name, center, half_span_deg=span))
    return zones


class FleetEvents:
    """The non-position inputs, derived from the simulated fixes and the clock (pure: no I/O).

    `on_fix` returns the geofence crossings of a fix (events of the vehicle's own company's
    zones) and, for vehicles of `notify_company`, a speeding notification to `notify_user` at
    most every `notify_every_s` while the vehicle is over `speed_limit_kmh`. `maintenance`
    and `alert` make the n-th maintenance reminder and info alert.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        speed_limit_kmh: float = 60.0,
        notify_user: str | None = None,
        notify_company: str | None = None,
        notify_every_s: float = 120.0,
        seed: int = 1,
    ) -> None:
        self.fleet = fleet
        self.speed_limit_kmh = speed_limit_kmh
        self.notify_user = notify_user
        self.notify_company = notify_company
        self.notify_every_ms = int(notify_every_s * 1000)
        self._inside: dict[str, frozenset[str]] = {}
        self._last_notified: dict[str, int] = {}
        self._zones = {c: fleet.zones_of(c) for c in fleet.company_ids()}
        order = list(fleet.vehicles)
        random.Random(seed).shuffle(order)
        self._maintenance_order = order

    def on_fix(self, vehicle: SimVehicle, fix: dict[str, Any]) -> list[Produced]:
        out = self.crossing_events(vehicle, fix)
        speeding = self.speeding(vehicle, fix)
        if speeding is not None:
            out.append(speeding)
        return out

    def crossing_events(self, vehicle: SimVehicle, fix: dict[str, Any]) -> list[Produced]:
        vid = vehicle.vehicle_id
        before = self._inside.get(vid, frozenset())
        now, entered, exited = crossings(
            before, self._zones.get(vehicle.company_id, []), fix["latitude"], fix["longitude"]
        )
        self._inside[vid] = now
        return [
            (GEO_EVENTS, vid, geo_event(vehicle, zone, kind, fix))
            for kind, zones in (("exited", exited), ("entered", entered))
            for zone in zones
        ]

    def speeding(self, vehicle: SimVehicle, fix: dict[str, Any]) -> Produced | None:
        if self.notify_user is None or vehicle.company_id != self.notify_company:
            return None
        if fix["speed"] <= self.speed_limit_kmh:
            return None
        ts = int(fix["timestamp"])
        last = self._last_notified.get(vehicle.vehicle_id)
        if last is not None and ts - last < self.notify_every_ms:
            return None
        self._last_notified[vehicle.vehicle_id] = ts
        speed = round(fix["speed"])
        limit = round(self.speed_limit_kmh)
        value = {
            "userId": self.notify_user,
            "notification": {
                "id": str(uuid.uuid5(NAMESPACE, f"speeding-{vehicle.vehicle_id}-{ts}")),
                "title": "Speeding",
                "body": f"{vehicle.name} exceeded {limit} km/h: {speed} km/h",
                "category": "speed",
                "priority": "high",
                "data": {"vehicleId": vehicle.vehicle_id, "speed": str(speed), "limit": str(limit)},
            },
        }
        return NOTIFICATIONS, self.notify_user, value

    def maintenance(self, n: int) -> Produced:
        """The n-th maintenance reminder (n = 0, 1, …): vehicles in a seeded order."""
        vehicle = self._maintenance_order[n % len(self._maintenance_order)]
        kind, title, body = MAINTENANCE_KINDS[n % len(MAINTENANCE_KINDS)]
        km = 100 * (1 + (n * 7) % 10)
        value = {
            "companyId": vehicle.company_id,
            "vehicleId": vehicle.vehicle_id,
            "id": str(uuid.uuid5(NAMESPACE, f"maintenance-{n}")),
            "type": kind,
            "title": title,
            "body": body.format(name=vehicle.name, km=km),
            "priority": "normal",
            "data": {"vehicleName": vehicle.name, "dueInKm": str(km)},
        }
        return MAINTENANCE_EVENTS, vehicle.vehicle_id, value

    def alert(self, n: int, now_ms: int) -> Produced:
        """The n-th info alert, for every company of the fleet."""
        value = {
            "id": str(uuid.uuid5(NAMESPACE, f"alert-{n}-{now_ms}")),
            "level": "info",
            "message": f"Simulator: {len(self.fleet.vehicles)} vehicles reporting",
            "targetCompanyIds": self.fleet.company_ids(),
        }
        return SYSTEM_ALERTS, "", value


def geo_event(vehicle: SimVehicle, zone: Geozone, kind: str, fix: dict[str, Any]) -> dict[str, Any]:
    """A geo-events record (ARCHITECTURE §6) for `fix` crossing `zone`."""
    return {
        "vehicleId": vehicle.vehicle_id,
        "vehicleName": vehicle.name,
        "companyId": vehicle.company_id,
        "geozoneId": zone.geozone_id,
        "geozoneName": zone.name,
        "eventType": kind,
        "position": {
            "lat": fix["latitude"],
            "lon": fix["longitude"],
            "speed": fix["speed"],
            "course": fix["course"],
            "altitude": fix.get("altitude"),
            "satellites": fix.get("satellites"),
            "timestamp": fix["timestamp"],
        },
        "timestamp": fix["timestamp"],
    }


async def register(producer: AIOKafkaProducer, fleet: Fleet) -> None:
    for v in fleet.vehicles:
        await producer.send(
            VEHICLE_REGISTRY, key=v.vehicle_id.encode(), value=orjson.dumps(v.registry_record())
        )
    await producer.flush()


async def _produce(producer: AIOKafkaProducer, item: Produced) -> None:
    topic, key, value = item
    await producer.send(topic, key=key.encode() or None, value=orjson.dumps(value))


async def run_simulator(
    broker: str,
    fleet: Fleet,
    *,
    rate: float,
    duration: float = 0.0,
    report_every: float = 10.0,
    events: bool = True,
    speed_limit_kmh: float = 60.0,
    notify_user: str | None = None,
    notify_company: str | None = None,
    notify_every_s: float = 120.0,
    maintenance_every_s: float = 30.0,
    alert_every_s: float = 300.0,
    seed: int = 1,
) -> int:
    """Register the fleet, then produce `rate` fixes/s round-robin; returns fixes produced.

    With `events` (the default) it also produces the geofence crossings of those fixes,
    speeding notifications for `notify_user` (default: the dev user) about vehicles of
    `notify_company` (default: company 0), a maintenance reminder every
    `maintenance_every_s` and an info alert every `alert_every_s` (≤ 0 turns either off).
    """
    producer = AIOKafkaProducer(bootstrap_servers=broker.removeprefix("kafka://"), linger_ms=2)
    await producer.start()
    sent = 0
    gen = (
        FleetEvents(
            fleet,
            speed_limit_kmh=speed_limit_kmh,
            notify_user=notify_user or dev_user_id(),
            notify_company=notify_company or sim_id("company", 0),
            notify_every_s=notify_every_s,
            seed=seed,
        )
        if events
        else None
    )
    produced: dict[str, int] = {}
    try:
        await register(producer, fleet)
        print(
            f"simulator: registered {len(fleet.vehicles)} vehicles in "
            f"{len(fleet.company_ids())} companies; {rate:g} fixes/s"
            + (f"; {len(fleet.geozones)} geozones" if gen else ""),
            file=sys.stderr,
        )
        start = time.monotonic()
        next_report = start + report_every
        # The first reminder and alert come soon after start, so a demo shows them.
        next_maintenance = start + maintenance_every_s / 3
        next_alert = start + min(60.0, alert_every_s)
        n_maintenance = n_alerts = 0
        i = 0
        n = len(fleet.vehicles)
        while not duration or time.monotonic() - start < duration:
            due = int((time.monotonic() - start) * rate) - sent
            for _ in range(max(0, due)):
                v = fleet.vehicles[i % n]
                i += 1
                fix = v.fix(time.time())
                await producer.send(GPS_EVENTS, key=v.vehicle_id.encode(), value=orjson.dumps(fix))
                sent += 1
                for item in gen.on_fix(v, fix) if gen else ():
                    await _produce(producer, item)
                    produced[item[0]] = produced.get(item[0], 0) + 1
            now = time.monotonic()
            if gen is not None and maintenance_every_s > 0 and now >= next_maintenance:
                await _produce(producer, gen.maintenance(n_maintenance))
                n_maintenance += 1
                produced[MAINTENANCE_EVENTS] = n_maintenance
                next_maintenance += maintenance_every_s
            if gen is not None and alert_every_s > 0 and now >= next_alert:
                await _produce(producer, gen.alert(n_alerts, int(time.time() * 1000)))
                n_alerts += 1
                produced[SYSTEM_ALERTS] = n_alerts
                next_alert += alert_every_s
            if now >= next_report:
                others = ", ".join(f"{produced[t]} {t}" for t in sorted(produced))
                print(
                    f"simulator: {sent} fixes sent" + (f"; {others}" if others else ""),
                    file=sys.stderr,
                )
                next_report += report_every
            # Pacing of a load generator: the next fix is due in 1/rate s.
            await asyncio.sleep(min(0.05, 1 / rate))
    finally:
        await producer.stop()
    return sent
