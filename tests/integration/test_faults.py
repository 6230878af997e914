"""Faults with several instances: kill -9 of one of three, and a Redis stop/restart.

Each scenario starts its own cluster (own consumer group; own Redis database or own Redis
server) and stops everything it started, so the module-scoped `cluster3` of other tests is
untouched. Durations are measured and printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from aiokafka import AIOKafkaProducer

from tests.conftest import Cluster, cluster_on_own_redis, start_cluster
from tests.support.checks import live_positions, publish_failures
from tests.support.client import Msg, gather_close
from tests.support.cluster import (
    TimedClient,
    admin_token,
    frame_event_ids,
    http,
    interest,
    interest_of,
    key_space,
    redis_client,
    register_company,
    send_round,
    spread_ids,
    strictly_increasing,
    until,
    wait_round,
    warm_up,
)
from tests.support.fleet import FleetDriver, new_id
from tests.support.streams import read_partition
from tracker_ws.agents.positions import partition_of
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import Worker

KILL_DB = 5  # the kill test's Redis database (cluster3 uses 1, the session worker 0)
# Issue 11: after a kill -9 of 1 of 3, the dead instance's vehicles reach the survivors'
# clients again within FAILOVER_TARGET_S (session timeout + one rebalance on the embedded
# broker; measured 3.05–3.30 s). Timings are measured and printed; the test asserts only a
# limit that the old consumer-group settings (16 s) cannot pass, so a loaded machine does not
# turn a goal into a flaky test.
FAILOVER_TARGET_S = 5.0
FAILOVER_LIMIT_S = 8.0
RATE = 20.0  # fixes per second while an instance dies
BURST_RATE = 100.0  # fixes per second on the victim's partitions in its last half second
LAT0 = 10.0  # flowing fixes carry their sequence number in the latitude: LAT0 + seq / 1000


# ------------------------------------------------------------------------------ kill -9


class Flow:
    """Produces fixes round-robin over `vehicles` at `rate` per second until stopped. Flows
    sharing `sent` share one sequence (carried in the latitude), so the sequence is the
    production order across them."""

    def __init__(
        self,
        fleet: FleetDriver,
        vehicles: list[str],
        rate: float,
        sent: list[float] | None = None,
    ) -> None:
        self.fleet = fleet
        self.vehicles = vehicles
        self.rate = rate
        self.sent: list[float] = [] if sent is None else sent  # monotonic send time by seq
        self.mine: set[int] = set()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self.stop.is_set():
            seq = len(self.sent)
            self.sent.append(time.monotonic())
            self.mine.add(seq)
            await self.fleet.send_fix(self.vehicles[n % len(self.vehicles)], lat=LAT0 + seq / 1000)
            n += 1
            # Pace to the rate: the only thing to wait for here is the clock.
            ahead = started + n / self.rate - time.monotonic()
            if ahead > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), ahead)

    def sent_at(self, lat: float) -> float | None:
        seq = round((lat - LAT0) * 1000)
        return self.sent[seq] if 0 <= seq < len(self.sent) else None

    def carried(self, client: TimedClient) -> int:
        """How many of this flow's fixes the client received."""
        return sum(
            1
            for _, _, _, pos in client.position_arrivals()
            if round((pos["lat"] - LAT0) * 1000) in self.mine
        )


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """(longest gap between consecutive times within [start, end], when it began)."""
    points = [start, *(t for t in times if start <= t <= end), end]
    return max((b - a, a) for a, b in itertools.pairwise(points))


def twice(arrivals: list[tuple[float, int, str, dict[str, Any]]], among: set[str]) -> int:
    """Fixes of `among` delivered more than once."""
    pairs = [(v, p["lat"]) for _, _, v, p in arrivals if v in among]
    return len(pairs) - len(set(pairs))


def backwards(arrivals: list[tuple[float, int, str, dict[str, Any]]]) -> int:
    """How often a vehicle's position went back to a fix older (by its timestamp, the GPS
    agent's own out-of-order rule) than one already delivered."""
    newest: dict[str, datetime] = {}
    n = 0
    for _, _, vid, pos in arrivals:
        ts = datetime.fromisoformat(pos["timestamp"])
        if vid in newest and ts < newest[vid]:
            n += 1
        newest[vid] = max(newest.get(vid, ts), ts)
    return n


