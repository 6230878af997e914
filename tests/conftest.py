"""Shared fixtures: the real broker and Redis for every test layer (ARCHITECTURE §7).

With TRACKER_WS_KAFKA_BROKER / TRACKER_WS_REDIS_URL set, tests use those servers; otherwise a
fresh Tansu broker and redis-server are started on free loopback ports for the session.
Only devstack, config and domain.errors may be imported from tracker_ws here: the rest of the
package must not be needed to collect the tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tracker_ws.tables.definitions import topic_plan
from tracker_ws_dev import stack as devstack

if TYPE_CHECKING:
    from tracker_ws_dev.redis_cluster import LocalRedisCluster

_TESTS_DIR = Path(__file__).resolve().parent
_MARK_BY_DIR = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Mark by location so `-m "not integration"` works without every test file remembering it.
    for item in items:
        try:
            parts = Path(str(item.path)).resolve().relative_to(_TESTS_DIR).parts
        except ValueError:
            continue
        mark = _MARK_BY_DIR.get(parts[0]) if parts else None
        if mark is not None:
            item.add_marker(mark)


def _external_broker() -> str | None:
    return os.environ.get("TRACKER_WS_KAFKA_BROKER") or None


def _external_redis() -> str | None:
    # `memory://` is a valid service setting but not a server: tests then get their own Redis.
    url = os.environ.get("TRACKER_WS_REDIS_URL") or ""
    return url if url.startswith(_REDIS_SCHEMES) else None


@pytest.fixture(scope="session")
def devstack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs and data of the servers this session starts (kept by pytest for post-mortems)."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def broker(devstack_dir: Path) -> Iterator[devstack.Broker | None]:
    """The session's Tansu handle for fault tests (kill/restart), or None when external."""
    if _external_broker() is not None:
        yield None
        return
    handle = devstack.start_broker(log_dir=devstack_dir)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def broker_url(broker: devstack.Broker | None) -> str:
    if broker is None:
        url = _external_broker()
        assert url is not None
        return url
    return broker.url


@pytest.fixture(scope="session")
def redis_server(devstack_dir: Path) -> Iterator[devstack.RedisServer | None]:
    """The session's redis-server handle for fault tests, or None when external."""
    if _external_redis() is not None:
        yield None
        return
    handle = devstack.start_redis(log_dir=devstack_dir)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: devstack.RedisServer | None) -> str:
    if redis_server is None:
        url = _external_redis()
        assert url is not None
        return url
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(devstack_dir: Path) -> Iterator[LocalRedisCluster]:
    """A 3-master Redis Cluster of this session (tracker_ws_dev/redis_cluster.py)."""
    from tracker_ws_dev.redis_cluster import start_redis_cluster

    handle = start_redis_cluster(log_dir=devstack_dir / "redis-cluster")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """`redis+cluster://…` of the session's cluster, as TRACKER_WS_REDIS_URL takes it."""
    return redis_cluster.url


# --------------------------------------------------------------------------------------------
# Topics, a running worker, a producer


TOPICS, TOPIC_CONFIGS = topic_plan(12)


@pytest.fixture(scope="session")
def topics(broker_url: str) -> str:
    import asyncio

    asyncio.run(devstack.create_topics(broker_url, TOPICS, configs=TOPIC_CONFIGS))
    return broker_url


