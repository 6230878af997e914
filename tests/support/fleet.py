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
from tracker_ws.devstack import Worker, wait_for


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
