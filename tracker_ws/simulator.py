"""A fleet simulator: registers vehicles and produces GPS fixes (dev mode, demos, tests).

Ids are derived from names (uuid5), so a dev token minted for "company 0" always matches.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tracker_ws.tables.definitions import GPS_EVENTS, VEHICLE_REGISTRY

NAMESPACE = uuid.UUID("6f1c1b8e-3f5a-4d7e-9a51-2b7f1f3c9d10")
_PLATE = "АВЕКМНОРСТУХ"


def sim_id(kind: str, n: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}-{n}"))


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

    @classmethod
    def build(
        cls, n_vehicles: int, n_companies: int = 2, groups_per_company: int = 2, seed: int = 1
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
        return fleet

    def company_ids(self) -> list[str]:
        return sorted({v.company_id for v in self.vehicles})


async def register(producer: AIOKafkaProducer, fleet: Fleet) -> None:
    for v in fleet.vehicles:
        await producer.send(
            VEHICLE_REGISTRY, key=v.vehicle_id.encode(), value=orjson.dumps(v.registry_record())
        )
    await producer.flush()


async def run_simulator(
    broker: str, fleet: Fleet, *, rate: float, duration: float = 0.0, report_every: float = 10.0
) -> int:
    """Register the fleet, then produce `rate` fixes/s round-robin; returns fixes produced."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.removeprefix("kafka://"), linger_ms=2)
    await producer.start()
    sent = 0
    try:
        await register(producer, fleet)
        print(
            f"simulator: registered {len(fleet.vehicles)} vehicles in "
            f"{len(fleet.company_ids())} companies; {rate:g} fixes/s",
            file=sys.stderr,
        )
        start = time.monotonic()
        next_report = start + report_every
        i = 0
        n = len(fleet.vehicles)
        while not duration or time.monotonic() - start < duration:
            due = int((time.monotonic() - start) * rate) - sent
            for _ in range(max(0, due)):
                v = fleet.vehicles[i % n]
                i += 1
                await producer.send(
                    GPS_EVENTS, key=v.vehicle_id.encode(), value=orjson.dumps(v.fix(time.time()))
                )
                sent += 1
            if time.monotonic() >= next_report:
                print(f"simulator: {sent} fixes sent", file=sys.stderr)
                next_report += report_every
            # Pacing of a load generator: the next fix is due in 1/rate s.
            await asyncio.sleep(min(0.05, 1 / rate))
    finally:
        await producer.stop()
    return sent
