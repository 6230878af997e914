"""Stalled input partitions: detection (pure) and the consumer snapshot it reads (adapter);
whether the consumer's client reaches the broker.

A partition is stalled when the broker holds records past the group's committed offset and
that offset has not moved for `threshold_s` while the worker was ready. Each stalled
partition is logged once with everything the consumer knows of it (paused by Faust? in the
active set? aiokafka fetch position?) so the cause can be told apart: a partition that is
never fetched, or records fetched and never processed. `/health` counts them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tracker_ws.kafka.transport import is_changelog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    committed: int | None  # the group's committed offset as Faust knows it
    end: int | None  # log end offset on the broker
    fetch_position: int | None  # aiokafka's next fetch offset
    faust_paused: bool
    faust_active: bool
    kafka_paused: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    @property
    def lag(self) -> int:
        if self.end is None:
            return 0
        start = self.committed if self.committed is not None else self.fetch_position
        return max(0, self.end - start) if start is not None else 0


@dataclass
class _Seen:
    committed: int | None
    since: float
    reported: bool = False


class StallWatch:
    """Remembers when each partition's committed offset last moved."""

    def __init__(self, threshold_s: float) -> None:
        self.threshold_s = threshold_s
        self._seen: dict[tuple[str, int], _Seen] = {}

    def observe(
        self, now: float, states: Iterable[PartitionState]
    ) -> tuple[list[PartitionState], list[PartitionState]]:
        """Returns (stalled now, newly stalled since the last call)."""
        stalled: list[PartitionState] = []
        new: list[PartitionState] = []
        current: dict[tuple[str, int], _Seen] = {}
        for st in states:
            prev = self._seen.get(st.key)
            if prev is None or prev.committed != st.committed or st.lag == 0:
                seen = _Seen(st.committed, now)
            else:
                seen = prev
            current[st.key] = seen
            if st.lag > 0 and now - seen.since >= self.threshold_s:
                stalled.append(st)
                if not seen.reported:
                    seen.reported = True
                    new.append(st)
        self._seen = current
        return stalled, new


# ------------------------------------------------------------------------------ adapter


async def snapshot(app: Any) -> dict[str, Any]:
    """What the Faust consumer and its aiokafka consumer know of every assigned input
    partition, plus the broker's log end offsets. Reads private attributes of both: this is
    a diagnostic, kept in one place."""
    consumer = app.consumer
    thread = consumer._thread
    assigned = sorted(
        (tp for tp in consumer.assignment() if not is_changelog(tp.topic)),
        key=lambda tp: (tp.topic, tp.partition),
    )

    async def from_thread() -> tuple[Mapping[Any, int], dict[Any, tuple[Any, bool]]]:
        kafka = thread._ensure_consumer()
        assignment = kafka._subscription.subscription.assignment  # the fetcher's too
        local: dict[Any, tuple[Any, bool]] = {}
        for tp in assigned:
            state = assignment.state_value(tp) if assignment is not None else None
            if state is None:
                local[tp] = (None, False)
            else:
                pos = state.position if state.has_valid_position else None
                local[tp] = (pos, bool(state.paused))
        ends: Mapping[Any, int] = await kafka.end_offsets(assigned) if assigned else {}
        return ends, local

    ends, local = await thread.call_thread(from_thread)
    paused = set(consumer._paused_partitions)
    active = set(consumer._get_active_partitions())
    committed = consumer._committed_offset
    parts = [
        PartitionState(
            topic=tp.topic,
            partition=tp.partition,
            committed=committed.get(tp),
            # The embedded broker can report an end short of a multi-record last batch
            # (transport.true_end); what was fetched is there for sure. Not corrected by
            # reading the last batches as table recovery does: every 5 s that would hold up
            # the consumer thread, and a stall shows without it.
            end=_max_known(ends.get(tp), local[tp][0]),
            fetch_position=local[tp][0],
            faust_paused=tp in paused,
            faust_active=tp in active,
            kafka_paused=local[tp][1],
        )
        for tp in assigned
    ]
    guard = getattr(consumer, "guard", None)
    return {
        "generation": app.consumer_generation_id,
        # transport.Consumer: holes rewound, holes given up on, acks of unseen records refused,
        # records dropped from stream queues before a stream saw them
        "rewound": guard.rewound if guard is not None else 0,
        "givenUp": guard.given_up if guard is not None else 0,
        "refusedAcks": getattr(consumer, "refused_acks", 0),
        "clearedUnseen": getattr(consumer, "cleared", 0),
        "flowActive": bool(consumer.flow_active),
        "recoveryCompleted": app.tables.recovery.completed.is_set(),
        "partitions": parts,
    }


async def broker_reachable(app: Any) -> bool:
    """Whether the worker's own Kafka client can reach a broker now (for /health)."""
    try:
        consumer: Any = app.consumer
        client = consumer._thread._ensure_consumer()._client  # the live aiokafka client
        return bool(await asyncio.wait_for(client.ready(client.get_random_node()), timeout=2.0))
    except Exception:
        return False


def _max_known(a: int | None, b: int | None) -> int | None:
    return max((x for x in (a, b) if x is not None), default=None)


def describe(snap: Mapping[str, Any], only: Iterable[PartitionState] | None = None) -> str:
    parts = list(only) if only is not None else list(snap["partitions"])
    rows = ", ".join(
        f"{p.topic}[{p.partition}] committed={p.committed} end={p.end} "
        f"fetch={p.fetch_position} faust_paused={p.faust_paused} "
        f"faust_active={p.faust_active} kafka_paused={p.kafka_paused}"
        for p in parts
    )
    return (
        f"generation={snap['generation']} flow_active={snap['flowActive']} "
        f"recovery_completed={snap['recoveryCompleted']}: {rows}"
    )


def as_json(snap: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(snap)
    out["partitions"] = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "committed": p.committed,
            "end": p.end,
            "lag": p.lag,
            "fetchPosition": p.fetch_position,
            "faustPaused": p.faust_paused,
            "faustActive": p.faust_active,
            "kafkaPaused": p.kafka_paused,
        }
        for p in snap["partitions"]
    ]
    return out
