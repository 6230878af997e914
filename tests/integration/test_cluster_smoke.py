"""A client on one instance receives a vehicle whose partition another instance owns."""

from __future__ import annotations

from tests.conftest import Cluster
from tests.support.client import WsClient
from tests.support.fleet import FleetDriver, wait_registry


async def test_cross_instance_delivery(cluster3: Cluster, fleet: FleetDriver) -> None:
    before = cluster3.workers[0].health()["registryVehicles"]
    company = await fleet.company(6)
    for w in cluster3.workers:
        wait_registry(w, before + 6)
    vid = company.vehicles[0]
    owner = cluster3.owner_of(vid)
    other = next(w for w in cluster3.workers if w is not owner)
    client = await WsClient.connect(other.ws_url, company.token())
    try:
        await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        # Interest travels through the changes topic; keep fixing until the first arrives.
        lat = 1.0
        for _ in range(100):
            await fleet.send_fix(vid, lat=lat)
            try:
                await client.wait_for(
                    lambda m: m.get("type") in ("position", "positionBatch"), timeout=0.3
                )
                break
            except AssertionError:
                lat += 1
        for i in range(20):
            await fleet.send_fix(vid, lat=50.0 + i)
        await client.wait_for(
            lambda m: any(p[2]["lat"] == 69.0 for p in client.positions()), timeout=10
        )
        ids = [e for e, _, _ in client.positions()]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        await client.close()
