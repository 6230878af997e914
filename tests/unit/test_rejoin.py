"""kafka/rejoin.py: a member that did not lead the last rebalance waits before rejoining; the
leader is known from Faust's assignor, which only the leader runs. Real Faust assignor and
consumer thread of a real app, no broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataResponse_v0

from tracker_ws.config import Settings
from tracker_ws.kafka.app import KafkaApp
from tracker_ws.kafka.rejoin import LeaderAwareAssignor, rejoin_delay
from tracker_ws.kafka.transport import ConsumerThread

STAGGER = 0.15


def app_with(stagger: float | None) -> Any:
    app = KafkaApp(
        "test-rejoin",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        PartitionAssignor=LeaderAwareAssignor,
    )
    if stagger is not None:
        # KafkaApp declares no `rt` (TrackerApp does); the consumer reads it with getattr.
        app.rt = SimpleNamespace(settings=Settings(kafka_rejoin_stagger_s=stagger))  # type: ignore[attr-defined]
    return app


def cluster(topic: str, partitions: int) -> ClusterMetadata:
    meta = ClusterMetadata()
    brokers = [(0, "127.0.0.1", 1)]
    meta.update_metadata(
        MetadataResponse_v0(brokers, [(0, topic, [(0, p, 0, [0], [0]) for p in range(partitions)])])
    )
    return meta


def lead_a_rebalance(assignor: LeaderAwareAssignor) -> None:
    """What aiokafka does on the member the broker elected leader: run the assignor."""
    mine = assignor.metadata({"gps-events"})
    out = assignor.assign(cluster("gps-events", 4), {"a": mine, "b": mine})
    assert {tp for m in out.values() for _, ps in m.assignment for tp in ps} == {0, 1, 2, 3}


def test_rule() -> None:
    assert rejoin_delay(True, STAGGER) == 0.0
    assert rejoin_delay(False, STAGGER) == STAGGER
    assert rejoin_delay(False, 0.0) == 0.0


def test_the_assignor_knows_it_led_until_the_next_rebalance_begins() -> None:
    assignor = app_with(STAGGER).assignor
    assert isinstance(assignor, LeaderAwareAssignor)
    assert assignor.take_leadership() is False  # never led
    lead_a_rebalance(assignor)
    assert assignor.take_leadership() is True
    assert assignor.take_leadership() is False  # a rebalance it did not lead


@pytest.mark.parametrize(("led", "wait"), [(True, 0.0), (False, STAGGER)])
def test_a_follower_waits_before_rejoining_the_leader_does_not(led: bool, wait: float) -> None:
    app = app_with(STAGGER)
    thread = app.consumer._thread
    assert isinstance(thread, ConsumerThread)
    if led:
        lead_a_rebalance(app.assignor)
    assert thread.rejoin_wait() == wait
    assert thread.rejoin_wait() == STAGGER  # the next rebalance: led by someone else


def test_no_wait_when_turned_off_or_without_the_service_settings() -> None:
    assert app_with(0.0).consumer._thread.rejoin_wait() == 0.0
    assert app_with(None).consumer._thread.rejoin_wait() == 0.0