async def within(t0: float, pred: Callable[[], bool], timeout: float, what: str) -> float | None:
    """Seconds from `t0` until `pred` held, or None if it did not within `timeout`."""
    try:
        await until(pred, timeout, what)
    except TimeoutError:
        return None
    return time.monotonic() - t0


@dataclass
class KillRun:
    """What the clients on the survivors saw around a kill -9, and how long cleanup took."""

    dead: str
    victim_partitions: list[int]
    moved: set[str]  # vehicles whose partitions the dead instance owned
    fixes: int
    # seconds after the kill (None: not within 60 s)
    resumed: float | None
    rebalanced: float | None
    registry_cleaned: float | None
    interest_pruned: float | None
    stats_forgot: float | None
    # per watcher on a survivor
    watchers: list[dict[str, Any]] = field(default_factory=list)


async def _kill_scenario(cluster: Cluster, broker_url: str) -> KillRun:
    producer = AIOKafkaProducer(bootstrap_servers=devstack.bootstrap_servers(broker_url))
    await producer.start()
    try:
        return await _kill_with(cluster, FleetDriver(producer), broker_url)
    finally:
        await producer.stop()


async def _kill_with(cluster: Cluster, fleet: FleetDriver, broker_url: str) -> KillRun:
    victim, survivors = cluster.workers[2], cluster.workers[:2]
    dead = victim.instance_id
    company = await register_company(fleet, cluster.workers, spread_ids())
    victim_parts = sorted(victim.health()["partitions"])
    moved = {v for v in company.vehicles if partition_of(v, 12) in victim_parts}
    everything = set(company.vehicles)
    assert moved

    watchers: list[tuple[TimedClient, set[str]]] = []
    doomed: list[tuple[TimedClient, str]] = []  # (client, userId)
    flow = Flow(fleet, company.vehicles, RATE)
    burst = Flow(fleet, [], BURST_RATE)
    reading = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for w in survivors:
            for flt, want in (
                ({"type": "all"}, everything),
                ({"type": "byIds", "ids": sorted(moved)}, moved),
            ):
                c = await TimedClient.open(w, company.token())
                assert (await c.subscribe("vehicles", flt))["type"] == "subscribed"
                watchers.append((c, want))
        for flt in ({"type": "all"}, {"type": "byIds", "ids": sorted(moved)}):
            user = new_id()
            c = await TimedClient.open(victim, company.token(user))
            assert (await c.subscribe("vehicles", flt))["type"] == "subscribed"
            doomed.append((c, user))
        await warm_up(fleet, [*watchers, *((c, everything) for c, _ in doomed[:1])])

        # Before the kill: the victim is registered, has interest, and is in the stats.
        r = redis_client(cluster.redis_url)
        keys = key_space(cluster.redis_url)
        doomed_ids = {c.connection_id for c, _ in doomed}
        assert r.smembers(keys.instance_connections(dead)) == doomed_ids
        for c, user in doomed:
            assert r.hget(f"ws:conn:user:{user}", c.connection_id).startswith(f"{dead}:")
        company_key = f"company:{company.company_id}"
        coarse = {
            k: set(ids)
            for w in cluster.workers
            for k, ids in interest(w).items()
            if k.startswith(company_key + "#")
        }
        all_three = {x.instance_id for x in cluster.workers}
        assert coarse == {f"{company_key}#p{p}": all_three for p in range(12)}, coarse
        _, body = http("GET", survivors[0].url + "/api/v1/ws/stats", token=admin_token())
        assert {row["instanceId"] for row in body["instanceStats"]} == all_three, body

        # Fixes flow; the survivors' clients read in the background.
        tasks = [asyncio.create_task(c.pump(reading)) for c, _ in watchers]
        tasks.append(asyncio.create_task(flow.run()))
        baseline = time.monotonic()
        await until(lambda: len(flow.sent) >= 2 * RATE, 10, "two seconds of fixes")
        # Plus a burst on the victim's partitions until the kill, so that it always dies with
        # fixes it published after its last offset commit (commit interval 1 s).
        burst = Flow(fleet, sorted(moved), BURST_RATE, flow.sent)
        tasks.append(asyncio.create_task(burst.run()))
        on_moved = next(c for c, want in watchers if want == moved)
        await until(lambda: burst.carried(on_moved) >= BURST_RATE / 2, 10, "the burst delivered")

        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)
        burst.stop.set()
        assert not victim.alive()

        def registry_clean() -> bool:
            if r.exists(keys.instance_connections(dead)) or dead in r.smembers(keys.instances):
                return False
            for key in r.scan_iter(match="ws:conn:user:*"):
                values = r.hgetall(key)
                if doomed_ids & set(values):
                    return False
                if any(v.startswith(f"{dead}:") for v in values.values()):
                    return False
            return True

        survivor_ids = {w.instance_id for w in survivors}

        def interest_pruned() -> bool:
            try:
                tables = [interest(w) for w in survivors]
            except AssertionError:
                return False
            merged = {k: set(v) for t in tables for k, v in t.items()}
            # Meaningful only with every partition owned again and the survivors' own
            # interest intact on each of them.
            whole = all(merged.get(f"{company_key}#p{p}") == survivor_ids for p in range(12))
            return whole and not any(dead in ids for ids in merged.values())

        def stats_forget() -> bool:
            for w in survivors:
                status, body = http("GET", w.url + "/api/v1/ws/stats", token=admin_token())
                if status != 200:
                    return False
                listed = {row["instanceId"] for row in body["instanceStats"]}
                if dead in listed or dead in body["unreachable"]:
                    return False
                if listed != survivor_ids or body["totalConnections"] != len(watchers):
                    return False
            return True

        def balanced() -> bool:
            try:
                cluster.wait_balanced(0.1)
            except TimeoutError:
                return False
            return True

        def resumed() -> bool:
            # Every watcher got a fix of a moved vehicle produced after the kill.
            return all(
                any(
                    vid in moved and (flow.sent_at(pos["lat"]) or 0) > killed_at
                    for _, _, vid, pos in c.position_arrivals()
                )
                for c, _ in watchers
            )

        timings = await asyncio.gather(
            within(killed_at, resumed, 60, "delivery of moved vehicles to resume"),
            within(killed_at, balanced, 60, "partitions balanced on the survivors"),
            within(killed_at, registry_clean, 60, "the dead instance's registry"),
            within(killed_at, interest_pruned, 60, "the dead instance's interest"),
            within(killed_at, stats_forget, 60, "stats to forget the dead instance"),
        )
        flow.stop.set()
        reading.set()
        await asyncio.gather(*tasks)
        ended = time.monotonic()
        if timings[3] is None:  # say what is left of the interest, and who owns what
            merged = interest_of(survivors)
            for p in range(12):
                got = set(merged.get(f"{company_key}#p{p}", []))
                stale = sorted(
                    k for k, ids in merged.items() if k.endswith(f"#p{p}") and dead in ids
                )
                if got != survivor_ids or stale:
                    owner = cluster.owner_of_partition(p)
                    print(
                        f"  p{p} owned by {owner and owner.instance_id}: {company_key} -> "
                        f"{sorted(got)}; entries still naming the dead instance: {stale[:4]}"
                    )
                    changes = await read_partition(broker_url, "ws-subscription-changes", p)
                    print(
                        f"    ws-subscription-changes[{p}]: "
                        + "; ".join(
                            f"{o} {v.decode()}"
                            for o, _, v in changes
                            if b"company:" in v or b"reset" in v
                        )
                    )
                    changelog = await read_partition(
                        broker_url, f"{cluster.app_id}-subscriptions-changelog", p
                    )
                    print(
                        f"    changelog[{p}]: "
                        + "; ".join(
                            f"{o} {k.decode()}={v and v.decode()}"
                            for o, k, v in changelog
                            if b"company:" in k
                        )
                    )

        # Afterwards one more round, which every watcher must get, from the new owners too.
        await send_round(fleet, company.vehicles, lat=85.0)
        run = KillRun(dead, victim_parts, moved, len(flow.sent), *timings)
        for c, want in watchers:
            try:
                await wait_round(c, want, 85.0, timeout=20)
                final = True
            except AssertionError:
                final = False
            arrivals = c.position_arrivals()
            every = [t for t, *_ in arrivals]
            gap, began = longest_gap(every, killed_at, ended)
            run.watchers.append(
                {
                    "final_round": final,
                    "closed": c.closed_code,
                    "want": want,
                    "seen": c.vehicles_seen(),
                    "frame_ids": frame_event_ids(c),
                    "gap_before": longest_gap(every, baseline, killed_at)[0],
                    "gap": gap,
                    "gap_began": began - killed_at,
                    "gap_moved": longest_gap(
                        [t for t, _, v, _ in arrivals if v in moved], killed_at, ended
                    )[0],
                    "gap_kept": longest_gap(
                        [t for t, _, v, _ in arrivals if v not in moved], killed_at, ended
                    )[0]
                    if want != moved
                    else 0.0,
                    # The first fix of a moved vehicle produced after the kill, by arrival.
                    "back_after": min(
                        (
                            t - killed_at
                            for t, _, v, p in arrivals
                            if v in moved and (flow.sent_at(p["lat"]) or 0) > killed_at
                        ),
                        default=None,
                    ),
                    "twice": len(arrivals) - len({(v, p["lat"]) for _, _, v, p in arrivals}),
                    "twice_moved": twice(arrivals, moved),
                    "back": backwards(arrivals),
                }
            )
        _report(run)
        return run
    finally:
        flow.stop.set()
        burst.stop.set()
        reading.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gather_close(*(c for c, _ in watchers), *(c for c, _ in doomed))


