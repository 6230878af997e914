"""Rolling restart of three instances under steady load (issue 6, ARCHITECTURE §3).

Each instance in turn gets SIGTERM (health 503 "draining", a systemAlert and close 1012 for
every client, staggered by TRACKER_WS_DRAIN_RATE), exits, is restarted on its port and waits
until the cluster is balanced again. 60 clients reconnect like the seed §8 client (1 s after
the close, to a random instance, lastEventId = max(eventId) seen, subscribes re-sent) while
fixes flow at ~20/s and replayable events at ~5/s (Kafka topics and Redis channels). Checked:
no replayable event lost or repeated, eventIds never go backwards within a connection, the
drain's health answer, alert-before-close and staggering; printed: the longest gap in position
delivery any client saw. Seed: ROLLING_SEED=<n>.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from tests.conftest import Cluster, start_cluster
from tests.support.checks import (
    fix_until_followers_hold,
    peers_deliver_to,
    round_lat,
    run_seed,
    settled,
    warm_up_event_partitions,
)
from tests.support.client import ConnectFailed, Msg, SeedLikeClient, is_replayable
from tests.support.cluster import why_positions_missing
from tests.support.fleet import (
    Company,
    EventSource,
    FleetDriver,
    entitled,
    fix,
    marker_of,
    new_id,
    where_published,
)
from tracker_ws_dev.stack import Worker, wait_for

DB = 8
DRAIN_RATE = 20  # closes per second while draining
CLIENTS = 60
FIXES_PER_TICK = 3  # per 50 ms tick: ~50 fixes/s, each of the 24 vehicles every ~0.45 s
# Issue 11: no client should go longer than POSITION_GAP_TARGET_S without a position during
# the rolling restart (its own reconnect, the hand-over of the stopping instance's partitions,
# the rejoin). Measured 2.4–2.6 s with 3.2–3.3 s in 3 of 20 runs when a follower asked for its
# assignment before the leader (kafka/rejoin.py); since, 2.5–2.7 s, the longest always in the
# restarted instance's own partitions as it joins. The gaps are printed; the test asserts only
# a limit that the old consumer-group settings (10–41 s) cannot pass.
POSITION_GAP_TARGET_S = 3.0
MAX_POSITION_GAP_S = 8.0


Sub = tuple[str, dict[str, Any]]
ALL: dict[str, Any] = {"type": "all"}


@pytest.fixture(scope="module")
def rolling_cluster(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}").flushdb()
    cluster = start_cluster(
        3,
        broker_url=topics,
        redis_base_url=redis_url,
        log_dir=devstack_dir,
        db=DB,
        env={"TRACKER_WS_DRAIN_RATE": str(DRAIN_RATE)},
        parallel=True,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster(rolling_cluster: Cluster):  # type: ignore[no-untyped-def]
    """Every worker alive, balanced and hearing its peers (bug #2), before and after."""

    def revive() -> None:
        for w in rolling_cluster.workers:
            if not w.alive():
                w.restart()
        rolling_cluster.wait_balanced()

    await asyncio.to_thread(revive)
    r = aioredis.Redis.from_url(rolling_cluster.redis_url)
    try:
        await settled(rolling_cluster.workers, EventSource(None, r))  # type: ignore[arg-type]
        yield rolling_cluster
        await asyncio.to_thread(revive)
    finally:
        await r.aclose()


@pytest.fixture
async def redis_db(rolling_cluster: Cluster):  # type: ignore[no-untyped-def]
    r = aioredis.Redis.from_url(rolling_cluster.redis_url)
    yield r
    await r.aclose()


async def register(fleet: FleetDriver, workers: list[Worker], n: int) -> Company:
    before = {w.instance_id: int(w.health().get("registryVehicles", 0)) for w in workers}
    company = await fleet.company(n)

    def known() -> bool:
        return all(
            int(w.health().get("registryVehicles", 0)) >= before[w.instance_id] + n for w in workers
        )

    await asyncio.to_thread(wait_for, known, 20.0, 0.1, "vehicles in every registry")
    return company


def health_raw(worker: Worker) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, body) of /health, None when nothing answers."""
    try:
        with urllib.request.urlopen(worker.url + "/health", timeout=1) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")
    except OSError:
        return None


# ------------------------------------------------------------------------------ the clients


@dataclass
class Rider:
    """One seed-like client and its subscriptions."""

    name: str
    user: str
    company: Company
    subs: list[Sub]
    client: SeedLikeClient
    hellos: list[Msg] = field(default_factory=list)
    closes: collections.Counter[int | None] = field(default_factory=collections.Counter)
    refused: int = 0

    @property
    def vehicles(self) -> set[str]:
        return {v for t, f in self.subs if t == "vehicles" for v in f.get("ids", ())}


class Deploy:
    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.eligible = list(cluster.workers)
        self.stopping = False
        self.drains: list[dict[str, Any]] = []

    def worker_of(self, conn_url: str) -> Worker:
        return self.cluster.worker_at(conn_url)


async def ride(deploy: Deploy, r: Rider, rng: random.Random) -> None:
    """Like the seed client: on close, reconnect after 1 s (then 2 s, 4 s, … on failures)."""
    while True:
        conn = r.client.conn
        await conn.done.wait()
        r.closes[conn.close_code] += 1
        if deploy.stopping and conn.close_code == 1000:
            return
        delay = 1.0
        for _attempt in range(5):
            await asyncio.sleep(delay)  # the seed client's reconnect timer
            worker = rng.choice(deploy.eligible)
            try:
                r.hellos.append(await r.client.open(worker.ws_url))
                break
            except ConnectFailed:
                r.refused += 1
                delay *= 2
        else:
            raise AssertionError(f"{r.name}: max reconnect attempts reached")


async def load(
    deploy: Deploy,
    riders: list[Rider],
    companies: list[Company],
    events: EventSource,
    fleet: FleetDriver,
    stop: asyncio.Event,
) -> int:
    """Fixes at ~50/s, round-robin over every vehicle (each gets one about every 0.45 s, so
    a client's longest gap is the service's pause plus at most that, not a lull of a random
    load), and replayable events at ~5/s; returns the number of fixes."""
    rng = random.Random(deploy.rng.random())
    users = [r.user for r in riders]
    order = [v for c in companies for v in c.vehicles]
    rng.shuffle(order)
    fixes = 0
    for tick in itertools.count():
        if stop.is_set():
            return fixes
        if tick % 4 == 0:
            kind = rng.choice(["notif", "notif", "geo", "maint", "alert"])
            source = rng.choice(["kafka", "redis"])
            company = rng.choice(companies)
            if kind == "notif":
                await events.notification(rng.choice(users), source=source)
            elif kind == "geo":
                await events.geo(company.company_id, rng.choice(company.vehicles), source=source)
            elif kind == "maint":
                vid = rng.choice(company.vehicles)
                await events.maintenance(company.company_id, vid, source=source)
            else:
                await events.alert([company.company_id], source=source)
        for _ in range(FIXES_PER_TICK):
            vid = order[fixes % len(order)]
            value = orjson.dumps(fix(vid, lat=round(50 + rng.random(), 6)))
            await fleet.producer.send("gps-events", key=vid.encode(), value=value)
            fixes += 1
        await asyncio.sleep(0.05)  # the load's pace
    return fixes


async def drain_and_restart(deploy: Deploy, worker: Worker, canary: EventSource) -> None:
    """SIGTERM one instance while watching its /health; restart; balanced; peers hear it."""
    deploy.eligible.remove(worker)
    seen: list[tuple[float, int, str]] = []
    done = asyncio.Event()

    async def watch_health() -> None:
        while not done.is_set():
            got = await asyncio.to_thread(health_raw, worker)
            if got is not None:
                seen.append((time.monotonic(), got[0], str(got[1].get("status"))))
            await asyncio.sleep(0.05)  # polling /health is the observation itself

    watcher = asyncio.create_task(watch_health())
    started = time.monotonic()
    try:
        await asyncio.to_thread(worker.stop, 30.0)
    finally:
        done.set()
        await watcher
    stopped = time.monotonic()
    await asyncio.to_thread(worker.restart)
    await asyncio.to_thread(deploy.cluster.wait_balanced, 90.0)
    back = time.monotonic()
    # Bug #2: until its peers have noticed it, a restarted instance misses their events.
    await peers_deliver_to(worker, deploy.eligible[0], canary)
    deploy.eligible.append(worker)
    deploy.drains.append(
        {
            "worker": worker,
            "started": started,
            "stopped": stopped,
            "back": back,
            "health": seen,
        }
    )
    print(
        f"  {worker.instance_id}: SIGTERM → exit {stopped - started:.1f} s, restart + balanced "
        f"{back - stopped:.1f} s, peers deliver to it {time.monotonic() - back:.1f} s later"
    )


def random_subs(rng: random.Random, company: Company) -> list[Sub]:
    subs: list[Sub] = [("notifications", ALL)]
    for stype in ("geoEvents", "maintenance"):
        x = rng.random()
        if x < 0.4:
            subs.append((stype, ALL))
        elif x < 0.7:
            subs.append((stype, {"type": "byIds", "ids": sorted(rng.sample(company.vehicles, 3))}))
    if rng.random() < 0.5:
        subs.append(("systemAlerts", ALL))
    subs.append(("vehicles", {"type": "byIds", "ids": sorted(rng.sample(company.vehicles, 3))}))
    return subs


async def positions_flowing(fleet: FleetDriver, riders: list[Rider]) -> None:
    """Rounds of fixes until every client got a live position of each of its vehicles (the
    subscriptions have reached the partition owners)."""
    vehicles = sorted({v for r in riders for v in r.vehicles})

    def live(r: Rider) -> set[str]:
        return {
            p["vehicleId"] if m["type"] == "positionBatch" else m["vehicleId"]
            for m in r.client.messages()
            if m["type"] in ("position", "positionBatch") and m["eventId"]
            for p in (m.get("positions") or [m])
        }

    for n in range(40):
        for v in vehicles:
            value = orjson.dumps(fix(v, lat=round(40 + n / 1000, 6)))
            await fleet.producer.send("gps-events", key=v.encode(), value=value)
        await fleet.producer.flush()
        with contextlib.suppress(AssertionError):
            await riders[0].client.wait_for(lambda: all(r.vehicles <= live(r) for r in riders), 1.0)
            return
    raise AssertionError("positions never reached every client")


def position_times(client: SeedLikeClient) -> list[float]:
    return [
        t
        for c in client.connections
        for t, m in c.messages
        if m.get("type") in ("position", "positionBatch")
        and (m.get("positions") or "vehicleId" in m)
    ]


def position_gap(client: SeedLikeClient, start: float, end: float) -> tuple[float, float]:
    """(longest stretch within [start, end] without a position frame, when it began)."""
    times = [start, *(t for t in position_times(client) if start <= t <= end), end]
    return max((b - a, a) for a, b in itertools.pairwise(sorted(times)))


def deploy_timeline(deploy: Deploy, t0: float) -> str:
    """When each instance got SIGTERM, exited and was back (balanced), from `t0`."""
    return "; ".join(
        f"{d['worker'].instance_id.rsplit('-', 1)[-1]}: SIGTERM {d['started'] - t0:+.1f}, "
        f"exit {d['stopped'] - t0:+.1f}, back {d['back'] - t0:+.1f}"
        for d in deploy.drains
    )


def describe_gap(gap: float, began: float, r: Rider, deploy: Deploy, t0: float) -> str:
    """One client's longest gap with its connections around it, for the failure message."""
    conns = "; ".join(
        f"{deploy.worker_of(c.url).instance_id.rsplit('-', 1)[-1]} "
        f"{c.messages[0][0] - t0 if c.messages else float('nan'):+.1f}.."
        f"{(c.closed_at or float('nan')) - t0:+.1f} ({c.close_code})"
        for c in r.client.connections
    )
    return (
        f"  {r.name}: {gap:.2f} s from {began - t0:+.2f} s; vehicles {sorted(r.vehicles)}; "
        f"connections {conns}"
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "fixed_seed",
    [
        # A known seed in the default suite, a new one each run under `make soak`.
        pytest.param(4189760921, id="seeded"),
        pytest.param(None, id="random", marks=pytest.mark.soak),
    ],
)
async def test_rolling_restart_under_load_loses_nothing(
    cluster: Cluster, fleet: FleetDriver, redis_db: aioredis.Redis, fixed_seed: int | None
) -> None:
    seed = run_seed("ROLLING_SEED", fixed_seed)
    print(f"\nROLLING_SEED={seed}")
    rng = random.Random(seed)
    deploy = Deploy(cluster, rng)
    w0 = cluster.workers[0]
    companies = [await register(fleet, cluster.workers, 8) for _ in range(3)]
    events = EventSource(fleet.producer, redis_db)
    canary = EventSource(fleet.producer, redis_db)
    riders = []
    for i in range(CLIENTS):
        company = companies[i % 3]
        user = new_id()
        subs = random_subs(rng, company)
        riders.append(
            Rider(
                f"c{i}",
                user,
                company,
                subs,
                SeedLikeClient(company.token(user), subs, name=f"c{i}"),
            )
        )
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    try:
        # Everyone on the first instance to be restarted: its drain closes all 60.
        for r in riders:
            await r.client.open(w0.ws_url)
        for r in riders:

            def all_subscribed(r: Rider = r) -> bool:
                return r.client.replies() == len(r.subs)

            await r.client.wait_for(all_subscribed, 10)
        await warm_up_event_partitions(fleet, w0)
        await positions_flowing(fleet, riders)  # every client has a lastEventId to come back with
        started = time.monotonic()
        tasks = [asyncio.create_task(ride(deploy, r, random.Random(rng.random()))) for r in riders]
        producer = asyncio.create_task(load(deploy, riders, companies, events, fleet, stop))
        for worker in cluster.workers:
            await drain_and_restart(deploy, worker, canary)
        stop.set()
        fixes = await producer
        load_ended = time.monotonic()
        # Everyone connected again, then everything owed has arrived (or the deadline).
        deadline = time.monotonic() + 30
        for r in riders:
            while not r.client.conn.open or r.client.conn.hello is None:
                assert time.monotonic() < deadline, f"{r.name} is not connected"
                await asyncio.sleep(0.1)
        owed = {
            r.name: [
                e for e in events.published if entitled(e, r.user, r.company.company_id, r.subs)
            ]
            for r in riders
        }
        for r in riders:
            want = {e.marker for e in owed[r.name]}

            def got_owed(r: Rider = r, w: set[str] = want) -> bool:
                return w <= set(r.client.markers())

            with contextlib.suppress(AssertionError):
                await r.client.wait_for(got_owed, max(0.1, deadline - time.monotonic()))
        # The last position of each vehicle reaches every client that follows it (checked
        # below, with everything else owed).
        followers = [(r.client, r.vehicles) for r in riders]
        rounds = 20
        if not await fix_until_followers_hold(fleet, followers, rounds):
            last = round_lat(rounds - 1)
            why = await asyncio.to_thread(why_positions_missing, cluster, followers, last)
            print("final positions missing:\n  " + "\n  ".join(why))
    finally:
        stop.set()
        deploy.stopping = True
        for t in tasks:
            t.cancel()
        for r in riders:
            await r.client.shutdown()

    problems: list[str] = []
    # Replayable events: all owed, once each, in eventId order across reconnects.
    covered = 0
    for r in riders:
        got = [(m["eventId"], marker_of(m)) for m in r.client.messages() if is_replayable(m)]
        want = {e.marker for e in owed[r.name]}
        covered += len(want)
        markers = [mk for _, mk in got]
        ids = [i for i, _ in got]
        if set(markers) != want or len(markers) != len(set(markers)) or ids != sorted(ids):
            missing = [e for e in owed[r.name] if e.marker not in set(markers)]
            problems.append(
                f"{r.name}: {len(want - set(markers))} of {len(want)} owed missing "
                f"{await where_published(redis_db, missing)}, "
                f"{len(markers) - len(set(markers))} repeated, "
                f"{len(set(markers) - want)} not owed, in order: {ids == sorted(ids)}"
            )
        for h in r.hellos:
            if not (h.get("recovered") is True and h.get("restoredSubscriptions") == len(r.subs)):
                problems.append(f"{r.name}: not recovered: {h}")
        if any(r.client.last_positions().get(v, 0) < 80 for v in r.vehicles):
            problems.append(f"{r.name}: final positions {r.client.last_positions()}")
    # eventIds never go backwards within one connection (replayable events and positions).
    backwards: list[str] = []
    for r in riders:
        for c in r.client.connections:
            ids = [(m["eventId"], m["type"]) for _, m in c.messages if m.get("eventId")]
            for (a, ta), (b, tb) in itertools.pairwise(ids):
                if b < a:
                    backwards.append(f"{r.name}: {ta} {a} then {tb} {b}")
    if backwards:
        problems.append(f"eventId went backwards {len(backwards)} times: {backwards[:5]}")

    # Drains: 503 "draining" while it lasted; an alert before every 1012; staggered closes.
    for d in deploy.drains:
        statuses = {(code, status) for _, code, status in d["health"]}
        if (503, "draining") not in statuses:
            problems.append(f"{d['worker'].instance_id}: /health during drain: {statuses}")
    restarts_closes: list[tuple[float, str, Worker]] = []
    for r in riders:
        for c in r.client.connections:
            if c.close_code != 1012:
                continue
            assert c.closed_at is not None  # set with close_code when the connection ended
            restarts_closes.append((c.closed_at, r.name, deploy.worker_of(c.url)))
            kinds = [(m["type"], m.get("eventId")) for _, m in c.messages]
            if ("systemAlert", 0) not in kinds:
                problems.append(f"{r.name}: closed 1012 without a systemAlert before: {kinds[-3:]}")
    first = [t for t, _, w in restarts_closes if w is w0]
    span = max(first) - min(first) if first else 0.0
    if len(first) != CLIENTS or span < 2.0:
        problems.append(f"{len(first)} closes 1012 from the first drain spanning {span:.2f} s")

    # Position gaps while the load ran (a lull after it is no failover's doing).
    gaps = sorted(
        ((*position_gap(r.client, started, load_ended), r) for r in riders),
        key=lambda g: g[0],
        reverse=True,
    )
    if gaps[0][0] > MAX_POSITION_GAP_S:
        problems.append(
            f"longest position gap {gaps[0][0]:.2f} s > {MAX_POSITION_GAP_S:g} s:\n"
            + "\n".join(
                describe_gap(g, began, r, deploy, started)
                for g, began, r in gaps[:5]
                if g > MAX_POSITION_GAP_S
            )
            + "\n  deploy: "
            + deploy_timeline(deploy, started)
        )
    closes = collections.Counter[int | None]()
    for r in riders:
        closes.update(r.closes)
    print(
        f"  {CLIENTS} clients, {fixes} fixes, {len(events.published)} replayable events "
        f"({collections.Counter(e.source for e in events.published)}); {covered} (client, event) "
        f"deliveries owed and checked; closes by code {dict(closes)}; "
        f"{sum(len(r.hellos) for r in riders)} recoveries, "
        f"{sum(r.refused for r in riders)} refused attempts\n"
        f"  first drain: {len(first)} closes 1012 over {span:.2f} s (rate {DRAIN_RATE}/s)\n"
        f"  longest gap in position delivery: {gaps[0][0]:.2f} s ({gaps[0][2].name}, from "
        f"{gaps[0][1] - started:+.2f} s); median of the clients' longest gaps "
        f"{sorted(g for g, _, _ in gaps)[len(gaps) // 2]:.2f} s "
        f"(target {POSITION_GAP_TARGET_S:g} s, limit {MAX_POSITION_GAP_S:g} s)\n"
        f"  deploy: {deploy_timeline(deploy, started)}\n"
        + "\n".join(describe_gap(g, began, r, deploy, started) for g, began, r in gaps[:3])
    )
    assert not problems, "\n".join(problems[:30])


