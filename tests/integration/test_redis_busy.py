"""Issue 10.4: a busy Redis (a long Lua script answers everything else with BUSY) must not
stop delivery for good. The worker has a redis-server of its own: making the session's
Redis busy would stall every other test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.conftest import Cluster, cluster_on_own_redis
from tests.support.checks import live_positions
from tests.support.client import Msg
from tests.support.cluster import TimedClient, register_company, until, warm_up
from tests.support.fleet import FleetDriver, new_id
from tracker_ws_dev import stack as devstack

BUSY_S = 2.5  # how long the script keeps Redis busy
LOST = "Redis delivery subscription lost"  # the listener's one warning per outage

# Spins until ARGV[1] seconds have passed; Redis answers every other client BUSY meanwhile.
SPIN = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1e6
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1e6 - start > tonumber(ARGV[1]) then return 1 end
end
"""


@pytest.fixture(scope="module")
def busy_pair(topics: str, devstack_dir: Path) -> Iterator[tuple[devstack.RedisServer, Cluster]]:
    """One worker (its own consumer group) behind a redis-server of its own."""
    with cluster_on_own_redis(1, broker_url=topics, log_dir=devstack_dir) as pair:
        yield pair


def make_busy(url: str, seconds: float, *, kill: bool = True) -> None:
    """Run the script for `seconds`. With `kill`, first drop the worker's pub/sub connection
    in the same round trip: the listener's resubscribe then meets BUSY (as a health-check
    PING during a long script would)."""
    r = redis_sync.Redis.from_url(url, socket_timeout=seconds + 10)
    try:
        r.config_set("busy-reply-threshold", 50)
        pipe = r.pipeline(transaction=False)
        if kill:
            pipe.client_kill_filter(_type="pubsub")
        pipe.eval(SPIN, 0, seconds)
        pipe.execute()
    finally:
        r.close()


async def flowing_vehicle(fleet: FleetDriver, worker: devstack.Worker) -> tuple[str, TimedClient]:
    """A fresh company's vehicle whose fixes already reach a subscribed client."""
    company = await register_company(fleet, [worker], [new_id()])
    vid = company.vehicles[0]
    client = await TimedClient.open(worker, company.token())
    try:
        await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        await warm_up(fleet, [(client, {vid})])
    except BaseException:
        await client.close()
        raise
    return vid, client


async def test_busy_redis_does_not_stop_delivery(
    busy_pair: tuple[devstack.RedisServer, Cluster], fleet: FleetDriver
) -> None:
    server, cluster = busy_pair
    [worker] = cluster.workers
    vid, client = await flowing_vehicle(fleet, worker)
    try:
        warnings_before = worker.process.read_log().count(LOST)

        # /health sampled all along: the listener's state must show while it is down.
        samples: list[tuple[int, dict[str, Any]]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                got = devstack.health_status(worker.url, timeout=5.0)
                if got is not None:
                    samples.append(got)
                stop.wait(0.05)

        sampler = asyncio.create_task(asyncio.to_thread(sample))
        try:
            await asyncio.to_thread(make_busy, server.url, BUSY_S)
            # Redis answers again; the listener must be back by itself.
            await until(
                lambda: (devstack.health_status(worker.url) or (0, {}))[0] == 200,
                30,
                "/health 200 after the busy script",
            )
        finally:
            stop.set()
            await sampler

        # Positions flow again: keep producing until a fresh fix arrives.
        n = 0
        while True:
            await fleet.send_fix(vid, lat=50.0 + n / 1000)
            n += 1
            try:
                await client.wait_for(
                    lambda m: any(p["lat"] >= 50.0 for _, v, p in live_positions(m) if v == vid),
                    0.5,
                )
                break
            except AssertionError:
                assert n < 40, (
                    "no position delivered within 20 s after Redis was busy; "
                    f"/health now {devstack.health_status(worker.url)}"
                )
        down = [body.get("listener") for code, body in samples if code != 200]
        assert any(isinstance(s, str) and s != "ok" for s in down), samples[-5:]
        log = worker.process.read_log()
        assert log.count(LOST) - warnings_before == 1, log[-3000:]
        print(
            f"\nbusy {BUSY_S} s: delivery resumed after {n} fixes; /health while down: {down[:3]}"
        )
    finally:
        await client.close()


async def test_a_failing_delivery_handler_does_not_stop_delivery(
    busy_pair: tuple[devstack.RedisServer, Cluster], fleet: FleetDriver
) -> None:
    server, cluster = busy_pair
    [worker] = cluster.workers
    vid, client = await flowing_vehicle(fleet, worker)
    r = redis_sync.Redis.from_url(server.url)
    try:
        # Not "<eventId> <payload>" lines: parsing it raises inside the listener.
        assert r.publish(f"ws:deliver:{worker.instance_id}", b"garbage") == 1
        for i in range(3):
            await fleet.send_fix(vid, lat=40.0 + i)

            def live_at(m: Msg, lat: float = 40.0 + i) -> bool:
                return any(p["lat"] == lat for _, _, p in live_positions(m))

            await client.wait_for(
                live_at,
                15,
                f"the fix at lat {40.0 + i} after a bad delivery message",
            )
        assert (devstack.health_status(worker.url) or (0, {}))[0] == 200
    finally:
        r.close()
        await client.close()


def redis_busy(url: str) -> bool:
    r = redis_sync.Redis.from_url(url, socket_timeout=2)
    try:
        r.ping()
        return False
    except redis_sync.exceptions.ResponseError as exc:
        return "BUSY" in str(exc)
    finally:
        r.close()


async def test_busy_redis_during_recovery_and_get_state_gives_answers(
    busy_pair: tuple[devstack.RedisServer, Cluster], fleet: FleetDriver
) -> None:
    """Issue 10.5: a Redis error while recovering or answering getState is an answer the
    client can act on (recovered:false with a reason, an error), never a 1006."""
    server, cluster = busy_pair
    [worker] = cluster.workers
    company = await register_company(fleet, [worker], [new_id()])
    user = new_id()
    client = await TimedClient.open(worker, company.token(user))
    await client.subscribe("vehicles", {"type": "byIds", "ids": company.vehicles})
    await client.close()  # leaves a saved state to recover
    live = await TimedClient.open(worker, company.token())
    spin = asyncio.create_task(asyncio.to_thread(make_busy, server.url, 6.0, kill=False))
    back: TimedClient | None = None
    try:
        await until(lambda: redis_busy(server.url), 10, "Redis busy")
        back = await TimedClient.open(worker, company.token(user), query="lastEventId=1")
        hello = back.received[0]
        assert hello["recovered"] is False and hello["reason"] == "unavailable", hello
        await live.send({"type": "getState"})
        err = await live.next_of("error")
        assert err["code"] == "BACKEND_UNAVAILABLE", err
        assert live.closed_code is None and back.closed_code is None
        await spin
        # Redis answers again: the same client simply asks again.
        await until(lambda: not redis_busy(server.url), 10, "Redis answering")
        batch = await live.request({"type": "getState"}, "positionBatch")
        assert batch["eventId"] == 0
    finally:
        if not spin.done():
            await spin
        await live.close()
        if back is not None:
            await back.close()