def back_on_all(run: KillRun) -> float | None:
    """Seconds from the kill until every watcher had received a fix of a moved vehicle
    produced after the kill (arrival times taken by the clients; None: one never did)."""
    backs = [w["back_after"] for w in run.watchers]
    return None if None in backs else max(backs)


def _report(run: KillRun) -> None:
    rows = run.watchers
    worst = max(rows, key=lambda row: row["gap"])

    def secs(v: float | None) -> str:
        return "NOT within 60 s" if v is None else f"{v:.2f} s"

    print(
        f"\nkill -9 of {run.dead} (owned partitions {run.victim_partitions}), "
        f"{run.fixes} fixes at {RATE:g}/s (+{BURST_RATE:g}/s on its partitions for the last "
        f"half second), {len(rows)} clients on the survivors:\n"
        f"  longest delivery gap before the kill: {max(r['gap_before'] for r in rows):.2f} s\n"
        f"  rebalance pause (longest gap after the kill, any vehicle): {worst['gap']:.2f} s, "
        f"from {worst['gap_began']:+.2f} s after the kill\n"
        f"  longest gap of the dead instance's vehicles (from the kill): "
        f"{max(r['gap_moved'] for r in rows):.2f} s; of the survivors' own vehicles: "
        f"{max(r['gap_kept'] for r in rows):.2f} s\n"
        f"  fixes delivered twice after the rebalance: {max(r['twice'] for r in rows)} per "
        f"client at most ({max(r['twice_moved'] for r in rows)} of the dead instance's "
        f"{len(run.moved)} vehicles); a vehicle went back to an older fix "
        f"{max(r['back'] for r in rows)} times per client at most\n"
        f"  the dead instance's vehicles back on every survivor's clients "
        f"{secs(back_on_all(run))} after the kill (target {FAILOVER_TARGET_S:g} s)\n"
        f"  after the kill: delivery resumed {secs(run.resumed)}, partitions rebalanced "
        f"{secs(run.rebalanced)}, registry cleaned {secs(run.registry_cleaned)}, interest "
        f"pruned {secs(run.interest_pruned)}, stats forgot it {secs(run.stats_forgot)}"
    )


