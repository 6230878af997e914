"""Issue 10.5: a getState herd or a reconnect storm must queue for Redis, never drop a client
(before: the pool's MaxConnectionsError closed 93 of 200 getState clients and 203 of 400
reconnecting ones with 1006), and positions of other clients must keep flowing meanwhile.

One worker of its own (own consumer group, own Redis database). The storm clients share one
aiohttp session and do as little as possible: a loaded 2-core box runs the worker too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis as redis_sync

from tests.conftest import start_cluster
from tests.support.checks import live_positions, publish_failures
from tests.support.cluster import TimedClient, admin_token, ahttp, register_company, warm_up
from tests.support.fleet import Company, FleetDriver, new_id
from tracker_ws_dev.stack import Worker

STORM_DB = 15
HERD = 200  # simultaneous getState
STORM = int(os.environ.get("STORM_RECONNECTS", "1000"))  # simultaneous reconnects
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def storm_worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Worker]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{STORM_DB}").flushdb()
    cluster = start_cluster(
        1, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=STORM_DB
    )
    try:
        yield cluster.workers[0]
    finally:
        cluster.stop()


@dataclass
class Result:
    hello: dict[str, Any] | None = None
    reply: dict[str, Any] | None = None  # the awaited message, or the error that came instead
    close_code: int | None = None


async def until_reply(
    ws: aiohttp.ClientWebSocketResponse, result: Result, want: Any, timeout: float
) -> Result:
    """Read until `want(msg)`, an `error`, or the close; fills `result`."""
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            m = orjson.loads(msg.data)
            if m.get("type") == "connected":
                result.hello = m
            if want(m) or m.get("type") == "error":
                result.reply = m
                return result
    result.close_code = ws.close_code
    return result


class Observer:
    """Another company's client, fed positions all through the storm."""

    def __init__(self, client: TimedClient, vehicle: str, fleet: FleetDriver) -> None:
        self.client, self.vehicle, self.fleet = client, vehicle, fleet
        self.stop = asyncio.Event()
        self.sent = 0

    async def produce(self) -> None:
        while not self.stop.is_set():
            await self.fleet.send_fix(self.vehicle, lat=20.0 + self.sent / 1000)
            self.sent += 1
            # Pace: one fix per 50 ms is all the observer needs; the clock is the event.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.05)

    async def last_arrives(self) -> None:
        lat = 30.0
        await self.fleet.send_fix(self.vehicle, lat=lat)
        await self.client.wait_for(
            lambda m: any(p["lat"] == lat for _, _, p in live_positions(m)),
            30,
            "the observer's fix after the storm",
        )


async def observer_for(worker: Worker, fleet: FleetDriver) -> Observer:
    other = await register_company(fleet, [worker], [new_id()])
    vid = other.vehicles[0]
    client = await TimedClient.open(worker, other.token())
    await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
    await warm_up(fleet, [(client, {vid})])
    return Observer(client, vid, fleet)


async def test_get_state_herd_answers_every_client(
    storm_worker: Worker, fleet: FleetDriver
) -> None:
    worker = storm_worker
    company = await register_company(fleet, [worker], [new_id() for _ in range(3)])
    observer = await observer_for(worker, fleet)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def connect() -> tuple[aiohttp.ClientWebSocketResponse, Result]:
            ws = await http.ws_connect(f"{worker.ws_url}?token={company.token()}")
            hello = await until_reply(
                ws, Result(), lambda m: m.get("type") == "connected", TIMEOUT_S
            )
            return ws, hello

        opened = await asyncio.gather(*(connect() for _ in range(HERD)))
        assert all(r.hello is not None for _, r in opened)
        failed_before = await asyncio.to_thread(publish_failures, worker)
        feeding = asyncio.create_task(observer.produce())
        started = time.monotonic()
        try:
            await asyncio.gather(*(ws.send_str('{"type":"getState"}') for ws, _ in opened))
            results = await asyncio.gather(
                *(
                    until_reply(
                        ws,
                        Result(),
                        lambda m: m.get("type") == "positionBatch" and m.get("eventId") == 0,
                        TIMEOUT_S,
                    )
                    for ws, _ in opened
                )
            )
            took = time.monotonic() - started
        finally:
            observer.stop.set()
            await feeding
            await asyncio.gather(*(ws.close() for ws, _ in opened))
    try:
        closed = [r.close_code for r in results if r.reply is None]
        errors = [r.reply for r in results if r.reply and r.reply["type"] == "error"]
        print(
            f"\n{HERD} simultaneous getState: {len(closed)} closed {closed[:5]}, "
            f"{len(errors)} errors, all answered in {took:.2f} s; "
            f"observer fixes sent meanwhile: {observer.sent}"
        )
        assert not closed, f"{len(closed)}/{HERD} clients closed: {closed[:10]}"
        assert not errors, errors[:3]
        await observer.last_arrives()
        assert await asyncio.to_thread(publish_failures, worker) == failed_before
    finally:
        await observer.client.close()


