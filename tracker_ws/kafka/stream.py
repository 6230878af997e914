"""A Faust Stream that hands its agent whole batches of records.

Faust's `Stream.take_events` fills its buffer through the stream's own iteration: per record
a full turn of the event loop, the buffering processor, the sensors, and a wait for "full
or `within` seconds"; before that the conductor built an Event per record and put it on the
stream's queue. At full ingest that is most of what the worker does per record besides the
agent's own work.

`BatchStream.batches(n)` opens a lane for the stream's topic on the consumer (drain.py):
the consumer puts lists of Messages on it, no Event, no conductor. It waits for the first
list, takes whatever else is already queued (up to about `n` records) without yielding to
the loop, and yields one list of Messages. Nothing waits for a batch to fill, so a lone
record goes out at once.

Per record it keeps what Faust's iterator does (faust/_cython/streams.pyx `_prepare_event`):
a record of an older consumer generation, or one that arrives while flow control is
suspended (a rebalance), is not given to the agent and is acknowledged as skipped (our
Consumer.ack refuses that ack and has the record delivered again, see transport.py); a
record of an acking topic is tracked as pending before the agent sees it
(`Consumer.track_message`, which also tells the sensors). The records of a batch are
acknowledged after the agent has finished with the batch (when it asks for the next one),
in order, with one `Consumer.ack_many` (transport.py: Faust's per-record ack bookkeeping
under one lock round); a batch the agent does not finish (an exception, a cancelled task)
is handed back to the consumer, which delivers it again.

Installed through Faust's `Stream` setting (the app's stream class); every other stream
behaves exactly as faust.Stream. Public Faust names only: `app.flow_control`,
`app.consumer_generation_id`, `app.topics.acks_enabled_for`, `app.sensors.on_message_out`,
`Consumer.track_message`, `Consumer.ack`, `Message.tracked`, `Topic.topics`,
`Stream.maybe_start`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.types import Message


class BatchStream(faust.Stream[Any]):
    async def batches(self, max_: int) -> AsyncIterator[list[Message]]:
        """Lists of about `max_` records (Messages: raw key and value), each as soon as at
        least one is queued; the records of a list are acknowledged when the next list is
        asked for."""
        started = await self.maybe_start()
        app = self.app
        consumer = cast(Any, app.consumer)
        (topic,) = cast(Any, self.channel).topics  # a faust Topic of one name
        queue = consumer.open_lane(topic)
        # Records the conductor queued for this stream before the lane opened (normally
        # none: the agent starts before the consumer subscribes) are delivered again.
        stray = cast(Any, self.channel).queue
        while not stray.empty():
            consumer.hand_back([stray.get_nowait()])
        get = queue.get
        get_nowait = queue.get_nowait
        empty = queue.empty
        flow_control = app.flow_control
        acks = app.topics.acks_enabled_for(topic)
        track = consumer.track_message
        ack = consumer.ack
        ack_many = consumer.ack_many
        message_out = app.sensors.on_message_out
        live: list[Message] = []
        try:
            while not self.should_stop:
                items = await get()
                while len(items) < max_ and not empty():
                    items = items + get_nowait()
                live, skipped = split(items, flow_control.is_active(), app.consumer_generation_id)
                for message in skipped:
                    ack(message)
                if not live:
                    continue
                if acks:
                    for message in live:
                        if not message.tracked:
                            message.tracked = True
                            track(message)
                self.events_total += len(live)
                yield live
                # Only after the agent asked for more: the whole batch was processed.
                done, live = live, []
                ack_many(done)
                if acks:
                    for message in done:
                        message_out(message.tp, message.offset, message)
        finally:
            # An unfinished batch and what the lane still holds are delivered again.
            consumer.hand_back([live])
            consumer.close_lane(topic, queue)
            if started:
                await self.stop()


def split(items: list[Any], flow_active: bool, generation: int) -> tuple[list[Any], list[Any]]:
    """(records for the agent, records to skip): while flow control is suspended every
    record is skipped, otherwise those of an older consumer generation."""
    if not flow_active:
        return [], list(items)
    live: list[Any] = []
    skipped: list[Any] = []
    for message in items:
        (live if message.generation_id == generation else skipped).append(message)
    return live, skipped
