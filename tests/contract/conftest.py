"""Backends for the bus contract (tests/contract/): memory, one Redis, a 3-master Redis Cluster.

The Redis servers are started once per session (tests/conftest.py `redis_url`,
`redis_cluster`); each test starts from empty data: FLUSHDB of a database of its own on the
single Redis, FLUSHALL on the cluster this session started. Waits are for conditions: a
`Sink` resolves a future when the records it waits for arrived, and `fence` proves nothing
else is on its way (channels are FIFO: whatever was sent before the fence arrives before it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tracker_ws.bus import Bus, Outgoing, memory_bus, redis_bus
from tracker_ws.config import cluster_nodes

BACKENDS = ("memory", "redis", "cluster")
CONTRACT_DB = 7  # on the session's single Redis, apart from the workers' databases
FENCE = b'{"fence":true}'


class Sink:
    """A delivery handler that can be awaited: `await sink.wait(n)`."""

    def __init__(self) -> None:
        self.items: list[tuple[int, bytes]] = []
        self.calls = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, items: list[tuple[int, bytes]]) -> None:
        self.calls += 1
        self.items.extend(items)
        for n, fut in self._waiters:
            if len(self.items) >= n and not fut.done():
                fut.set_result(None)

    async def wait(self, n: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        if len(self.items) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise AssertionError(f"{n} deliveries expected, got {self.items}") from None
        return self.items


@dataclass
class Node:
    """One instance's bus and what it received."""

    bus: Bus
    sink: Sink
    instance_id: str

    async def fence(self) -> list[tuple[int, bytes]]:
        """Everything delivered before a marker sent now, without the marker."""
        before = len(self.sink.items)
        [event_id] = await self.bus.fanout.publish([Outgoing([self.instance_id], FENCE)])
        got = await self.sink.wait(before + 1)
        while got[-1] != (event_id, FENCE):  # something was still on its way: wait more
            await self.sink.wait(len(got) + 1)
            got = self.sink.items
        return [item for item in got if item[1] != FENCE]


@dataclass
class Backend:
    name: str
    url: str | None  # None: memory
    _buses: list[Bus] = field(default_factory=list)
    _raw: list[Any] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether two instances share it (memory: each bus is its own world)."""
        return self.url is not None

    def bus(self, instance_id: str) -> Bus:
        made = memory_bus(instance_id) if self.url is None else redis_bus(self.url, instance_id)
        self._buses.append(made)
        return made

    async def node(self, instance_id: str, *, alive: bool = True) -> Node:
        """A started instance; `alive`: announced, so that '*' reaches it."""
        bus = self.bus(instance_id)
        sink = Sink()
        if alive:
            await bus.presence.heartbeat(30)
        await bus.fanout.start(sink)
        return Node(bus, sink, instance_id)

    def raw(self) -> Any:
        """A plain redis.asyncio client on the same server, for looking at keys."""
        assert self.url is not None
        if self.url.startswith("redis+cluster://"):
            nodes = [ClusterNode(h, p) for h, p in cluster_nodes(self.url)]
            client: Any = RedisCluster(startup_nodes=nodes)
        else:
            client = aioredis.Redis.from_url(self.url)
        self._raw.append(client)
        return client

    async def close(self) -> None:
        for made in self._buses:
            with contextlib.suppress(Exception):
                await made.close()
        for client in self._raw:
            with contextlib.suppress(Exception):
                await client.aclose()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url: str | None = None
    if request.param == "redis":
        base: str = request.getfixturevalue("redis_url")
        url = base.rsplit("/", 1)[0] + f"/{CONTRACT_DB}"
        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()
    elif request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        await asyncio.to_thread(cluster.flushall)
        url = cluster.url
    made = Backend(request.param, url)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def shared(backend: Backend) -> Backend:
    """A backend several instances share (Redis, cluster); memory is one instance alone."""
    if not backend.shared:
        pytest.skip("memory:// is a single instance")
    return backend
