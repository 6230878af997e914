"""Reconnect with lastEventId: missed notifications replayed once, in order, then live."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from tests.support.client import WsClient
from tests.support.fleet import Company, new_id
from tracker_ws_dev.stack import Worker


def notification(user: str, title: str) -> bytes:
    return orjson.dumps(
        {
            "userId": user,
            "notification": {
                "id": new_id(),
                "title": title,
                "body": "",
                "category": "speed",
                "priority": "high",
                "data": {},
            },
        }
    )


async def test_missed_notifications_are_replayed_exactly_once(
    worker: Worker, redis_url: str
) -> None:
    company = Company()
    user = new_id()
    token = company.token(user)
    r = aioredis.Redis.from_url(redis_url)
    client = await WsClient.connect(worker.ws_url, token)
    try:
        await client.subscribe("notifications", {"type": "all"})
        await r.publish("events:notifications", notification(user, "first"))
        first = await client.next_of("notification")
        await client.close()
        # Missed while away:
        for i in range(3):
            await r.publish("events:notifications", notification(user, f"missed-{i}"))
        client = await WsClient.connect(
            worker.ws_url, token, query=f"lastEventId={first['eventId']}"
        )
        hello = client.received[0]
        assert hello["recovered"] is True, (hello.get("reason"), hello.get("restoredSubscriptions"))
        assert hello["restoredSubscriptions"] == 1
        await client.subscribe("notifications", {"type": "all"})  # the seed client re-sends
        await r.publish("events:notifications", notification(user, "live"))
        await client.wait_for(lambda m: m.get("notification", {}).get("title") == "live")
        titles = [
            m["notification"]["title"] for m in client.received if m["type"] == "notification"
        ]
        assert titles == ["missed-0", "missed-1", "missed-2", "live"]
        ids = [m["eventId"] for m in client.received if m["type"] == "notification"]
        assert ids == sorted(ids) and ids[0] > first["eventId"]
    finally:
        await client.close()
        await r.aclose()
