"""Geo events, notifications, maintenance events and system alerts through their real inputs:
the Kafka topics (geo-events, notifications, maintenance-events, system-alerts) and the Redis
channels `events:{type}` other services publish on (ARCHITECTURE §6): channel names, one
delivery for an event that arrives both ways, malformed input dead-lettered or skipped.

Which subscription type and filter gets which event is checked in-process
(tests/adapter/test_event_types.py), against the same inputs (tests/support/eventcases.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tests.support.checks import registered_company
from tests.support.client import WsClient
from tests.support.eventcases import (
    ALERT,
    ALL_TYPES,
    EVENT_TOPICS,
    GEO,
    MAINT,
    NOTIF,
    Marker,
    alert,
    geo_event,
    maintenance,
    marker_of,
    notification,
    received_markers,
    subscribe_everything,
    unique_lat,
    wait_marker,
)
from tests.support.fleet import Company, FleetDriver, new_id
from tests.support.streams import read_dead_letters, stream_count
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import Worker


def kafka_key(topic: str, value: dict[str, Any]) -> bytes:
    """Vehicle events are keyed by vehicleId (ARCHITECTURE §6), notifications by user, alerts
    by one fixed key: events of one key share a partition, so they are read in order."""
    key = value.get("vehicleId") or value.get("userId")
    return key.encode() if isinstance(key, str) else b"system-alerts"


@dataclass
class Source:
    """One input path: a Kafka topic via the fleet's producer, or a Redis `events:{type}`."""

    name: str
    fleet: FleetDriver
    redis: aioredis.Redis

    async def send(self, topic: str, value: dict[str, Any], *, channel: str | None = None) -> None:
        raw = orjson.dumps(value)
        if self.name == "kafka":
            await self.fleet.send_raw(topic, kafka_key(topic, value), raw)
        else:
            receivers = await self.redis.publish(f"events:{channel or topic}", raw)
            assert receivers >= 1, "nothing subscribed to events:* (is the worker on this Redis?)"


# ------------------------------------------------------------------------------ the world


@dataclass
class World:
    """Company `a` (the subscriber's) with 4 vehicles in groups g0 = {v0, v2}, g1 = {v1, v3};
    company `b` with 2 vehicles in one group. Watchers `wa` / `wb` (other users of a / b)
    subscribe to every type with `all`: they see every event the subscriber must not."""

    worker: Worker
    fleet: FleetDriver
    src: Source
    a: Company
    b: Company
    wa: WsClient
    wb: WsClient
    wa_user: str
    wb_user: str
    zone_a1: str = field(default_factory=new_id)
    zone_a2: str = field(default_factory=new_id)
    zone_b: str = field(default_factory=new_id)
    clients: list[WsClient] = field(default_factory=list)

    @property
    def v(self) -> list[str]:
        return self.a.vehicles

    @property
    def g(self) -> list[str]:
        return list(self.a.groups)

    async def connect(self, user_id: str | None = None, company: Company | None = None) -> WsClient:
        company = company or self.a
        client = await WsClient.connect(self.worker.ws_url, company.token(user_id))
        self.clients.append(client)
        return client

    async def send(self, topic: str, value: dict[str, Any]) -> Marker:
        await self.src.send(topic, value)
        return marker_of(topic, value)

    async def fix(self, vehicle_id: str) -> Marker:
        """A gps-events fix (always Kafka: positions have no Redis input)."""
        lat = unique_lat()
        await self.fleet.send_fix(vehicle_id, lat=lat)
        return ("pos", vehicle_id, lat)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------ Redis aliases

CHANNELS = [
    ("geo-events", GEO),
    ("geo", GEO),
    ("geoEvents", GEO),
    ("notifications", NOTIF),
    ("notification", NOTIF),
    ("maintenance-events", MAINT),
    ("maintenance", MAINT),
    ("system-alerts", ALERT),
    ("systemAlerts", ALERT),
    ("alerts", ALERT),
]


@pytest.mark.parametrize(("channel", "topic"), CHANNELS, ids=[c for c, _ in CHANNELS])
async def test_redis_channel_names(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, channel: str, topic: str
) -> None:
    """`events:{type}` with the topic name or the subscription-type spelling."""
    company = await registered_company(fleet, worker, 1)
    user = new_id()
    client = await WsClient.connect(worker.ws_url, company.token(user))
    try:
        for stype in ALL_TYPES:
            assert (await client.subscribe(stype, {"type": "all"}))["type"] == "subscribed"
        vid = company.vehicles[0]
        value = {
            GEO: lambda: geo_event(company, vid, new_id()),
            NOTIF: lambda: notification(user),
            MAINT: lambda: maintenance(company, vid),
            ALERT: lambda: alert("info", [company]),
        }[topic]()
        await Source("redis", fleet, redis_client).send(topic, value, channel=channel)
        await wait_marker(client, marker_of(topic, value))
    finally:
        await client.close()


