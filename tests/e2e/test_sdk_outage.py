"""The client SDK (clients/js) in Node rides out its only instance's death (issue 13).

A real worker, broker and Redis; the SDK client subscribed to a vehicle and to replayable
events (notifications, geo events). The worker is killed -9 and started again on the same port
after an outage (10 s in the default suite; 60 s under the `soak` marker), while events keep
being produced to Kafka. The client must come back by itself (its backoff never gives up),
recover by lastEventId, and have delivered every replayable event exactly once: no gap, no
duplicate, by eventId and by the event's own id. Positions must flow again too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from tests.conftest import Cluster, start_cluster
from tests.support.checks import warm_up_event_partitions
from tests.support.fleet import (
    Company,
    EventSource,
    FleetDriver,
    Replayable,
    new_id,
    publish_some,
)
from tests.support.node_sdk import NodeSdkClient, build_sdk, requires_node_sdk
from tracker_ws_dev.stack import wait_for

pytestmark = requires_node_sdk

OUTAGE_DB = 2


@pytest.fixture
def lone_worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{OUTAGE_DB}").flushdb()
    cluster = start_cluster(
        1, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=OUTAGE_DB
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(10.0, id="outage-10s"),
        pytest.param(60.0, id="outage-60s", marks=pytest.mark.soak),
    ],
)
async def test_sdk_client_recovers_every_event_after_kill_9_and_an_outage(
    outage_s: float, lone_worker: Cluster, fleet: FleetDriver
) -> None:
    (worker,) = lone_worker.workers
    await asyncio.to_thread(build_sdk)  # the driver imports clients/js/dist: the current source
    r = aioredis.Redis.from_url(lone_worker.redis_url)
    company = Company()
    user = new_id()
    vid = new_id()
    await fleet.register(vid, company.company_id, name="SDK-1")
    events = EventSource(fleet.producer, r)
    subscriptions = [
        {"subscriptionType": "vehicles", "filter": {"type": "byIds", "ids": [vid]}},
        {"subscriptionType": "notifications", "filter": {"type": "all"}},
        {"subscriptionType": "geoEvents", "filter": {"type": "all"}},
    ]
    await warm_up_event_partitions(fleet, worker)
    # Default options: the backoff the SDK ships with (0.5 s doubling, 30 s cap, never gives up).
    node = await NodeSdkClient.start_sdk(worker.ws_url, company.token(user), subscriptions)
    try:
        await node.wait_for(lambda line: line.get("ready") is True, 20, "subscribed")
        await fleet.send_fix(vid, lat=60.0)
        await node.wait_until(
            lambda: any(line.get("lat") == 60.0 for line in node.lines), 20, "a first position"
        )
        before = await publish_some(events, company, user, vid, 6, ("redis", "kafka"))
        await node.wait_until(
            lambda: {e.marker for e in before} <= {x["marker"] for x in node.replayable()},
            20,
            "the events before the kill",
        )

        def saved() -> bool:
            raw = redis_sync.Redis.from_url(lone_worker.redis_url).get(f"ws:state:{user}")
            return raw is not None and len(json.loads(raw)["subscriptions"]) == 3

        await asyncio.to_thread(wait_for, saved, 10.0, 0.05, "the saved state")

        killed = time.monotonic()
        await asyncio.to_thread(worker.kill)
        # The outage: events keep coming through Kafka (nobody consumes them until the restart).
        during: list[Replayable] = []
        while time.monotonic() - killed < outage_s:
            during += await publish_some(events, company, user, vid, 2, ("kafka",))
            await asyncio.sleep(1.0)  # the pace of production during the outage
        await node.wait_until(
            lambda: sum(s["state"] == "reconnecting" for s in node.states()) >= 2,
            30,
            "the client retrying during the outage",
        )
        # Counted before the restart: the client may be back before restart() returns (it
        # connects as soon as the worker accepts, before /health says healthy).
        hellos_before = len(node.hellos())
        await asyncio.to_thread(worker.restart)
        back = time.monotonic()
        await node.wait_until(
            lambda: len(node.hellos()) > hellos_before, 60, "a reconnect after the restart"
        )
        reconnected = time.monotonic()
        hello = node.hellos()[-1]
        after = await publish_some(events, company, user, vid, 4, ("redis", "kafka"))
        await fleet.send_fix(vid, lat=61.0)
        everything = before + during + after
        want = {e.marker for e in everything}
        await node.wait_until(
            lambda: want <= {x["marker"] for x in node.replayable()}, 60, "every event"
        )
        await node.wait_until(
            lambda: any(line.get("lat") == 61.0 for line in node.lines), 20, "positions again"
        )
    finally:
        code = await node.stop()
        await r.aclose()

    assert code == 0, node.stderr[-10:]
    assert hello["recovered"] is True, hello
    assert hello["restoredSubscriptions"] == 3, hello
    got = node.replayable()
    markers = [x["marker"] for x in got]
    ids = [x["eventId"] for x in got]
    assert set(markers) == want, f"unexpected: {set(markers) - want}"
    assert len(markers) == len(set(markers)), "an event delivered twice (by its own id)"
    assert len(ids) == len(set(ids)), "an event delivered twice (by eventId)"
    assert ids == sorted(ids), "events out of eventId order"
    states = node.states()
    retries = [s for s in states if s["state"] == "reconnecting"]
    assert all(0 < s["delayMs"] <= 30_000 for s in retries), retries
    assert states[-1]["state"] == "closed" and states[-1]["code"] == 1000, states[-3:]
    done = node.lines[-1]
    assert done.get("done") == "stdin closed" and done["state"] == "closed", done
    print(
        f"\nSDK client, kill -9 + {outage_s:.0f} s outage: worker healthy again "
        f"{back - killed:.1f} s after the kill; client reconnected {reconnected - back:.1f} s "
        f"after that ({reconnected - killed:.1f} s after the kill) with recovered="
        f"{hello['recovered']}; {len(retries)} retries, delays "
        f"{[round(s['delayMs'] / 1000, 1) for s in retries]} s, reasons "
        f"{sorted({s.get('reason') or '' for s in retries})}; events expected {len(want)} "
        f"({len(before)} before, {len(during)} during, {len(after)} after), received "
        f"{len(markers)} (distinct {len(set(markers))}), duplicates dropped by the client "
        f"{done['duplicatesDropped']}"
    )
