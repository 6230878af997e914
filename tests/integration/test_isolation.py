"""No message of one company ever reaches another company's connection (ARCHITECTURE §5), with
the fixes of both interleaved through the broker. Every refused request of one connection:
tests/adapter/test_isolation.py.

Negative checks are exact (see tests/integration/test_subscriptions.py): the forbidden fixes
are produced first and their eventIds learned from their own company's clients; each checked
client must then have seen a later eventId of its own without ever seeing a forbidden one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support.checks import (
    at_lat,
    live_positions,
    max_event_id,
    reach_event_id,
    registered_company,
    ts_now_ms,
    wait_position,
)
from tests.support.client import WsClient, gather_close
from tests.support.fleet import Company, FleetDriver, fix
from tracker_ws_dev.stack import Worker


@dataclass
class Tenant:
    """A company, its clients (filter name -> (client, vehicles that filter covers)), and the
    latitudes produced per vehicle (positive for one company, negative for the other)."""

    company: Company
    clients: dict[str, tuple[WsClient, set[str]]] = field(default_factory=dict)
    lats: dict[str, set[float]] = field(default_factory=dict)

    def foreign_marks(self) -> list[str]:
        """Strings that must never appear in another company's traffic."""
        return [self.company.company_id, *self.company.vehicles, *self.company.groups]


async def _tenant(worker: Worker, fleet: FleetDriver) -> Tenant:
    company = await registered_company(fleet, worker, 4, groups=2)
    v = company.vehicles
    g0 = next(g for g, members in company.groups.items() if v[0] in members)
    tenant = Tenant(company, lats={vid: set() for vid in v})
    filters: dict[str, tuple[dict[str, Any], set[str]]] = {
        "all": ({"type": "all"}, set(v)),
        "byIds": ({"type": "byIds", "ids": [v[0], v[1]]}, {v[0], v[1]}),
        "byGroup": ({"type": "byGroup", "groupId": g0}, set(company.groups[g0])),
    }
    for name, (flt, covered) in filters.items():
        client = await WsClient.connect(worker.ws_url, company.token())
        tenant.clients[name] = (client, covered)
        sub = await client.subscribe("vehicles", flt)
        assert sub["type"] == "subscribed", sub
        assert sub["count"] == len(covered)
    return tenant


def _all_clients(*tenants: Tenant) -> list[WsClient]:
    return [c for t in tenants for c, _ in t.clients.values()]


def _check_clean(client: WsClient, own: Tenant, covered: set[str], other: Tenant) -> None:
    """Only covered vehicles of its own company, each with a payload produced for it."""
    assert client.vehicles_seen() <= covered
    for m in client.received:
        for _, vid, pos in live_positions(m):
            assert vid in own.lats, f"foreign vehicle {vid} delivered: {m}"
            assert pos["lat"] in own.lats[vid], f"payload not produced for {vid}: {m}"
    raw = orjson.dumps(client.received).decode()
    leaked = [mark for mark in other.foreign_marks() if mark in raw]
    assert not leaked, f"another company's ids reached the client: {leaked}"


async def test_interleaved_companies_never_cross(worker: Worker, fleet: FleetDriver) -> None:
    a = await _tenant(worker, fleet)
    b = await _tenant(worker, fleet)
    try:
        t = ts_now_ms()
        futures = []
        last: dict[str, float] = {}
        for i in range(10):
            for sign, tenant in ((1, a), (-1, b)):
                vid = tenant.company.vehicles[i % 4]
                lat = sign * (10.0 + i / 100)
                tenant.lats[vid].add(lat)
                last[vid] = lat
                value = orjson.dumps(fix(vid, lat=lat, ts_ms=t + i))
                futures.append(
                    await fleet.producer.send("gps-events", key=vid.encode(), value=value)
                )
        await fleet.producer.flush()
        await asyncio.gather(*futures)

        # Each `all` client eventually has the last fix of every vehicle of its company.
        for tenant in (a, b):
            everyone, _ = tenant.clients["all"]
            for vid in tenant.company.vehicles:
                await wait_position(everyone, vid, at_lat(last[vid]))
        forbidden_up_to = max(max_event_id(t.clients["all"][0]) for t in (a, b))

        # A later fix of v0 (covered by all three filters) moves every client past that point.
        for sign, tenant in ((1, a), (-1, b)):
            v0 = tenant.company.vehicles[0]
            tenant.lats[v0].add(sign * 50.0)
            await fleet.send_fix(v0, lat=sign * 50.0, ts_ms=t + 100)
        for sign, tenant in ((1, a), (-1, b)):
            v0 = tenant.company.vehicles[0]
            for client, _ in tenant.clients.values():
                await wait_position(client, v0, at_lat(sign * 50.0))
                await reach_event_id(client, forbidden_up_to)

        for own, other in ((a, b), (b, a)):
            for name, (client, covered) in own.clients.items():
                _check_clean(client, own, covered, other)
                if name == "all":
                    assert client.vehicles_seen() == set(own.company.vehicles)
                else:
                    assert client.vehicles_seen() == covered
    finally:
        await gather_close(*_all_clients(a, b))
