"""The seed §8 JavaScript client (tests/e2e/seed_client.js running the TrackerWebSocket class of
tracker_ws/web/static/tracker-ws.js: verbatim, only the URL differs) recovers by lastEventId with
its own reconnect logic (issue 6).

(a) kill -9 of its instance and a restart on the same port: it retries on its own backoff
    (1 s, 2 s, 4 s, …; at most 5 attempts), reconnects with lastEventId and gets what was
    published meanwhile, nothing twice;
(b) behind a TCP proxy in front of three instances, a rolling restart (the proxy re-pointed
    before each SIGTERM, as a balancer would) and a network cut: nothing lost, nothing twice.

What it received is counted from the JSON lines its callbacks print.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from tests.conftest import Cluster, start_cluster
from tests.support.checks import peers_deliver_to, settled, warm_up_event_partitions
from tests.support.fleet import (
    Company,
    EventSource,
    FleetDriver,
    Replayable,
    new_id,
    publish_some,
    where_published,
)
from tests.support.node_seed import Line, NodeSeedClient, requires_node_seed
from tests.support.tcpproxy import TcpProxy
from tracker_ws_dev.stack import wait_for

pytestmark = requires_node_seed

KILL_DB = 9
PROXY_DB = 10
SUBSCRIPTIONS = [
    {"subscriptionType": "notifications", "filter": {"type": "all"}},
    {"subscriptionType": "geoEvents", "filter": {"type": "all"}},
]


class SeedNode(NodeSeedClient):
    """The seed client subscribed to notifications and geo events."""

    @classmethod
    async def subscribed(cls, ws_url: str, token: str) -> SeedNode:
        # A safety cap of 4 minutes: the test ends it by closing stdin.
        return await cls.start(ws_url, token, subscriptions=SUBSCRIPTIONS, duration_ms=240_000)

    def markers(self) -> list[str]:
        """Notification ids and geozone ids, from the callback lines, in order."""
        out = []
        for line in self.lines:
            if line.get("cb") == "notification":
                out.append(line["notification"]["id"])
            elif line.get("cb") == "geoEvent":
                out.append(line["event"]["geozoneId"])
        return out

    def callback_event_ids(self) -> list[int]:
        return [
            line["eventId"] for line in self.lines if line.get("cb") in ("notification", "geoEvent")
        ]


def check_exactly_once(
    node: SeedNode,
    published: list[Replayable],
    timeline: list[tuple[float, str]] | None = None,
    fates: list[str] | None = None,
) -> None:
    got = node.markers()
    want = {e.marker for e in published}
    missing = want - set(got)
    twice = {m for m in got if got.count(m) > 1}
    t0 = published[0].at if published else 0.0
    lost = [f"{e.at - t0:.1f}s {e.kind}/{e.source}" for e in published if e.marker in missing]
    assert not missing and not twice and set(got) == want, (
        f"{len(missing)} of {len(want)} missing, {len(twice)} twice, "
        f"{len(set(got) - want)} unexpected; missing: {lost} {fates or ''}; timeline: "
        f"{[(f'{t - t0:.1f}s', what) for t, what in timeline or []]}"
    )
    ids = node.callback_event_ids()
    assert ids == sorted(ids), "events out of eventId order"


def recoveries(node: SeedNode) -> list[tuple[float, Line]]:
    """(seconds since the previous message, `connected`) of every reconnect (ms clock of node)."""
    out = []
    raws = [line for line in node.lines if "raw" in line]
    for prev, line in itertools.pairwise(raws):
        if line["raw"]["type"] == "connected":
            out.append(((line["t"] - prev["t"]) / 1000, line["raw"]))
    return out


# ------------------------------------------------------------------------------ (a) kill -9


@pytest.fixture
def lone_worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{KILL_DB}").flushdb()
    cluster = start_cluster(
        1, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=KILL_DB
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
async def test_seed_client_recovers_after_kill_9_and_restart_of_its_instance(
    lone_worker: Cluster, fleet: FleetDriver
) -> None:
    (worker,) = lone_worker.workers
    r = aioredis.Redis.from_url(lone_worker.redis_url)
    company = Company()
    user = new_id()
    vid = new_id()
    await fleet.register(vid, company.company_id)
    events = EventSource(fleet.producer, r)
    node = await SeedNode.subscribed(worker.ws_url, company.token(user))
    try:
        await warm_up_event_partitions(fleet, worker)
        await node.wait_until(
            lambda: bool(node.raw("subscribed")) and len(node.raw("subscribed")) == 2,
            20,
            "subscribed",
        )
        before = await publish_some(events, company, user, vid, 6, ("redis", "kafka"))
        await node.wait_until(
            lambda: {e.marker for e in before} <= set(node.markers()), 20, "before"
        )

        def saved() -> bool:
            raw = redis_sync.Redis.from_url(lone_worker.redis_url).get(f"ws:state:{user}")
            return raw is not None and len(json.loads(raw)["subscriptions"]) == 2

        await asyncio.to_thread(wait_for, saved, 10.0, 0.05, "the saved state")
        killed = time.monotonic()
        await asyncio.to_thread(worker.kill)
        await asyncio.to_thread(worker.restart)
        restarted = time.monotonic() - killed
        # Published while the client waits for its next attempt: it must get them replayed.
        meanwhile = await publish_some(events, company, user, vid, 6, ("redis",))
        await node.wait_until(
            lambda: any(line["raw"].get("recovered") for line in node.raw("connected")),
            40,
            "a recovered reconnect",
        )
        back = time.monotonic() - killed
        after = await publish_some(events, company, user, vid, 4, ("redis", "kafka"))
        everything = before + meanwhile + after
        await node.wait_until(
            lambda: {e.marker for e in everything} <= set(node.markers()), 40, "everything"
        )
    finally:
        code = await node.stop()
        await r.aclose()
    hellos = node.raw("connected")
    assert len(hellos) >= 2, hellos
    last = hellos[-1]["raw"]
    assert last["recovered"] is True and last["restoredSubscriptions"] == 2, last
    check_exactly_once(node, everything)
    attempts = [line for line in node.stderr if "Reconnecting in" in line]
    print(
        f"\nseed client, kill -9: instance back after {restarted:.1f} s, client recovered "
        f"{back:.1f} s after the kill ({len(attempts)} reconnect timers: "
        f"{[a.split('Reconnecting in ')[1] for a in attempts]}); {len(everything)} events, "
        f"each once; exit code {code}"
    )


# ------------------------------------------------------------------------------ (b) proxy


@pytest.fixture
def proxied_cluster(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{PROXY_DB}").flushdb()
    cluster = start_cluster(
        3,
        broker_url=topics,
        redis_base_url=redis_url,
        log_dir=devstack_dir,
        db=PROXY_DB,
        parallel=True,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(240)
async def test_seed_client_behind_a_proxy_survives_a_rolling_restart_and_a_cut(
    proxied_cluster: Cluster, fleet: FleetDriver
) -> None:
    workers = proxied_cluster.workers
    r = aioredis.Redis.from_url(proxied_cluster.redis_url)
    await settled(workers, EventSource(fleet.producer, r))
    await warm_up_event_partitions(fleet, workers[0])
    company = Company()
    user = new_id()
    vid = new_id()
    await fleet.register(vid, company.company_id)
    events = EventSource(fleet.producer, r)
    canary = EventSource(fleet.producer, r)
    stop = asyncio.Event()
    timeline: list[tuple[float, str]] = []

    async def steady() -> None:
        i = 0
        while not stop.is_set():
            await publish_some(events, company, user, vid, 1, ("kafka" if i % 2 else "redis",))
            i += 1
            await asyncio.sleep(0.25)  # ~4 events per second

    async with TcpProxy([w.port for w in workers]) as proxy:
        node = await SeedNode.subscribed(proxy.url("/ws"), company.token(user))
        load = None
        try:
            await node.wait_until(lambda: len(node.raw("subscribed")) == 2, 20, "subscribed")
            load = asyncio.create_task(steady())
            # It has a lastEventId to come back with (with 0 the seed client starts afresh).
            await node.wait_until(lambda: len(node.markers()) >= 3, 20, "the first events")
            for i, worker in enumerate(workers):
                proxy.point_to((i + 1) % len(workers))  # new connections go elsewhere first
                timeline.append((time.monotonic(), f"SIGTERM {worker.instance_id[-1]}"))
                await asyncio.to_thread(worker.stop)
                timeline.append((time.monotonic(), "exited"))
                await asyncio.to_thread(worker.restart)
                timeline.append((time.monotonic(), "restarted"))
                await asyncio.to_thread(proxied_cluster.wait_balanced, 90.0)
                timeline.append((time.monotonic(), "balanced"))
                # Bug #2: only once its peers have noticed it does it get their events.
                await peers_deliver_to(worker, workers[(i + 1) % len(workers)], canary)
            await node.wait_until(lambda: len(node.raw("connected")) >= 4, 20, "3 reconnects")
            cut = proxy.cut_all()
            timeline.append((time.monotonic(), "cut"))
            await node.wait_until(
                lambda: len(node.raw("connected")) >= 5, 20, "reconnect after cut"
            )
            stop.set()
            await load
            with contextlib.suppress(AssertionError):  # check_exactly_once says what is missing
                await node.wait_until(
                    lambda: {e.marker for e in events.published} <= set(node.markers()),
                    40,
                    "every event",
                )
            seen = set(node.markers())
            fates = await where_published(r, [e for e in events.published if e.marker not in seen])
        finally:
            stop.set()
            if load is not None:
                with contextlib.suppress(Exception):
                    await load
            await node.stop()
            await r.aclose()
    hellos = [line["raw"] for line in node.raw("connected")]
    assert all(h.get("recovered") is True for h in hellos[1:]), hellos
    check_exactly_once(node, events.published, timeline, fates)
    times = [f"{gap:.1f} s" for gap, _ in recoveries(node)]
    print(
        f"\nseed client behind the proxy: {len(hellos) - 1} recovered reconnects (3 drains, "
        f"1 cut of {cut} connection), quiet time before each: {times}; "
        f"{len(events.published)} events, each once; backends used: {len(set(proxy.accepted))}"
    )
