"""Helpers for multi-instance tests: vehicles placed on chosen partitions, admin REST calls,
interest tables, warm-up of cross-instance subscriptions, clients that time-stamp arrivals.

Interest travels through a Kafka topic, so a new subscription on one instance reaches the
owner of a partition a moment later: tests keep producing until the first fix arrives
(`warm_up`) and only then check completeness and order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from redis.typing import StreamRangeResponse

from tests.support.checks import live_positions
from tests.support.client import Msg, SeedLikeClient, WsClient
from tests.support.fleet import Company, FleetDriver, fix, new_id
from tracker_ws.agents.positions import partition_of
from tracker_ws.auth import mint_token
from tracker_ws.bus.keys import KeySpace
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws_dev.stack import Worker, wait_for

if TYPE_CHECKING:
    from tests.conftest import Cluster

PARTITIONS = 12


# ------------------------------------------------------------------------------ Redis


def redis_client(url: str) -> Any:
    """A sync client (str replies) on the workers' Redis, one server or a cluster
    (`redis+cluster://`), for looking at what they wrote."""
    import redis

    from tracker_ws.config import cluster_nodes

    if url.startswith("redis+cluster://"):
        from redis.cluster import ClusterNode, RedisCluster

        # redis.cluster.ClusterNode.__init__ has no annotations (redis.asyncio's has).
        nodes = [
            ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in cluster_nodes(url)
        ]
        return RedisCluster(startup_nodes=nodes, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def async_redis_client(url: str) -> Any:
    """redis.asyncio's client for `url`, one server or a cluster (EventSource publishes
    `events:*` through it)."""
    import redis.asyncio as aioredis

    from tracker_ws.config import cluster_nodes

    if url.startswith("redis+cluster://"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
        return RedisCluster(startup_nodes=nodes)
    return aioredis.Redis.from_url(url)


def entry_values(entries: StreamRangeResponse | None, name: bytes) -> list[bytes]:
    """The field `name` of every entry of an XRANGE reply, from a client without
    decode_responses (bytes)."""
    assert entries is not None
    values: list[bytes] = []
    for _, fields in entries:
        assert fields is not None
        value = fields[name]
        assert isinstance(value, bytes), value
        values.append(value)
    return values


def key_space(url: str) -> KeySpace:
    """The key names the workers on `url` use."""
    return KeySpace(cluster=url.startswith("redis+cluster://"))


# ------------------------------------------------------------------------------ vehicles


def vehicle_on(partition: int) -> str:
    """A fresh vehicle id that Kafka's default partitioner puts on `partition`."""
    while True:
        vid = str(uuid.uuid4())
        if partition_of(vid, PARTITIONS) == partition:
            return vid


def spread_ids(per_partition: int = 1) -> list[str]:
    """Vehicle ids covering every gps-events partition (`per_partition` on each)."""
    return [vehicle_on(p) for _ in range(per_partition) for p in range(PARTITIONS)]


async def register_company(
    fleet: FleetDriver, workers: Iterable[Worker], vehicle_ids: list[str], *, groups: int = 0
) -> Company:
    """A company owning `vehicle_ids` (round-robin over `groups` groups), known to the
    registry of every worker in `workers` before this returns."""
    workers = list(workers)
    before = {w.instance_id: int(w.health().get("registryVehicles", 0)) for w in workers}
    company = Company()
    group_ids = [new_id() for _ in range(groups)]
    for i, vid in enumerate(vehicle_ids):
        gids = [group_ids[i % groups]] if groups else []
        for g in gids:
            company.groups.setdefault(g, []).append(vid)
        await fleet.register(vid, company.company_id, group_ids=gids)
        company.vehicles.append(vid)
    n = len(vehicle_ids)

    def caught_up() -> bool:
        return all(
            int(w.health().get("registryVehicles", 0)) >= before[w.instance_id] + n for w in workers
        )

    await asyncio.to_thread(wait_for, caught_up, 20.0, 0.1, f"{n} vehicles in every registry")
    return company


async def send_round(fleet: FleetDriver, vehicle_ids: Iterable[str], **kw: Any) -> None:
    """One fix per vehicle, produced concurrently (each partition keeps its order)."""
    futures = [
        await fleet.producer.send("gps-events", key=v.encode(), value=orjson.dumps(fix(v, **kw)))
        for v in vehicle_ids
    ]
    await asyncio.gather(*futures)


# ------------------------------------------------------------------------------ tokens, REST


def admin_token(**kw: Any) -> str:
    return mint_token(new_id(), new_id(), secret=DEV_JWT_SECRET, roles=["admin"], **kw)


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """(status, JSON body or None) of one HTTP request; never raises on HTTP errors."""
    data = orjson.dumps(body) if isinstance(body, dict | list) else body
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, (json.loads(raw) if raw else None)


async def ahttp(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http, method, url, **kw)


def admin_get(worker: Worker, path: str, token: str | None = None) -> Any:
    status, body = http("GET", worker.url + path, token=token or admin_token())
    assert status == 200, (worker.instance_id, path, status, body)
    return body


def interest(worker: Worker, token: str | None = None) -> dict[str, list[str]]:
    """This worker's share of the subscriptions table: "{key}#p{n}" -> instance ids."""
    body = admin_get(worker, "/api/v1/ws/interest", token)
    assert body["instanceId"] == worker.instance_id, body
    table: dict[str, list[str]] = body["interest"]
    return table


def interest_of(workers: Iterable[Worker], token: str | None = None) -> dict[str, list[str]]:
    """The whole table, merged from every worker (each holds its own partitions)."""
    out: dict[str, list[str]] = {}
    for w in workers:
        out.update(interest(w, token))
    return out


