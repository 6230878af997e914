"""The multi-instance behaviour with the workers on a Redis Cluster (`redis+cluster://`, the
session's 3 masters from tracker_ws_dev/redis_cluster.py): cross-instance delivery, recovery
on another instance, kick, broadcast and the kill -9 failover. The checks are those of the
single-Redis tests, run here against three workers sharing the cluster; the kill comes last,
on the same workers (it kills one of them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import tests.integration.test_admin as admin
import tests.integration.test_cluster_smoke as smoke
import tests.integration.test_faults as faults
import tests.integration.test_recovery as recovery
from tests.conftest import Cluster, start_cluster
from tests.support.checks import settled
from tests.support.cluster import async_redis_client, redis_client
from tests.support.fleet import EventSource, FleetDriver

if TYPE_CHECKING:
    from tracker_ws_dev.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="module")
def on_cluster(
    topics: str, redis_cluster: LocalRedisCluster, devstack_dir: Path
) -> Iterator[Cluster]:
    redis_cluster.flushall()
    cluster = start_cluster(
        3,
        broker_url=topics,
        redis_base_url=redis_cluster.url,
        log_dir=devstack_dir,
        db=0,
        env={"TRACKER_WS_QUEUE_LIMIT": str(recovery.QUEUE_LIMIT)},
        parallel=True,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def events_redis(on_cluster: Cluster) -> AsyncIterator[Any]:
    """A cluster client that publishes on `events:*` (EventSource), the workers settled."""
    client = async_redis_client(on_cluster.redis_url)
    try:
        await settled(on_cluster.workers, EventSource(None, client))  # type: ignore[arg-type]
        yield client
    finally:
        await client.aclose()


def test_the_workers_use_the_cluster(on_cluster: Cluster) -> None:
    assert on_cluster.redis_url.startswith("redis+cluster://")
    assert all(w.health()["listener"] == "ok" for w in on_cluster.workers)


async def test_cross_instance_delivery(on_cluster: Cluster, fleet: FleetDriver) -> None:
    await smoke.test_cross_instance_delivery(on_cluster, fleet)


def test_the_publish_keys_share_one_hash_tag(on_cluster: Cluster) -> None:
    r = redis_client(on_cluster.redis_url)
    try:
        assert int(r.get("{ws}:ws:event_id")) > 0 and r.get("ws:event_id") is None
        members = {w.instance_id for w in on_cluster.workers}
        assert r.smembers("{ws}:ws:instances") == members
        assert all(r.exists(f"ws:instance:{{{m}}}:alive") for m in members)
    finally:
        r.close()


async def test_recovery_on_another_instance(
    on_cluster: Cluster, fleet: FleetDriver, events_redis: Any
) -> None:
    await recovery.test_resent_subscribes_after_recovery_get_nothing_twice(
        on_cluster, fleet, events_redis
    )


async def test_kick_reaches_a_connection_on_another_instance(
    on_cluster: Cluster, fleet: FleetDriver
) -> None:
    await admin.test_kick_reaches_a_connection_on_another_instance(on_cluster, fleet)


async def test_broadcast_delivered_counts_match_what_clients_received(
    on_cluster: Cluster, fleet: FleetDriver
) -> None:
    await admin.test_broadcast_delivered_counts_match_what_clients_received(on_cluster, fleet)


@pytest.fixture(scope="module")
def kill_run(on_cluster: Cluster, topics: str) -> faults.KillRun:
    return asyncio.run(faults._kill_scenario(on_cluster, topics))


def test_kill_9_failover(kill_run: faults.KillRun) -> None:
    faults.test_kill_9_clients_on_the_survivors_keep_receiving_in_order(kill_run)
    faults.test_kill_9_dead_instance_is_cleaned_up_within_60_s(kill_run)
    faults.test_kill_9_no_fix_is_delivered_twice_after_the_failover(kill_run)