@pytest.fixture(scope="module")
def kill_run(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[KillRun]:
    """Three instances of their own (own group, own Redis database); one is killed with
    SIGKILL while fixes flow at 20/s for vehicles on every partition (and a burst on its own
    partitions, so it dies with uncommitted work). Run once, checked by the tests below."""
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{KILL_DB}").flushdb()
    cluster = start_cluster(
        3, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=KILL_DB,
        parallel=True,
    )  # fmt: skip
    try:
        yield asyncio.run(_kill_scenario(cluster, topics))
    finally:
        cluster.stop()


def test_kill_9_clients_on_the_survivors_keep_receiving_in_order(kill_run: KillRun) -> None:
    assert kill_run.resumed is not None, "the dead instance's vehicles never came back"
    back = back_on_all(kill_run)
    assert back is not None and back <= FAILOVER_LIMIT_S, (
        f"the dead instance's vehicles came back {back} s after the kill "
        f"(target {FAILOVER_TARGET_S:g} s, limit {FAILOVER_LIMIT_S:g} s)"
    )
    for w in kill_run.watchers:
        assert w["closed"] is None
        assert w["final_round"], "a round produced after the failover did not arrive"
        assert w["seen"] == w["want"]
        assert strictly_increasing(w["frame_ids"]), w["frame_ids"]
        assert w["gap_before"] < 2.0
    # Whatever the rebalance takes, it is bounded well below the 60 s budget.
    assert max(w["gap"] for w in kill_run.watchers) < 60


def test_kill_9_dead_instance_is_cleaned_up_within_60_s(kill_run: KillRun) -> None:
    assert kill_run.rebalanced is not None, "the survivors never took every partition"
    assert kill_run.registry_cleaned is not None, "registry entries left in Redis"
    assert kill_run.interest_pruned is not None, "interest entries left in the table"
    assert kill_run.stats_forgot is not None, "stats still list or wait for the dead instance"


def test_kill_9_no_fix_is_delivered_twice_after_the_failover(kill_run: KillRun) -> None:
    assert [(w["twice"], w["back"]) for w in kill_run.watchers] == [(0, 0)] * len(kill_run.watchers)


# ------------------------------------------------------------------------------ Redis restart


@pytest.fixture(scope="module")
def own_redis_pair(
    topics: str, devstack_dir: Path
) -> Iterator[tuple[devstack.RedisServer, Cluster]]:
    """Two instances behind a Redis server of their own, which the test stops and restarts."""
    with cluster_on_own_redis(2, broker_url=topics, log_dir=devstack_dir, parallel=True) as pair:
        yield pair


LIVENESS_FAILED = "liveness check failed"  # tracker_ws/cluster.py's warning


def log_count(worker: Worker, text: str) -> int:
    return worker.process.read_log().count(text)


async def healthy(
    pair: tuple[devstack.RedisServer, Cluster],
) -> tuple[devstack.RedisServer, Cluster]:
    """The pair with Redis running (an earlier test may have failed while it was down)."""
    server, cluster = pair
    await asyncio.to_thread(server.ensure_running)
    await until(lambda: health_is(cluster.workers, 200), 30, "/health 200 on both instances")
    return server, cluster


def health_is(workers: list[Worker], code: int, **fields: str) -> bool:
    for w in workers:
        got = devstack.health_status(w.url)
        if got is None or got[0] != code:
            return False
        if any(got[1].get(k) != v for k, v in fields.items()):
            return False
    return True


async def test_redis_restart_degrades_health_then_recovers_delivery_by_itself(
    own_redis_pair: tuple[devstack.RedisServer, Cluster], fleet: FleetDriver
) -> None:
    server, cluster = await healthy(own_redis_pair)
    company = await register_company(fleet, cluster.workers, spread_ids())
    vid = company.vehicles[0]
    owner = cluster.owner_of(vid)
    other = next(w for w in cluster.workers if w is not owner)
    pids = {w.instance_id: w.process.pid for w in cluster.workers}
    remote = await TimedClient.open(other, company.token())  # fed through Redis pub/sub
    local = await TimedClient.open(owner, company.token())
    clients = [remote, local]
    try:
        for c in clients:
            await c.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        await warm_up(fleet, [(c, {vid}) for c in clients])
        before = max(max(frame_event_ids(c)) for c in clients)

        ticks = {w: log_count(w, LIVENESS_FAILED) for w in cluster.workers}
        stopped = time.monotonic()
        await asyncio.to_thread(server.stop)
        degraded = await until(
            lambda: health_is(cluster.workers, 503, status="degraded", redis="unreachable"),
            15,
            "/health 503 with redis unreachable on both instances",
        )
        got = devstack.health_status(other.url)
        assert got is not None and got[1]["broker"] == "ok" and got[1]["instanceId"], got
        # Keep Redis away until it has really been missed: the owner failed to publish a fix,
        # and both instances' janitors failed a liveness tick (so a few reconnect attempts of
        # the delivery subscription have failed as well).
        failed = publish_failures(owner)
        await fleet.send_fix(vid, lat=-1.0)
        await until(lambda: publish_failures(owner) > failed, 15, "a failed publish")
        await until(
            lambda: all(log_count(w, LIVENESS_FAILED) > ticks[w] for w in cluster.workers),
            15,
            "a failed liveness tick on both instances",
        )

        await asyncio.to_thread(server.restart)  # same port, empty data
        up = time.monotonic()
        recovered = await until(
            lambda: health_is(cluster.workers, 200, status="healthy", redis="ok"),
            30,
            "/health 200 on both instances",
        )

        # Delivery resumes by itself: keep producing until the first fresh fix arrives.
        n = 0
        while True:
            assert time.monotonic() - up < 30, "delivery did not resume within 30 s"
            await fleet.send_fix(vid, lat=60.0 + n / 1000)
            n += 1
            try:
                for c in clients:
                    await c.wait_for(
                        lambda m: any(
                            p["lat"] >= 60.0 for _, v, p in live_positions(m) if v == vid
                        ),
                        0.3,
                    )
                break
            except AssertionError:
                continue
        delivering = time.monotonic() - up

        # And then every fix, in order, on both instances.
        for i in range(10):
            await fleet.send_fix(vid, lat=70.0 + i)

            def live_at(m: Msg, lat: float = 70.0 + i) -> bool:
                return any(p["lat"] == lat for _, _, p in live_positions(m))

            for c in clients:
                await c.wait_for(live_at, 10)
        for c in clients:
            assert c.closed_code is None
            after = [
                m["eventId"]
                for m in c.received
                if any(p["lat"] >= 70.0 for _, _, p in live_positions(m))
            ]
            assert strictly_increasing(after), after
        assert {w.instance_id: w.process.pid for w in cluster.workers} == pids
        assert all(w.alive() for w in cluster.workers)

        # The admin API sees both instances again (liveness re-announced by the heartbeat).
        ids = {w.instance_id for w in cluster.workers}

        def both_listed() -> bool:
            status, body = http("GET", other.url + "/api/v1/ws/stats", token=admin_token())
            return status == 200 and {r["instanceId"] for r in body["instanceStats"]} == ids

        listed = await until(both_listed, 20, "stats listing both instances")
        print(
            f"\nRedis stop -> both /health 503: {degraded:.2f} s; "
            f"restart -> both /health 200: {recovered:.2f} s; "
            f"restart -> delivery resumed on both instances: {delivering:.2f} s; "
            f"stats list both again {listed:.2f} s later "
            f"(outage {up - stopped:.2f} s; eventIds before {before}, "
            f"after {max(frame_event_ids(remote))})"
        )
    finally:
        await gather_close(*clients)


async def test_registry_is_rebuilt_after_redis_comes_back_empty(
    own_redis_pair: tuple[devstack.RedisServer, Cluster], fleet: FleetDriver
) -> None:
    server, cluster = await healthy(own_redis_pair)
    company = await fleet.company(1)
    here = cluster.workers[0]
    user = new_id()
    client = await TimedClient.open(here, company.token(user))
    path = f"{cluster.workers[1].url}/api/v1/ws/users/{user}/connections"
    r = redis_sync.Redis.from_url(server.url, decode_responses=True)
    members = f"ws:instance:{here.instance_id}:connections"

    def registered() -> bool:
        status, body = http("GET", path, token=admin_token())
        listed = status == 200 and [c["id"] for c in body["connections"]] == [client.connection_id]
        return listed and r.sismember(members, client.connection_id) == 1

    try:
        await until(registered, 10, "the connection in the registry")
        ticks = {w: log_count(w, LIVENESS_FAILED) for w in cluster.workers}
        await asyncio.to_thread(server.stop)
        await until(
            lambda: all(log_count(w, LIVENESS_FAILED) > ticks[w] for w in cluster.workers),
            15,
            "a failed liveness tick on both instances",
        )
        await asyncio.to_thread(server.restart)  # same port, empty data
        await until(lambda: health_is(cluster.workers, 200), 30, "/health 200")
        pong = await client.request({"type": "ping"}, "pong")
        assert pong["eventId"] == 0 and client.closed_code is None
        # A few janitor ticks (every 3 s) are plenty to re-announce what is still connected.
        took = await until(registered, 10, "the live connection back in the registry")
        print(f"\nregistry rebuilt {took:.2f} s after Redis came back")
    finally:
        await client.close()