async def until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll a blocking predicate (HTTP, Redis) in a thread; seconds it took to hold."""
    started = time.monotonic()
    await asyncio.to_thread(wait_for, pred, timeout, 0.1, what)
    return time.monotonic() - started


# ------------------------------------------------------------------------------ clients


class TimedClient(WsClient):
    """A WsClient that also records when (monotonic) each message arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []  # parallel to `received`
        self.connection_id = ""

    @classmethod
    async def open(cls, worker: Worker, token: str, query: str = "") -> TimedClient:
        client = await cls.connect(worker.ws_url, token, query=query)
        assert isinstance(client, TimedClient)
        client.connection_id = client.received[0]["connectionId"]
        return client

    async def _read_one(self, timeout: float) -> Msg | None:
        n = len(self.received)
        got = await super()._read_one(timeout)
        now = time.monotonic()
        self.arrivals.extend(now for _ in range(len(self.received) - n))
        return got

    async def pump(self, stop: asyncio.Event) -> None:
        """Read (and record) everything until `stop` is set or the connection closes. Never
        run it together with wait_for on the same client."""
        while not stop.is_set() and self.closed_code is None:
            try:
                if await self._read_one(0.2) is None:
                    return
            except TimeoutError:
                continue

    def position_arrivals(self) -> list[tuple[float, int, str, dict[str, Any]]]:
        """(arrival, eventId, vehicleId, position) of every live position received."""
        return [
            (t, eid, vid, pos)
            for t, m in zip(self.arrivals, self.received, strict=True)
            for eid, vid, pos in live_positions(m)
        ]


def frame_event_ids(client: WsClient) -> list[int]:
    """eventIds of the live position frames, in arrival order."""
    return [
        m["eventId"]
        for m in client.received
        if m.get("type") in ("position", "positionBatch") and m.get("eventId")
    ]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


async def saw_all(client: WsClient, vehicles: set[str], timeout: float) -> bool:
    """Wait (up to `timeout`) until the client has seen a live position of every vehicle."""
    if vehicles <= client.vehicles_seen():
        return True
    try:
        await client.wait_for(lambda m: vehicles <= client.vehicles_seen(), timeout)
    except AssertionError:
        return False
    return True


async def warm_up(
    fleet: FleetDriver,
    expect: list[tuple[WsClient, set[str]]],
    *,
    timeout: float = 30.0,
    lat: float = 0.25,
) -> float:
    """Produce rounds of fixes until every client saw every vehicle it expects (interest has
    reached every owner); returns the seconds it took."""
    started = time.monotonic()
    vehicles = sorted(set().union(*(v for _, v in expect)))
    waiting = list(expect)
    n = 0
    while waiting:
        assert time.monotonic() - started < timeout, (
            f"after {timeout:g}s {len(waiting)} clients still miss vehicles: "
            f"{[sorted(v - c.vehicles_seen()) for c, v in waiting]}"
        )
        await send_round(fleet, vehicles, lat=lat + n / 1000)
        n += 1
        still = []
        for client, want in waiting:
            if not await saw_all(client, want, 0.3):
                still.append((client, want))
        waiting = still
    return time.monotonic() - started


def at(lat: float) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("lat") == lat


def frame_id_of(client: WsClient, vehicle_id: str, lat: float) -> int | None:
    """eventId of the frame that carried `vehicle_id` at `lat` (None: not received)."""
    for m in client.received:
        for eid, vid, pos in live_positions(m):
            if vid == vehicle_id and pos.get("lat") == lat:
                return int(eid)
    return None


async def wait_round(
    client: WsClient, vehicles: Iterable[str], lat: float, timeout: float = 15.0
) -> int:
    """Wait until the client got every vehicle at `lat`; the largest eventId carrying one."""
    vehicles = set(vehicles)

    def done(_: Msg | None = None) -> bool:
        return all(frame_id_of(client, v, lat) is not None for v in vehicles)

    if not done():
        await client.wait_for(done, timeout, f"{len(vehicles)} vehicles at lat {lat}")
    return max(int(frame_id_of(client, v, lat) or 0) for v in vehicles)


# ------------------------------------------------------------------------------ diagnosis


def why_positions_missing(
    cluster: Cluster, followers: Iterable[tuple[SeedLikeClient, Iterable[str]]], want: float
) -> list[str]:
    """For every (client, vehicle) whose latest position is not `want`: which worker owns
    the vehicle's partition, the interest entries there that can route it to the client's
    instance, and that owner's consumer view of the partition. Read while the clients are
    still connected, so that their interest is still in place."""
    out: list[str] = []
    for c, vs in followers:
        lagging = [v for v in vs if c.last_positions().get(v) != want]
        if not lagging:
            continue
        on = cluster.worker_at(c.conn.url).instance_id
        for v in lagging:
            p = partition_of(v, PARTITIONS)
            owner = cluster.owner_of_partition(p)
            if owner is None:
                out.append(f"{c.name}@{on}: {v} (p{p}) has no owner")
                continue
            table = interest(owner)
            routes = {k: ids for k, ids in table.items() if k.endswith(f"#p{p}")}
            consumer = admin_get(owner, "/api/v1/ws/consumer")
            mine = [
                row
                for row in consumer["partitions"]
                if row["partition"] == p
                and row["topic"] in ("gps-events", "ws-subscription-changes")
            ]
            out.append(
                f"{c.name}@{on}: {v} (p{p}) at {c.last_positions().get(v)}, not {want}; "
                f"owner {owner.instance_id}; {len(routes)} interest entries on p{p}, "
                f"{sum(on in ids for ids in routes.values())} for {on}: "
                f"{sorted(k for k, ids in routes.items() if on in ids)[:6]}; "
                f"consumer stalled={consumer['stalled']} flowActive={consumer['flowActive']} "
                f"{mine}"
            )
    return out
