"""The path every other test relies on: fix produced → position delivered."""

from __future__ import annotations

from tests.support.client import WsClient
from tests.support.fleet import FleetDriver, wait_registry
from tracker_ws_dev.stack import Worker


async def test_by_ids_subscriber_receives_its_vehicle_only(
    worker: Worker, fleet: FleetDriver
) -> None:
    before = worker.health()["registryVehicles"]
    company = await fleet.company(3)
    wait_registry(worker, before + 3)
    mine, other, _ = company.vehicles
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [mine]})
        assert sub == {**sub, "type": "subscribed", "subscriptionType": "vehicles", "count": 1}
        await fleet.send_fix(other, lat=10.0)
        await fleet.send_fix(mine, lat=11.0)
        got = await client.wait_for(lambda m: m.get("type") in ("position", "positionBatch"))
        if got["type"] == "position":
            assert got["vehicleId"] == mine
            assert got["position"]["lat"] == 11.0
            assert got["eventId"] > 0
        assert client.vehicles_seen() == {mine}
    finally:
        await client.close()
