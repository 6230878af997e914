"""Small helpers for integration tests built on WsClient: find positions, exact negative checks.

WsClient.wait_for only looks at messages after its cursor; these helpers first look at
everything already received, so the order in which a test waits for things does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import urllib.request
from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson

from tests.support.client import Msg, SeedLikeClient, WsClient
from tests.support.fleet import (
    Company,
    EventSource,
    FleetDriver,
    fix,
    marker_of,
    new_id,
    wait_registry,
)
from tracker_ws_dev.stack import Worker

Position = dict[str, Any]


def live_positions(msg: Msg) -> list[tuple[int, str, Position]]:
    """(eventId, vehicleId, position) carried by one live message (getState batches excluded)."""
    if msg.get("type") == "position":
        return [(msg["eventId"], msg["vehicleId"], msg["position"])]
    if msg.get("type") == "positionBatch" and msg.get("eventId"):
        return [(msg["eventId"], p["vehicleId"], p["position"]) for p in msg["positions"]]
    return []


def max_event_id(client: WsClient) -> int:
    return max((m.get("eventId", 0) for m in client.received), default=0)


async def reach_event_id(client: WsClient, event_id: int, timeout: float = 10.0) -> None:
    """The client has seen a message with eventId ≥ `event_id` (events arrive in eventId
    order, so everything it was owed up to there has arrived too)."""
    if max_event_id(client) >= event_id:
        return
    await client.wait_event_id_at_least(event_id, timeout)


def _find(
    client: WsClient, vehicle_id: str, pred: Callable[[Position], bool]
) -> tuple[int, Position] | None:
    for m in client.received:
        for eid, vid, pos in live_positions(m):
            if vid == vehicle_id and pred(pos):
                return eid, pos
    return None


async def wait_position(
    client: WsClient,
    vehicle_id: str,
    pred: Callable[[Position], bool] = lambda p: True,
    timeout: float = 10.0,
) -> tuple[int, Position]:
    """(eventId of the frame, position) of the first live position of `vehicle_id` matching
    `pred`, already received or the next to arrive. For a batch the eventId is the batch's
    (the largest of its entries), an upper bound of the position's own eventId."""
    found = _find(client, vehicle_id, pred)
    if found is not None:
        return found
    await client.wait_for(
        lambda m: any(v == vehicle_id and pred(p) for _, v, p in live_positions(m)),
        timeout,
        f"a position of {vehicle_id}",
    )
    found = _find(client, vehicle_id, pred)
    assert found is not None
    return found


def at_lat(lat: float) -> Callable[[Position], bool]:
    return lambda p: p.get("lat") == lat


async def registered_company(
    fleet: FleetDriver, worker: Worker, n_vehicles: int, *, groups: int = 0
) -> Company:
    """A fresh company whose vehicles the worker's registry already knows."""
    before = worker.health()["registryVehicles"]
    company = await fleet.company(n_vehicles, groups=groups)
    await asyncio.to_thread(wait_registry, worker, before + n_vehicles)
    return company


def ts_now_ms() -> int:
    return int(time.time() * 1000)


async def peers_deliver_to(
    worker: Worker, other: Worker, events: EventSource, *, run: int = 20, timeout: float = 40.0
) -> float:
    """Wait until a (re)started `worker` gets the events its peers publish: `run` notifications
    in a row, published on Redis (every instance races to publish each one), reach a client on
    it and a client on `other`. Returns the seconds it took.

    Needed because a peer routes replayable events to the instances it last saw alive (bug #2,
    tests/integration/test_rolling.py); harmless once that is fixed. `events` is a
    tests.support.fleet.EventSource."""

    company = Company()
    user = new_id()
    token = company.token(user)
    subs: list[tuple[str, dict[str, Any]]] = [("notifications", {"type": "all"})]
    probe = SeedLikeClient(token, subs, name=f"probe@{worker.instance_id}")
    watch = SeedLikeClient(token, subs, name="watch", query="device=watch")
    started = time.monotonic()

    def has(client: SeedLikeClient, marker: str) -> bool:
        return any(marker_of(m) == marker for m in client.messages())

    try:
        for client, w in ((probe, worker), (watch, other)):
            await client.open(w.ws_url)

            def got_subscribed(c: SeedLikeClient = client) -> bool:
                return any(m["type"] == "subscribed" for m in c.messages())

            await client.wait_for(got_subscribed, 10)
        streak = 0
        while streak < run:
            assert time.monotonic() - started < timeout, f"{worker.instance_id} misses events"
            ev = await events.notification(user, source="redis")
            try:
                for client in (watch, probe):

                    def delivered(c: SeedLikeClient = client, marker: str = ev.marker) -> bool:
                        return has(c, marker)

                    await client.wait_for(delivered, 1.0)
                streak += 1
            except AssertionError:
                streak = 0
    finally:
        await probe.shutdown()
        await watch.shutdown()
    return time.monotonic() - started