def save_states(worker: Worker, company: Company, users: list[str], vid: str) -> None:
    """What a disconnect leaves in Redis (seed §4 `ws:state:{userId}`), written directly:
    connecting and closing STORM clients first would double the test's own work."""
    r = redis_sync.Redis.from_url(worker.redis_url)
    state = orjson.dumps(
        {
            "subscriptions": [
                {"subscriptionType": "vehicles", "filter": {"type": "byIds", "ids": [vid]}}
            ],
            "lastEventId": 0,
            "ackedEventId": 0,
            "savedAt": "2026-01-01T00:00:00.000Z",
            "companyId": company.company_id,
        }
    )
    try:
        pipe = r.pipeline(transaction=False)
        for user in users:
            pipe.set(f"ws:state:{user}", state, px=300_000)
            pipe.set(f"ws:state:{user}:seen", "1", ex=86400)
        pipe.execute()
    finally:
        r.close()


async def reconnect_storm(worker: Worker, fleet: FleetDriver, n: int) -> None:
    company = await register_company(fleet, [worker], [new_id()])
    vid = company.vehicles[0]
    users = [new_id() for _ in range(n)]
    await asyncio.to_thread(save_states, worker, company, users, vid)
    status, body = await ahttp(
        "POST",
        worker.url + "/api/v1/ws/broadcast",
        token=admin_token(),
        body={"level": "info", "message": "missed", "targetCompanyIds": [company.company_id]},
    )
    assert status == 200, body
    alert_id = int(body["eventId"])
    tokens = [company.token(u) for u in users]
    observer = await observer_for(worker, fleet)
    failed_before = await asyncio.to_thread(publish_failures, worker)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def reconnect(token: str) -> Result:
            result = Result()
            try:
                ws = await http.ws_connect(
                    f"{worker.ws_url}?token={token}&lastEventId={alert_id - 1}",
                    timeout=aiohttp.ClientWSTimeout(ws_close=10),
                )
            except aiohttp.ClientError as exc:
                result.reply = {"type": "connect failed", "why": repr(exc)}
                return result
            try:
                return await until_reply(
                    ws,
                    result,
                    lambda m: m.get("type") == "systemAlert" and m.get("eventId") == alert_id,
                    TIMEOUT_S,
                )
            finally:
                await ws.close()

        feeding = asyncio.create_task(observer.produce())
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(reconnect(t) for t in tokens))
        finally:
            took = time.monotonic() - started
            observer.stop.set()
            await feeding
    try:
        closed = [r.close_code for r in results if r.reply is None]
        not_recovered = [r.hello for r in results if not (r.hello and r.hello.get("recovered"))]
        other = [r.reply for r in results if r.reply and r.reply.get("type") != "systemAlert"]
        print(
            f"\n{n} simultaneous reconnects with lastEventId: {len(closed)} closed "
            f"{sorted(set(closed), key=str)}, {len(not_recovered)} not recovered, "
            f"{len(other)} other outcomes, all done in {took:.2f} s; "
            f"observer fixes sent meanwhile: {observer.sent}"
        )
        assert not closed, f"{len(closed)}/{n} clients closed: {closed[:10]}"
        assert not other, other[:3]
        assert not not_recovered, not_recovered[:3]
        await observer.last_arrives()
        assert await asyncio.to_thread(publish_failures, worker) == failed_before
    finally:
        await observer.client.close()


async def test_reconnect_storm_recovers_every_client(
    storm_worker: Worker, fleet: FleetDriver
) -> None:
    await reconnect_storm(storm_worker, fleet, STORM)


@pytest.mark.parametrize("server", ["redis", "cluster"])
async def test_bus_queues_a_read_herd_and_keeps_publishing(
    server: str, request: pytest.FixtureRequest
) -> None:
    """The pool policy itself, in-process: far more concurrent client reads than the pool
    has connections, with publishes issued while they hold it. Before: MaxConnectionsError
    for the reads past 100 and for the publishes (positions dropped). On a cluster the read
    gate alone keeps the herd within each node's pool."""
    from tracker_ws.bus import Outgoing, redis_bus

    if server == "cluster":
        url: str = request.getfixturevalue("redis_cluster_url")
    else:
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + f"/{STORM_DB}"
    bus = redis_bus(url, "ws-pool-test")
    try:
        reads = [
            asyncio.create_task(bus.fanout.last_positions([new_id()]))
            if i % 2
            else asyncio.create_task(bus.store.read_history([f"ws:history:user:{new_id()}"], 0, 10))
            for i in range(500)
        ]
        position = Outgoing(["nobody"], b'{"t":"pos"}', vehicle_id=new_id(), fix_ms=1)
        publishes = [asyncio.create_task(bus.fanout.publish([position])) for _ in range(20)]
        results = await asyncio.gather(*reads, *publishes, return_exceptions=True)
        failed_reads = [r for r in results[:500] if isinstance(r, BaseException)]
        failed_publishes = [r for r in results[500:] if isinstance(r, BaseException)]
        assert not failed_reads and not failed_publishes, (
            f"{len(failed_reads)}/500 reads and {len(failed_publishes)}/20 publishes failed, "
            f"e.g. {(failed_reads + failed_publishes)[:2]}"
        )
        assert sum(1 for ids in results[500:] if isinstance(ids, list) and ids[0]) == 1
    finally:
        await bus.close()