# ------------------------------------------------------------------------------ dedupe


def _dedupe_event(topic: str, company: Company, user: str) -> dict[str, Any]:
    vid = company.vehicles[0]
    if topic == GEO:
        return geo_event(company, vid, new_id())
    if topic == NOTIF:
        return notification(user)
    if topic == MAINT:
        return maintenance(company, vid)
    return {**alert("warning", [company]), "id": new_id()}


@pytest.mark.parametrize("first", ["kafka-first", "redis-first"])
@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_same_event_on_kafka_and_redis_is_delivered_once(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topic: str, first: str
) -> None:
    """The same event (same notification.id; same id for maintenance and alerts; same vehicle,
    zone, type and timestamp for geo events) from both inputs gets one eventId."""
    kafka, redis = Source("kafka", fleet, redis_client), Source("redis", fleet, redis_client)
    one, two = (kafka, redis) if first == "kafka-first" else (redis, kafka)
    company = await registered_company(fleet, worker, 1)
    user = new_id()
    client = await WsClient.connect(worker.ws_url, company.token(user))
    try:
        await subscribe_everything(client)
        event = _dedupe_event(topic, company, user)
        marker = marker_of(topic, event)
        await one.send(topic, event)
        await wait_marker(client, marker)
        await two.send(topic, event)
        # A later event on the second copy's path (same Redis channel / same Kafka key, hence
        # partition): processed after the copy, so it has a larger eventId than the copy would.
        sentinel = _dedupe_event(topic, company, user)
        await two.send(topic, sentinel)
        await wait_marker(client, marker_of(topic, sentinel))
        got = [mk for mk in received_markers(client) if mk[0] != "pos"]
        assert got == [marker, marker_of(topic, sentinel)], got
    finally:
        await client.close()


# ------------------------------------------------------------------------------ malformed input


def _bad_events(topic: str, w: World) -> list[tuple[str, bytes | None, bytes, str, str]]:
    """(name, key, value, reason substring, marker) — one of each kind of malformed record."""
    out: list[tuple[str, bytes | None, bytes, str, str]] = []
    v0 = w.v[0]

    def add(name: str, value: Any, reason: str, key: bytes | None = None) -> None:
        marker = f"dlq-marker-{uuid.uuid4().hex}"
        if isinstance(value, dict):
            raw = orjson.dumps({**value, "marker": marker})
        else:
            raw = bytes(value) + marker.encode()
        out.append((name, key, raw, reason, marker))

    add("not-json", b"{not json ", "not JSON")
    add("oversize", {"pad": "p" * (70 * 1024)}, "exceeds")
    if topic == GEO:
        good = geo_event(w.a, v0, w.zone_a1)
        add("missing-vehicleId", {k: v for k, v in good.items() if k != "vehicleId"}, "vehicleId")
        add("eventType-inside", {**good, "eventType": "inside"}, "eventType")
        add("no-companyId", {k: v for k, v in good.items() if k != "companyId"}, "companyId")
        add("position-lat-200", {**good, "position": {"lat": 200, "lon": 1}}, "position.lat")
        add("key-mismatch", good, "does not match", key=new_id().encode())
    elif topic == NOTIF:
        good = notification(w.wa_user)
        add("missing-userId", {"notification": good["notification"]}, "userId")
        add(
            "id-not-uuid",
            {**good, "notification": {**good["notification"], "id": "n-1"}},
            "notification.id",
        )
        add(
            "no-title",
            {**good, "notification": {**good["notification"], "title": ""}},
            "notification.title",
        )
        add("notification-string", {**good, "notification": "hello"}, "notification")
    elif topic == MAINT:
        good = maintenance(w.a, v0)
        add("missing-companyId", {k: v for k, v in good.items() if k != "companyId"}, "companyId")
        add("vehicleId-not-uuid", {**good, "vehicleId": "truck-1"}, "vehicleId")
        add("data-not-object", {**good, "data": "oil"}, "data")
    else:
        add("level-panic", alert("panic"), "level")
        add("no-message", {"level": "info"}, "message")
        add("targets-empty", {**alert("info"), "targetCompanyIds": []}, "targetCompanyIds")
        add("targets-not-uuid", {**alert("info"), "targetCompanyIds": ["acme"]}, "targetCompanyIds")
    return out


