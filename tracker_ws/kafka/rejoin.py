"""Followers rejoin a rebalance a little after the group's leader.

The embedded broker (Tansu 0.6) answers a follower's SyncGroup that arrives before the
leader's assignment only a second later: it checks for the assignment, sleeps one second and
checks again. Every member's JoinGroup is held one second from when it was sent, so a follower
that noticed the rebalance before the leader did (heartbeats are 0.1 s apart) gets its
JoinGroup answer first, asks for its assignment too early, and its partitions stay paused
about two seconds instead of one (measured with three aiokafka members: the survivors of a
leave got their partitions after 1.0 s or 2.0 s, about half of the time each).

So a member that did not lead the last rebalance waits `TRACKER_WS_KAFKA_REJOIN_STAGGER`
before it sends JoinGroup (the wait ends Faust's revocation, Faust's public
`ConsumerThread.on_partitions_revoked`): the leader's JoinGroup, and so its SyncGroup, come
first. Leadership is known from Faust's public `PartitionAssignor` setting: only the leader
runs the assignor. The same three members then got their partitions after 1.15 s in every
round. Apache Kafka holds a follower's SyncGroup until the leader's arrives, and completes a
JoinGroup only when every member has rejoined, so there the wait only lengthens each
rebalance: set it to 0 (README, "Failover").

A member that joins the group anew (a restarted instance) cannot wait for the leader, who only
starts rejoining when it sees the newcomer's JoinGroup; its own partitions stay paused about
two seconds.
"""

from __future__ import annotations

from typing import Any

from faust.assignor import PartitionAssignor


def rejoin_delay(led_last_rebalance: bool, stagger_s: float) -> float:
    """Seconds to wait before rejoining: none for the leader, which keeps its role."""
    return 0.0 if led_last_rebalance else stagger_s


class LeaderAwareAssignor(PartitionAssignor):  # type: ignore[misc]
    """Faust's assignor, remembering whether this member computed the last assignment."""

    led_last_rebalance = False

    def assign(self, cluster: Any, member_metadata: Any) -> Any:
        self.led_last_rebalance = True
        return super().assign(cluster, member_metadata)

    def take_leadership(self) -> bool:
        """Whether this member led the last rebalance; forgotten, as a new one begins."""
        led, self.led_last_rebalance = self.led_last_rebalance, False
        return led