@pytest.fixture(scope="session")
def worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[devstack.Worker]:
    """One tracker-ws worker process against the session's broker and Redis."""
    handle = devstack.start_worker(
        broker_url=topics, redis_url=redis_url, log_dir=devstack_dir, instance_id="ws-test-1"
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
async def fleet(topics: str):  # type: ignore[no-untyped-def]
    from aiokafka import AIOKafkaProducer

    from tests.support.fleet import FleetDriver

    producer = AIOKafkaProducer(bootstrap_servers=devstack.bootstrap_servers(topics), linger_ms=1)
    await producer.start()
    try:
        yield FleetDriver(producer)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------------------------
# Several instances: one consumer group, one Redis database of their own


class Cluster:
    """N worker processes of one consumer group; reusable by tests and benchmarks."""

    def __init__(self, workers: list[devstack.Worker], redis_url: str, app_id: str) -> None:
        self.workers = workers
        self.redis_url = redis_url
        self.app_id = app_id

    def partitions(self) -> dict[str, list[int]]:
        return {
            w.instance_id: list(w.health().get("partitions", [])) for w in self.workers if w.alive()
        }

    def wait_balanced(self, timeout: float = 60.0) -> None:
        """Every live worker healthy and the 12 gps-events partitions split among them."""

        def balanced() -> bool:
            live = [w for w in self.workers if w.alive()]
            parts = [p for w in live for p in w.health().get("partitions", [])]
            healthy = all(w.health().get("status") == "healthy" for w in live)
            return (
                healthy
                and sorted(parts) == list(range(12))
                and all(w.health().get("partitions") for w in live)
            )

        devstack.wait_for(balanced, timeout, interval=0.2, what="partitions balanced")

    def owner_of(self, vehicle_id: str) -> devstack.Worker:
        from tracker_ws.agents.positions import partition_of

        p = partition_of(vehicle_id, 12)
        owner = self.owner_of_partition(p)
        if owner is None:
            raise AssertionError(f"no live worker owns partition {p}")
        return owner

    def owner_of_partition(self, partition: int) -> devstack.Worker | None:
        for w in self.workers:
            if w.alive() and partition in w.health().get("partitions", []):
                return w
        return None

    def worker_at(self, url: str) -> devstack.Worker:
        """The worker a connection URL (ws://127.0.0.1:<port>/…) points at."""
        port = int(url.split(":")[2].split("/")[0])
        return next(w for w in self.workers if w.port == port)

    def live(self) -> list[devstack.Worker]:
        return [w for w in self.workers if w.alive()]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every worker at once (one rebalance, not one per worker) and wait."""
        _each_in_thread([lambda w=w: w.stop(timeout) for w in self.workers])


def _each_in_thread(calls: list[Any]) -> list[Any]:
    """Run blocking calls side by side; re-raises the first failure after all finished."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def start_cluster(
    n: int,
    *,
    broker_url: str,
    redis_base_url: str,
    log_dir: Path,
    db: int,
    env: dict[str, str] | None = None,
    parallel: bool = False,
) -> Cluster:
    """N workers of a fresh consumer group on Redis database `db` of `redis_base_url` (a
    `redis+cluster://` URL as it is: a cluster has one database); waits until the partitions
    are balanced. `parallel` starts them side by side (one join round instead of N). On
    failure every worker it started is stopped."""
    import uuid

    app_id = f"tracker-ws-cluster-{uuid.uuid4().hex[:8]}"
    redis_url = redis_base_url
    if not redis_base_url.startswith("redis+cluster://"):
        redis_url = redis_base_url.rsplit("/", 1)[0] + f"/{db}"
    workers: list[devstack.Worker] = []

    def start(i: int) -> devstack.Worker:
        w = devstack.start_worker(
            broker_url=broker_url,
            redis_url=redis_url,
            log_dir=log_dir,
            instance_id=f"{app_id}-{i + 1}",
            env={"TRACKER_WS_APP_ID": app_id, **(env or {})},
        )
        workers.append(w)
        return w

    cluster = Cluster(workers, redis_url, app_id)
    try:
        if parallel:
            _each_in_thread([lambda i=i: start(i) for i in range(n)])
            workers.sort(key=lambda w: w.instance_id)
        else:
            for i in range(n):
                start(i)
        cluster.wait_balanced()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def cluster_on_own_redis(
    n: int, *, broker_url: str, log_dir: Path, parallel: bool = False
) -> Iterator[tuple[devstack.RedisServer, Cluster]]:
    """N instances of a fresh consumer group behind a redis-server of their own (for tests
    that make that Redis busy, or stop and restart it)."""
    server = devstack.start_redis(log_dir=log_dir)
    try:
        cluster = start_cluster(
            n, broker_url=broker_url, redis_base_url=server.url, log_dir=log_dir, db=0,
            parallel=parallel,
        )  # fmt: skip
        try:
            yield server, cluster
        finally:
            cluster.stop()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster3(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    """Three instances behind one Redis database (db 1, apart from the session worker)."""
    import redis as redis_sync

    redis_db = redis_url.rsplit("/", 1)[0] + "/1"
    redis_sync.Redis.from_url(redis_db).flushdb()
    cluster = start_cluster(
        3, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=1, parallel=True
    )
    try:
        yield cluster
    finally:
        cluster.stop()
