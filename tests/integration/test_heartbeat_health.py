"""Heartbeat (client ping, server pings, dead-peer detection), /health, /metrics, and recovery
from a Redis outage without restarting the worker."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.client import Msg, WsClient
from tests.support.fleet import Company, FleetDriver, wait_registry
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import Worker

CLOSE_GOING_AWAY = 1001
HEARTBEAT_TIMEOUT_S = 2.0
PING_INTERVAL_S = 0.5

SEED_METRICS = (
    "ws_active_connections",
    "ws_active_subscriptions",
    "ws_connections_total",
    "ws_messages_received_total",
    "ws_messages_sent_total",
    "ws_errors_total",
    "ws_message_processing_duration_seconds",
    "ws_message_delivery_duration_seconds",
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def hb_worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Worker]:
    """A worker with a 2 s heartbeat timeout and 0.5 s server pings, in its own group."""
    handle = devstack.start_worker(
        broker_url=topics,
        redis_url=redis_url,
        log_dir=devstack_dir,
        instance_id=_unique("ws-hb"),
        env={
            "TRACKER_WS_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "TRACKER_WS_PING_INTERVAL": str(PING_INTERVAL_S),
            "TRACKER_WS_APP_ID": _unique("tracker-ws-hb"),
        },
    )
    try:
        yield handle
    finally:
        handle.stop()


async def _wait_health(
    worker: Worker, pred: Any, timeout: float, what: str
) -> tuple[int, dict[str, Any]]:
    """Poll GET /health (off the event loop, so open sockets keep being served) until
    `pred(status, body)`; returns the matching (status, body)."""
    seen: list[tuple[int, dict[str, Any]]] = []

    def check() -> bool:
        got = devstack.health_status(worker.url, timeout=2.0)
        if got is not None and pred(*got):
            seen.append(got)
            return True
        return False

    await asyncio.to_thread(devstack.wait_for, check, timeout, 0.05, what)
    return seen[-1]


def _connections(worker: Worker) -> int:
    got = devstack.health_status(worker.url)
    assert got is not None
    return int(got[1]["connections"])


def _is_fix(m: Msg, vid: str, lat: float) -> bool:
    if m.get("type") == "position":
        return bool(m["vehicleId"] == vid and m["position"]["lat"] == lat)
    if m.get("type") == "positionBatch" and m.get("eventId"):
        return any(p["vehicleId"] == vid and p["position"]["lat"] == lat for p in m["positions"])
    return False


# ---------------------------------------------------------------------------- server heartbeat


async def test_silent_peer_that_never_answers_pings_is_closed_1001(hb_worker: Worker) -> None:
    before = await asyncio.to_thread(_connections, hb_worker)
    session = aiohttp.ClientSession()
    try:
        # autoping=False: the client neither answers the server's pings nor sends anything.
        ws = await session.ws_connect(
            f"{hb_worker.ws_url}?token={Company().token()}", autoping=False
        )
    except BaseException:
        await session.close()
        raise
    client = WsClient(ws, session)
    try:
        await client.next_of("connected", 5)
        started = time.monotonic()
        code = await client.wait_closed(HEARTBEAT_TIMEOUT_S + 5)
        elapsed = time.monotonic() - started
        assert code == CLOSE_GOING_AWAY, code
        # Not before the heartbeat timeout (minus the sweep period), not long after it.
        assert HEARTBEAT_TIMEOUT_S - 0.5 <= elapsed <= HEARTBEAT_TIMEOUT_S + 3, elapsed
    finally:
        await client.close()
    await _wait_health(
        hb_worker,
        lambda status, body: body.get("connections") == before,
        5,
        f"/health connections back to {before}",
    )


async def test_peer_answering_pings_stays_open_without_sending(hb_worker: Worker) -> None:
    client = await WsClient.connect(hb_worker.ws_url, Company().token())  # autoping=True
    try:
        # Bounded wait: the server must NOT close it within 3.5 s (> heartbeat timeout of 2 s);
        # meanwhile aiohttp answers the server's protocol pings, and nothing else is sent.
        with pytest.raises(AssertionError, match="did not close"):
            await client.wait_closed(3.5)
        assert client.closed_code is None
        assert [m["type"] for m in client.received] == ["connected"]
        assert await asyncio.to_thread(_connections, hb_worker) >= 1
        pong = await client.request({"type": "ping"}, "pong", 5)
        assert pong["eventId"] == 0
    finally:
        await client.close()


# ---------------------------------------------------------------------------- /health, /metrics


async def test_health_reports_a_healthy_instance(worker: Worker) -> None:
    client = await WsClient.connect(worker.ws_url, Company().token())
    try:
        sub = await client.subscribe("systemAlerts", {"type": "all"})
        assert sub["type"] == "subscribed", sub
        got = await asyncio.to_thread(devstack.health_status, worker.url, 5.0)
        assert got is not None
        status, body = got
        assert status == 200, body
        assert body["status"] == "healthy"
        assert body["instanceId"] == worker.instance_id
        assert body["redis"] == "ok"
        assert body["broker"] == "ok"
        for name in ("connections", "subscriptions", "messagesPerSecond"):
            assert isinstance(body[name], int) and not isinstance(body[name], bool), (name, body)
            assert body[name] >= 0
        assert body["connections"] >= 1
        assert body["subscriptions"] >= 1
    finally:
        await client.close()


async def test_metrics_expose_every_seed_metric(worker: Worker) -> None:
    client = await WsClient.connect(worker.ws_url, Company().token())
    try:
        await client.request({"type": "ping"}, "pong", 5)
        await client.send({"type": "getState"})
        await client.wait_for(lambda m: m.get("type") == "positionBatch", 5)

        def fetch() -> tuple[int, str, str]:
            with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()

        status, ctype, text = await asyncio.to_thread(fetch)
    finally:
        await client.close()
    assert status == 200
    assert ctype.startswith("text/plain"), ctype
    missing = [name for name in SEED_METRICS if not re.search(rf"^# TYPE {name} \w+$", text, re.M)]
    assert not missing, f"missing from /metrics: {missing}"
    # Live values, not just declarations: this very client is counted.
    assert re.search(r'^ws_connections_total\{[^}]*status="opened"[^}]*\} [1-9]', text, re.M)
    assert re.search(r'^ws_messages_received_total\{[^}]*message_type="ping"', text, re.M)
    # Protocol names as label values, and frames counted by their real type.
    assert re.search(r'^ws_messages_received_total\{[^}]*message_type="getState"', text, re.M)
    for sent in ("connected", "pong", "positionBatch"):
        pattern = rf'^ws_messages_sent_total\{{[^}}]*message_type="{sent}"[^}}]*\}} [1-9]'
        assert re.search(pattern, text, re.M), sent
    assert re.search(r"^ws_broker_up\{[^}]*\} 1\.0$", text, re.M)
    assert re.search(r"^ws_redis_up\{[^}]*\} 1\.0$", text, re.M)
    assert re.search(r"^process_resident_memory_bytes \d", text, re.M)
    # The loop-lag timer observes every 0.25 s from the moment the worker is ready, which may
    # be less than that before the first scrape: scrape until it has.
    lag_count = re.compile(r"^ws_event_loop_lag_seconds_count\{[^}]*\} [1-9]", re.M)
    async with asyncio.timeout(5):
        while not lag_count.search(text):
            await asyncio.sleep(0.05)
            _status, _ctype, text = await asyncio.to_thread(fetch)


# ---------------------------------------------------------------------------- Redis outage


@pytest.fixture(scope="module")
def outage_stack(topics: str, devstack_dir: Path) -> Iterator[tuple[devstack.RedisServer, Worker]]:
    """A Redis of its own (to stop and restart) and a worker using it, in its own consumer
    group, so this worker owns every gps-events partition."""
    redis = devstack.start_redis(log_dir=devstack_dir)
    try:
        worker = devstack.start_worker(
            broker_url=topics,
            redis_url=redis.url,
            log_dir=devstack_dir,
            instance_id=_unique("ws-redis-outage"),
            env={"TRACKER_WS_APP_ID": _unique("tracker-ws-outage")},
        )
        try:
            yield redis, worker
        finally:
            worker.stop()
    finally:
        redis.stop()


async def _healthy_stack(
    stack: tuple[devstack.RedisServer, Worker], fleet: FleetDriver
) -> tuple[devstack.RedisServer, Worker, Company, str]:
    """The stack healthy (even if an earlier test left Redis down) and a fresh vehicle."""
    redis, worker = stack
    await asyncio.to_thread(redis.ensure_running)
    await _wait_health(worker, lambda status, body: status == 200, 20, "/health 200")
    before = worker.health()["registryVehicles"]
    company = await fleet.company(1)
    await asyncio.to_thread(wait_registry, worker, before + 1)
    return redis, worker, company, company.vehicles[0]


async def _outage(redis: devstack.RedisServer, worker: Worker) -> float:
    """Stop Redis, see /health degrade, restart it on the same port (empty), see /health
    recover; returns seconds from redis-server being ready again to /health 200."""
    redis.stop()
    _, body = await _wait_health(
        worker,
        lambda status, body: status == 503 and body.get("redis") == "unreachable",
        10,
        "/health 503 with redis unreachable",
    )
    assert body["status"] == "degraded", body
    assert body["broker"] == "ok", body
    started = time.monotonic()
    await asyncio.to_thread(redis.restart)  # same port, empty data
    redis_up = time.monotonic()
    _, body = await _wait_health(
        worker, lambda status, body: status == 200, 20, "/health 200 after Redis restart"
    )
    recovered = time.monotonic()
    assert body["status"] == "healthy" and body["redis"] == "ok", body
    print(
        f"\nRedis recovery: /health 200 {recovered - redis_up:.2f} s after redis-server was "
        f"ready again ({recovered - started:.2f} s after restart() was called)"
    )
    return recovered - redis_up


async def test_redis_outage_degrades_health_and_recovers_without_restart(
    outage_stack: tuple[devstack.RedisServer, Worker], fleet: FleetDriver
) -> None:
    redis, worker, company, vid = await _healthy_stack(outage_stack, fleet)
    pid = worker.process.pid

    # Before the outage: this worker delivers.
    early = await WsClient.connect(worker.ws_url, company.token())
    try:
        sub = await early.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        assert sub == {**sub, "type": "subscribed", "count": 1}, sub
        await fleet.send_fix(vid, lat=20.5)
        await early.wait_for(lambda m: _is_fix(m, vid, 20.5), 10, "fix before the outage")
    finally:
        await early.close()

    await _outage(redis, worker)
    assert worker.process.pid == pid and worker.alive(), "the worker must not restart"

    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        assert sub == {**sub, "type": "subscribed", "count": 1}, sub
        await fleet.send_fix(vid, lat=21.5)
        got = await client.wait_for(lambda m: _is_fix(m, vid, 21.5), 10, "fresh fix")
        assert got["eventId"] > 0
    finally:
        await client.close()


async def test_event_ids_keep_increasing_for_a_client_living_through_a_redis_restart(
    outage_stack: tuple[devstack.RedisServer, Worker], fleet: FleetDriver
) -> None:
    redis, worker, company, vid = await _healthy_stack(outage_stack, fleet)
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        for i in range(3):
            await fleet.send_fix(vid, lat=30.0 + i)
            await client.wait_for(partial(_is_fix, vid=vid, lat=30.0 + i), 10, f"fix {i}")
        before = client.positions()[-1][0]

        await _outage(redis, worker)

        await fleet.send_fix(vid, lat=39.0)
        got = await client.wait_for(lambda m: _is_fix(m, vid, 39.0), 10, "fix after restart")
        assert client.closed_code is None
        assert got["eventId"] > before, (
            f"eventId went backwards across the Redis restart: {before} -> {got['eventId']}"
        )
    finally:
        await client.close()