async def settled(workers: list[Worker], events: EventSource) -> None:
    """Every instance gets the events every peer publishes (peers learn who is alive on a
    timer: bug #2 in tests/integration/test_rolling.py). `events`: an EventSource."""
    for i, w in enumerate(workers):
        await peers_deliver_to(w, workers[i - 1], events)


async def warm_up_event_partitions(fleet: FleetDriver, worker: Worker) -> None:
    """One event on every partition of every event topic (for a company and user of their
    own), seen by a watcher: from then on each partition has a committed offset, so a consumer
    that takes one over after a restart resumes there and not at the end (the group's
    auto_offset_reset is `latest`)."""
    company = Company()
    user = new_id()
    vid = new_id()
    await fleet.register(vid, company.company_id)
    subs: list[tuple[str, dict[str, Any]]] = [
        (t, {"type": "all"}) for t in ("notifications", "geoEvents", "maintenance", "systemAlerts")
    ]
    watcher = SeedLikeClient(company.token(user), subs, name="warm-up")
    try:
        await watcher.open(worker.ws_url)
        await watcher.wait_for(lambda: watcher.replies() == len(subs), 10, "subscribed")
        sent = []
        for part in range(12):
            values: dict[str, dict[str, Any]] = {
                "notifications": {
                    "userId": user,
                    "notification": {"id": (n := new_id()), "title": "warm-up", "category": "w"},
                },
                "system-alerts": {
                    "level": "info",
                    "message": (a := f"warm-up {new_id()}"),
                    "targetCompanyIds": [company.company_id],
                },
                "maintenance-events": {
                    "companyId": company.company_id,
                    "vehicleId": vid,
                    "id": (m := new_id()),
                },
                "geo-events": {
                    "vehicleId": vid,
                    "companyId": company.company_id,
                    "geozoneId": (g := new_id()),
                    "eventType": "entered",
                    "position": {"lat": 1, "lon": 1},
                    "timestamp": int(time.time() * 1000) + part,
                },
            }
            for topic, value in values.items():
                await fleet.producer.send_and_wait(topic, orjson.dumps(value), partition=part)
            sent += [n, a, m, g]
        await watcher.wait_for(lambda: set(sent) <= set(watcher.markers()), 30, "warm-up events")
    finally:
        await watcher.shutdown()


def run_seed(env_name: str, fixed: int | None) -> int:
    """The seed of a randomised run: `env_name` from the environment replays a printed run;
    otherwise the default suite uses its `fixed` seed (the same choices every run) and a soak
    run (fixed=None) draws a new one."""
    chosen = os.environ.get(env_name)
    if chosen:
        return int(chosen)
    return fixed if fixed is not None else random.randrange(1 << 32)


def round_lat(n: int) -> float:
    """The latitude of round `n` of `fix_until_followers_hold`."""
    return round(80 + n / 1000, 6)


async def fix_until_followers_hold(
    fleet: FleetDriver, followers: Sequence[tuple[SeedLikeClient, Collection[str]]], rounds: int
) -> bool:
    """Rounds of fixes (lat 80.000, 80.001, …) for every followed vehicle until each client
    holds the round's position of each of its vehicles as its latest; interest may still be
    settling after restarts. `followers`: (client with last_positions/wait_for, vehicles)."""
    vehicles = sorted({v for _, vs in followers for v in vs})
    for n in range(rounds):
        lat = round_lat(n)
        for v in vehicles:
            await fleet.producer.send(
                "gps-events", key=v.encode(), value=orjson.dumps(fix(v, lat=lat))
            )
        await fleet.producer.flush()

        def held(lat: float = lat) -> bool:
            return all(all(c.last_positions().get(v) == lat for v in vs) for c, vs in followers)

        with contextlib.suppress(AssertionError):
            await followers[0][0].wait_for(held, 3.0)
            return True
    return False


def publish_failures(worker: Worker) -> float:
    """ws_errors_total{error_type="PUBLISH_FAILED"} of one instance: positions its publisher
    dropped."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ws_errors_total{") and 'error_type="PUBLISH_FAILED"' in line
    )