def _good_event(topic: str, w: World) -> dict[str, Any]:
    if topic == GEO:
        return geo_event(w.a, w.v[0], w.zone_a1)
    if topic == NOTIF:
        return notification(w.wa_user)
    if topic == MAINT:
        return maintenance(w.a, w.v[0])
    return alert("info", [w.a])


@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_malformed_kafka_events_are_dead_lettered_and_good_ones_flow(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topics: str, topic: str
) -> None:
    a = await registered_company(fleet, worker, 1)
    user = new_id()
    watcher = await WsClient.connect(worker.ws_url, a.token(user))
    w = World(worker, fleet, Source("kafka", fleet, redis_client), a, a, watcher, watcher, user, "")
    try:
        await subscribe_everything(watcher)
        bad = _bad_events(topic, w)
        invalid_before = await asyncio.to_thread(stream_count, worker, topic, "invalid")
        expected = [await w.send(topic, _good_event(topic, w))]
        await wait_marker(watcher, expected[-1])
        good_key = kafka_key(topic, _good_event(topic, w))
        for _, key, raw, _, _ in bad:
            # The good events' key (same partition) unless the record is about its key.
            await fleet.send_raw(topic, key or good_key, raw)
            good = _good_event(topic, w)
            await fleet.send_raw(topic, good_key, orjson.dumps(good))
            expected.append(marker_of(topic, good))
            await wait_marker(watcher, expected[-1])
        got = [mk for mk in received_markers(watcher) if mk[0] != "pos"]
        assert got == expected
        # A record keyed otherwise (key-mismatch) sits on another partition: wait for its count.
        want = invalid_before + len(bad)
        await asyncio.to_thread(
            devstack.wait_for,
            lambda: stream_count(worker, topic, "invalid") >= want,
            10,
            what=f"{len(bad)} invalid {topic} events counted",
        )
        invalid_after = await asyncio.to_thread(stream_count, worker, topic, "invalid")
        assert invalid_after == want, (invalid_before, invalid_after)
    finally:
        await watcher.close()
    letters = await read_dead_letters(topics, f"{topic}-dlq", {b[4] for b in bad}, timeout=20)
    missing = [name for name, _, _, _, marker in bad if marker not in letters]
    assert not missing, f"not dead-lettered on {topic}-dlq: {missing}"
    for name, _, _, reason, marker in bad:
        letter = letters[marker]
        assert letter["topic"] == topic, (name, letter)
        assert reason in letter["error"], (name, reason, letter["error"])


@pytest.mark.parametrize("topic", EVENT_TOPICS)
async def test_malformed_redis_events_are_skipped_and_counted(
    worker: Worker, fleet: FleetDriver, redis_client: aioredis.Redis, topic: str
) -> None:
    a = await registered_company(fleet, worker, 1)
    user = new_id()
    watcher = await WsClient.connect(worker.ws_url, a.token(user))
    redis = Source("redis", fleet, redis_client)
    w = World(worker, fleet, redis, a, a, watcher, watcher, user, "")
    label = f"redis:events:{topic}"
    try:
        await subscribe_everything(watcher)
        bad = _bad_events(topic, w)
        before = {
            o: await asyncio.to_thread(stream_count, worker, label, o) for o in ("ok", "invalid")
        }
        unknown_before = await asyncio.to_thread(
            stream_count, worker, "redis:events:no-such-type", "unknown_type"
        )
        expected = []
        bad = [b for b in bad if b[1] is None]  # a Redis message has no key
        for _, _, raw, _, _ in bad:
            assert await redis_client.publish(f"events:{topic}", raw) >= 1
            assert await redis_client.publish("events:no-such-type", raw) >= 1
            good = _good_event(topic, w)
            await redis.send(topic, good)
            expected.append(marker_of(topic, good))
            await wait_marker(watcher, expected[-1])
        got = [mk for mk in received_markers(watcher) if mk[0] != "pos"]
        assert got == expected
        # Redis delivers a channel's messages in order: the bad ones were counted before the
        # last good one was delivered.
        after = {
            o: await asyncio.to_thread(stream_count, worker, label, o) for o in ("ok", "invalid")
        }
        assert after["invalid"] == before["invalid"] + len(bad), (before, after)
        assert after["ok"] == before["ok"] + len(bad), (before, after)
        unknown_after = await asyncio.to_thread(
            stream_count, worker, "redis:events:no-such-type", "unknown_type"
        )
        assert unknown_after == unknown_before + len(bad)
    finally:
        await watcher.close()
