"""The seed §8 JavaScript client's onGeoEvent, onNotification and onSystemAlert callbacks.

tests/e2e/seed_client.js runs the seed's `TrackerWebSocket` class (the demo page's
tracker_ws/web/static/tracker-ws.js, verbatim but for the URL) in Node; its driver subscribes
to geoEvents, notifications and systemAlerts (`all`) and prints one JSON line per
callback. The events come from the Kafka topics or the Redis `events:*` channels; the
callbacks must see them with the seed's field names (event.vehicleName, event.eventType,
event.geozoneName; notification.title, notification.body; level, message). Notifications are
personal: the token's user is the notification's userId, and another user's notification,
produced first, must not reach the client (exact: eventIds arrive in increasing order).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tests.support.checks import registered_company
from tests.support.client import WsClient
from tests.support.fleet import Company, FleetDriver, new_id
from tests.support.node_seed import NodeSeedClient, requires_node_seed
from tracker_ws_dev.stack import Worker

pytestmark = requires_node_seed

SUBSCRIPTIONS = [
    {"subscriptionType": t, "filter": {"type": "all"}}
    for t in ("geoEvents", "notifications", "systemAlerts")
]


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def geo_event(company: Company, vehicle_id: str) -> dict[str, Any]:
    ts = int(time.time() * 1000)
    return {
        "vehicleId": vehicle_id,
        "vehicleName": "А123ВС",
        "companyId": company.company_id,
        "geozoneId": new_id(),
        "geozoneName": "Офис",
        "eventType": "entered",
        "position": {"lat": 55.7558, "lon": 37.6173, "speed": 45.5, "course": 180, "timestamp": ts},
        "timestamp": ts,
    }


def notification(user_id: str) -> dict[str, Any]:
    return {
        "userId": user_id,
        "notification": {
            "id": new_id(),
            "title": "Превышение скорости",
            "body": "Транспорт А123ВС превысил скорость: 95 км/ч",
            "category": "speed",
            "priority": "high",
            "data": {"vehicleId": new_id(), "speed": "95"},
        },
    }


def alert(company: Company) -> dict[str, Any]:
    return {
        "level": "warning",
        "message": f"Плановое обслуживание через 30 минут ({uuid.uuid4().hex[:6]})",
        "targetCompanyIds": [company.company_id],
    }


@pytest.fixture
async def redis_client(redis_url: str) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("source", ["kafka", "redis"])
async def test_seed_js_client_geo_notification_and_alert_callbacks(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, source: str
) -> None:
    company = await registered_company(fleet, worker, 1)
    (vid,) = company.vehicles
    user, other_user = new_id(), new_id()

    async def send(topic: str, value: dict[str, Any]) -> None:
        raw = orjson.dumps(value)
        if source == "kafka":
            key = value.get("vehicleId") or value.get("userId")
            await fleet.send_raw(topic, key.encode() if key else None, raw)
        else:
            assert await redis_client.publish(f"events:{topic}", raw) >= 1

    other = await WsClient.connect(worker.ws_url, company.token(other_user))
    node = await NodeSeedClient.start(
        worker.ws_url, company.token(user), subscriptions=SUBSCRIPTIONS
    )
    try:
        assert (await other.subscribe("notifications", {"type": "all"}))["type"] == "subscribed"
        await node.wait_for(lambda line: line.get("ready") is True, 20.0, "the ready line")
        subscribed = [line["raw"] for line in node.seen if line.get("raw", {}).get("type")]
        assert [m["type"] for m in subscribed] == ["connected"] + ["subscribed"] * 3, subscribed

        # Another user's notification first: its own client has it (so it is published)…
        theirs = notification(other_user)
        await send("notifications", theirs)
        await other.wait_for(
            lambda m: m.get("notification", {}).get("id") == theirs["notification"]["id"],
            10,
            "the other user's notification",
        )
        # …then the three events the seed client must see, in this order.
        geo = geo_event(company, vid)
        await send("geo-events", geo)
        got_geo = await node.wait_for(lambda line: line.get("cb") == "geoEvent", 10, "onGeoEvent")
        mine = notification(user)
        await send("notifications", mine)
        got_notif = await node.wait_for(
            lambda line: line.get("cb") == "notification", 10, "onNotification"
        )
        warn = alert(company)
        await send("system-alerts", warn)
        got_alert = await node.wait_for(
            lambda line: line.get("cb") == "systemAlert", 10, "onSystemAlert"
        )
    finally:
        await other.close()
        code = await node.stop()
    assert code == 0, node.stderr[-10:]

    # onGeoEvent(event): the seed GeozoneEvent field names.
    event = got_geo["event"]
    assert event["vehicleName"] == "А123ВС" and event["eventType"] == "entered"
    assert event["geozoneName"] == "Офис"
    assert event["vehicleId"] == vid and event["geozoneId"] == geo["geozoneId"]
    assert event["timestamp"] == iso(geo["timestamp"])
    assert event["position"] == {
        "lat": 55.7558,
        "lon": 37.6173,
        "speed": 45.5,
        "course": 180,
        "timestamp": iso(geo["timestamp"]),
    }
    # onNotification(notification): the seed NotificationPayload.
    assert got_notif["notification"] == mine["notification"]
    assert got_notif["notification"]["title"] == "Превышение скорости"
    assert got_notif["notification"]["body"].startswith("Транспорт А123ВС")
    # onSystemAlert(level, message).
    assert (got_alert["level"], got_alert["message"]) == (warn["level"], warn["message"])

    # Exactly one callback of each kind; never the other user's notification. The three
    # callbacks carry increasing eventIds (the other user's was published before all of them).
    callbacks = [line for line in node.lines if "cb" in line]
    assert [line["cb"] for line in callbacks] == ["geoEvent", "notification", "systemAlert"]
    ids = [line["eventId"] for line in callbacks]
    assert all(isinstance(i, int) and i > 0 for i in ids) and ids == sorted(set(ids)), ids
    assert theirs["notification"]["id"] not in json.dumps(node.lines)
