"""Faust's aiokafka transport with a short fetch long-poll.

faust-streaming hard-codes `fetch_max_wait_ms=1500` for the worker consumer. Brokers that
hold a fetch until the wait expires even when data arrives (seen with the embedded Tansu)
then add up to 1.5 s to every delivery. Positions must arrive within a blink, so the wait is
cut to `TRACKER_WS_FETCH_MAX_WAIT_MS` (default 50). The price is idle polling: every poll
decodes a fetch response for each assigned partition (measured: a 20 ms wait cost about a
tenth of a core on an idle worker). With a broker that answers as soon as data arrives
(Apache Kafka), a longer wait costs no latency at all.

It also pins a starting offset for every input partition the group has never committed.
`consumer_auto_offset_reset="latest"` is right for a brand-new group (no replay of old
history), but Faust commits only offsets of processed records: a partition that is assigned,
receives records and moves to another member (rebalance, kill -9, a stopped member coming back)
before anything was committed would start at the end again on the new owner and skip them.
Committing the reset position as soon as a partition is assigned makes "latest" apply once per
group, on its first assignment, and never again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 50
PIN_TIMEOUT_S = 10.0


def never_committed(committed: Mapping[TopicPartition, int | None]) -> list[TopicPartition]:
    """Input partitions without a committed offset. Changelogs are left alone: table
    recovery positions them itself."""
    return sorted(
        (tp for tp, offset in committed.items() if offset is None and not is_changelog(tp.topic)),
        key=lambda tp: (tp.topic, tp.partition),
    )


def is_changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
        settings = getattr(self.app, "rt", None)
        wait = settings.settings.fetch_max_wait_ms if settings is not None else FETCH_MAX_WAIT_MS
        consumer._fetch_max_wait_ms = wait
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        # Faust's signature says int; aiokafka gives None for a partition never committed.
        result: Mapping[Any, int] = await self.call_thread(self._seek_and_pin)
        return result

    async def _seek_and_pin(self) -> Mapping[TopicPartition, int | None]:
        """Runs in the consumer's thread: seek to the committed offsets, then commit the
        reset position of every input partition that has none (see the module doc)."""
        consumer = self._ensure_consumer()
        committed: Mapping[TopicPartition, int | None] = await consumer.seek_to_committed()
        fresh = never_committed(committed)
        if not fresh:
            return committed
        try:
            positions = {
                tp: await asyncio.wait_for(consumer.position(tp), PIN_TIMEOUT_S) for tp in fresh
            }
            await consumer.commit(positions)
        except Exception as exc:  # a new rebalance, a broker hiccup: the next assignment retries
            log.warning("could not pin the start of %d new partitions: %r", len(fresh), exc)
        else:
            log.info("pinned the start of %d partitions the group never committed", len(fresh))
        return committed


class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = Consumer
