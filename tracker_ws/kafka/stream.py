"""A Faust Stream that hands its agent whole batches of events.

Faust's `Stream.take_events` fills its buffer through the stream's own iteration: a passive
drainer task runs `__aiter__`, which per record sleeps once (`await sleep(0)`, a full turn of
the event loop), runs the buffering processor, calls the sensors, and then the buffer
owner waits for "full or `within` seconds". At full ingest that is most of what the worker
does per record besides the agent's own work.

`BatchStream.batches(n)` reads the stream's channel queue directly: it waits for the first
event, then takes whatever else is already queued (up to `n`) without yielding to the loop,
and yields the list. Nothing waits for a batch to fill, so a lone record goes out at once.

Per event it keeps what Faust's iterator does (faust/_cython/streams.pyx `_prepare_event`):
an event of an older consumer generation, or one that arrives while flow control is
suspended (a rebalance), is not given to the agent and is acknowledged as skipped (our
Consumer.ack refuses that ack and has the record delivered again, see transport.py); a
record of an acking topic is tracked as pending before the agent sees it
(`Consumer.track_message`). The events of a batch are acknowledged after the agent has
finished with the batch (when it asks for the next one), in order; a batch the agent does
not finish (an exception, a cancelled task) is not acknowledged, so its offsets are never
committed and the records are read again by whoever owns the partition next.

Installed through Faust's `Stream` setting (the app's stream class); every other stream
behaves exactly as faust.Stream. Uses only public Faust names: `channel.queue`,
`app.flow_control`, `app.consumer_generation_id`, `app.topics.acks_enabled_for`,
`Consumer.track_message`, `Message.tracked`, `Stream.ack`, `Stream.maybe_start`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.types import ChannelT, EventT


class BatchStream(faust.Stream[Any]):
    async def batches(self, max_: int) -> AsyncIterator[list[EventT[Any]]]:
        """Lists of up to `max_` events, each as soon as at least one is queued; the events
        of a list are acknowledged when the next list is asked for."""
        started = await self.maybe_start()
        channel: ChannelT[Any] = cast(ChannelT[Any], self.channel)
        queue = channel.queue
        get = queue.get
        get_nowait = queue.get_nowait
        empty = queue.empty
        app = self.app
        consumer = app.consumer
        flow_control = app.flow_control
        acks_enabled_for = app.topics.acks_enabled_for
        try:
            while not self.should_stop:
                items = [await get()]
                while len(items) < max_ and not empty():
                    items.append(get_nowait())
                live, skipped = split(items, flow_control.is_active(), app.consumer_generation_id)
                for event in skipped:
                    await self.ack(event)
                for event in live:
                    message = event.message
                    if not message.tracked and acks_enabled_for(message.topic):
                        message.tracked = True
                        consumer.track_message(message)
                if not live:
                    continue
                self.events_total += len(live)
                yield live
                # Only after the agent asked for more: the whole batch was processed.
                for event in live:
                    await self.ack(event)
        finally:
            if started:
                await self.stop()


def split(items: list[Any], flow_active: bool, generation: int) -> tuple[list[Any], list[Any]]:
    """(events for the agent, events to skip): while flow control is suspended every event
    is skipped, otherwise those of an older consumer generation."""
    if not flow_active:
        return [], list(items)
    live: list[Any] = []
    skipped: list[Any] = []
    for event in items:
        (live if event.message.generation_id == generation else skipped).append(event)
    return live, skipped
