"""Faust's aiokafka producer with a deeper buffer for table changelogs.

Table writes (`table[key] = value`) are synchronous, so Faust queues their changelog
messages in the producer's `ProducerBuffer` and a background task sends them one by one.
When more than `ProducerBuffer.max_messages` (100) are queued, the conductor stops handing
records to every stream (`wait_until_producer_ebb`) until the buffer has sent 100 of them,
each awaited in turn. The GPS agent writes `last_positions` the first time it sees a
vehicle, so a worker that meets a fleet of 2,000 vehicles queues 2,000 changelog writes at
once, and ingest stalled on them in steps of 100 (0.05–0.3 s each against a busy broker,
most of S5's wall time). The writes still go out in order, in the background, and every
commit still flushes them first (Faust's `Consumer._commit_offsets`); only the stall goes.
The limit stays, at `BUFFER_MAX_MESSAGES`, so a broker that stops accepting writes still
stops ingest before memory grows without bound.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

BUFFER_MAX_MESSAGES = 20_000


class Producer(faust_aiokafka.Producer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ProducerBuffer's class-level limit, set for the buffer this producer owns.
        self.buffer.max_messages = BUFFER_MAX_MESSAGES