@pytest.mark.timeout(180)
async def test_restarted_instance_exchanges_events_with_its_peers(
    cluster: Cluster, fleet: FleetDriver, redis_db: aioredis.Redis
) -> None:
    """(a) Kafka events produced while an instance is down, on every partition, reach a client
    on another instance once it is back (the embedded broker leaves the stopped member's
    partitions unassigned until it rejoins: it consumes them on start). (b) A client connected
    to the restarted instance as soon as it answers gets the events its peers publish."""
    w0, _, w2 = cluster.workers
    company = Company()
    user = new_id()
    subs: list[Sub] = [("notifications", ALL)]
    events = EventSource(fleet.producer, redis_db)
    elsewhere = SeedLikeClient(company.token(user), subs, name="on-w0", query="device=a")
    restarted = SeedLikeClient(company.token(user), subs, name="on-w2", query="device=b")
    problems = []
    try:
        await elsewhere.open(w0.ws_url)
        await elsewhere.wait_for(lambda: elsewhere.replies() == 1, 10)
        await asyncio.to_thread(w2.stop)
        backlog = [await events.notification(user, source="kafka", partition=p) for p in range(12)]
        await asyncio.to_thread(w2.restart)
        await restarted.open(w2.ws_url)
        await restarted.wait_for(lambda: restarted.replies() == 1, 10)
        live = []
        for _ in range(30):  # ~3 s of events, each published by whichever instance wins it
            live.append(await events.notification(user, source="redis"))
            await asyncio.sleep(0.1)  # the pace
        everything = {e.marker for e in backlog + live}
        with contextlib.suppress(AssertionError):
            await elsewhere.wait_for(lambda: everything <= set(elsewhere.markers()), 20)
        lost = [e for e in backlog if e.marker not in elsewhere.markers()]
        if lost:
            problems.append(
                f"(a) {len(lost)} of 12 events of the restart's backlog never reached w0: "
                f"{await where_published(redis_db, lost)}"
            )
        missed = [i for i, e in enumerate(live) if e.marker not in restarted.markers()]
        if missed:
            problems.append(f"(b) the restarted instance missed live events number {missed}")
    finally:
        await elsewhere.shutdown()
        await restarted.shutdown()
    assert not problems, problems


