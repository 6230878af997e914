"""Leave the consumer group on shutdown even in the group's first generation.

A stopping instance must leave the group at once, or its partitions stay unowned until the
broker drops it after the session timeout. aiokafka's consumer leaves on stop
(`GroupCoordinator.close()` sends LeaveGroup), but only when `generation > 0`: generation 0
means "never joined" to it. Apache Kafka numbers a group's first generation 1, so that check
never skips a real member; the embedded Tansu broker numbers it 0, so every member of a group
that formed once and never rebalanced (three instances started together, then a rolling
restart) stopped without leaving, and its partitions waited for the session timeout.

Active only when the generation the consumer had when the stop began is 0 (never against
Kafka): after Faust has stopped the consumer (no more heartbeats, so the broker cannot take
the member back in), the same LeaveGroup is sent from a short-lived client of its own.

Private names read (for `tracker_ws/kafka/`'s start-up compatibility check): faust
`Consumer._thread`, `AIOKafkaConsumerThread._ensure_consumer()`, aiokafka
`AIOKafkaConsumer._coordinator` with its `member_id` and `generation`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LEAVE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Membership:
    group_id: str
    member_id: str
    generation: int

    @property
    def left_by_the_client(self) -> bool:
        """aiokafka sends LeaveGroup itself on stop (see the module doc)."""
        return self.generation > 0


def membership(app: Any) -> Membership | None:
    """The group membership of the app's consumer now, or None (not started, not joined)."""
    try:
        coordinator = app.consumer._thread._ensure_consumer()._coordinator
        member_id = str(coordinator.member_id or "")
        generation = int(coordinator.generation)
        group_id = str(coordinator.group_id)
    except Exception:  # not started, or a library that changed: nothing to add
        return None
    if not member_id or generation < 0:
        return None
    return Membership(group_id, member_id, generation)


async def leave(bootstrap_servers: str, member: Membership) -> bool:
    """Send LeaveGroup for `member` (whose consumer has stopped); True when the broker
    accepted it. Bounded by LEAVE_TIMEOUT_S; never raises."""
    from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
    from aiokafka.errors import for_code
    from aiokafka.protocol.group import LeaveGroupRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, client_id="tracker-ws-leave")

    async def send() -> bool:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, member.group_id)
        response = await client.send(
            node,
            LeaveGroupRequest(member.group_id, member.member_id),
            group=ConnectionGroup.COORDINATION,
        )
        error = for_code(response.error_code)
        if response.error_code:
            log.warning("LeaveGroup for generation %d refused: %s", member.generation, error)
            return False
        return True

    try:
        ok = await asyncio.wait_for(send(), LEAVE_TIMEOUT_S)
    except Exception as exc:  # broker gone: the session timeout will drop the member
        log.warning("could not leave the consumer group: %r", exc)
        ok = False
    finally:
        try:
            await client.close()
        except Exception as exc:
            log.debug("closing the leave client: %r", exc)
    if ok:
        log.info("left the consumer group (generation %d)", member.generation)
    return ok