async def test_event_ids_never_go_backwards_with_positions_and_events_interleaved(
    cluster: Cluster, fleet: FleetDriver, redis_db: aioredis.Redis
) -> None:
    """Fixes at ~100/s and notifications at ~20/s to one client for 3 s: every frame's eventId
    is larger than the previous one's."""
    company = await register(fleet, cluster.workers, 3)
    user = new_id()
    subs: list[Sub] = [("notifications", ALL), ("vehicles", ALL)]
    client = SeedLikeClient(company.token(user), subs)
    events = EventSource(fleet.producer, redis_db)
    try:
        await client.open(cluster.workers[1].ws_url)
        await client.wait_for(lambda: client.replies() == 2, 10)
        deadline = time.monotonic() + 3
        n = 0
        while time.monotonic() < deadline:
            n += 1
            for v in company.vehicles:
                value = orjson.dumps(fix(v, lat=round(60 + n / 10000, 6)))
                await fleet.producer.send("gps-events", key=v.encode(), value=value)
            if n % 5 == 0:
                await events.notification(user, source="redis")
            await asyncio.sleep(0.03)  # the pace
        last = events.published[-1].marker
        await client.wait_for(lambda: last in client.markers(), 10, "the last notification")
    finally:
        await client.shutdown()
    ids = [(m["eventId"], m["type"]) for m in client.messages() if m.get("eventId")]
    backwards = [(a, b) for a, b in itertools.pairwise(ids) if b[0] < a[0]]
    assert not backwards, f"{len(backwards)} of {len(ids)} frames went back: {backwards[:5]}"
