"""Hand-over from the consumer to the streams, one fetched batch at a time.

Faust's `Consumer._drain_messages` delivers each fetched record with
`wait_first(callback(message), suspend_flow.wait())`: four tasks (the callback, the suspend
wait, the service's stopped and crashed waits), an `asyncio.wait` and three cancellations
per record, about a third of the worker's CPU per record at full ingest. Here the race
against `suspend_flow` (a rebalance stopping the flow) is run once per fetched batch: one
task delivers the batch record by record (the conductor's `on_message`, which puts each
event on its stream's queue and waits only when a queue is full or flow control is
suspended), and a rebalance that stops the flow cancels it mid-batch.

What stays as in Faust: records are handed over in fetch order; gaps and `commit_every`
are handled before each record; `_read_offset` advances past every record of the batch,
delivered or not (Faust does the same after an interrupted `wait_first`; the offset guard
in transport.py re-delivers what a stream never processed).

Lanes. A topic whose agent opened a lane (`open_lane`, the GPS agent's BatchStream) skips
the conductor: Faust's `on_message` costs, per record and per subscribing stream, a lock
round, a flow-control and a producer-buffer wait, an Event and a queue put with pressure
callbacks. Its records are collected while the batch is delivered and put on the lane's
queue as lists of Messages (at most LANE_BATCH each), after the same two waits once per
list. The lane's queue is built by `App.FlowControlQueue` like every stream queue, so a
rebalance empties it and hands its records back (app.HandBackQueue). A list not yet put
when a rebalance interrupts the batch is passed over like the rest of the batch.

The fetch itself is `Consumer.fetch_batch` (transport.py): Faust's `getmany` and the
offset guard as one list per fetch, not two async generators per record.

Private names of faust used here (checked by kafka/compat.py): `Consumer._drain_messages`
(overridden), `_read_offset`, `_n_acked`, `_commit_every`, `_add_gap`, `_stopped` (mode).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from mode.utils.queues import ThrowableQueue

YIELD_EVERY = 100  # records handed to the conductor between two sleep(0)s, as in Faust
LANE_BATCH = 500  # records per list put on a lane
LANE_DEPTH = 8  # lists a lane holds before the hand-over waits for its agent


class BatchDrain:
    """Mixin for a faust Consumer: `_drain_messages` with one `wait_first` per batch."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs Kafka
        me = cast(Any, self)
        fetch_batch = me.fetch_batch
        consumer_should_stop = me._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag = me.diag.set_flag
        unset_flag = me.diag.unset_flag
        suspend_flow = me.suspend_flow
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batch: list[tuple[Any, Any]] = await fetch_batch(timeout=1.0)
                await me.sleep(0)
                if not me.should_stop and batch:
                    if suspend_flow.is_set():
                        done = 0
                    else:
                        progress = [0]
                        await me.wait_first(
                            self._deliver_batch(batch, progress), suspend_flow.wait()
                        )
                        done = progress[0]
                    # Interrupted by a rebalance: the rest is passed over, as Faust does.
                    read_offset = me._read_offset
                    for tp, message in batch[done:]:
                        r_offset = read_offset.get(tp)
                        if r_offset is None or message.offset >= r_offset:
                            read_offset[tp] = message.offset
                unset_flag(CONSUMER_FETCHING)
        except me.consumer_stopped_errors:
            if me.transport.app.should_stop:
                me.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if me.transport.app.should_stop:
                me.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            me.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    _commit_task: asyncio.Task[Any] | None = None
    _lanes: Mapping[str, Any] = MappingProxyType({})  # topic → queue of Message lists

    def open_lane(self, topic: str) -> ThrowableQueue[list[Any]]:
        """From now on the records of `topic` go to the returned queue, in lists, instead of
        through the conductor to the topic's streams. One lane per topic: a second
        `open_lane` (an agent restarted) replaces the first."""
        queue: ThrowableQueue[list[Any]] = cast(Any, self).app.FlowControlQueue(
            maxsize=LANE_DEPTH, clear_on_resume=True
        )
        self._lanes = MappingProxyType({**self._lanes, topic: queue})
        return queue

    def close_lane(self, topic: str, queue: ThrowableQueue[list[Any]]) -> None:
        """Back to the conductor. What the lane still holds is emptied like a stream queue
        on a rebalance (handed back, so it is delivered again)."""
        if self._lanes.get(topic) is queue:
            self._lanes = MappingProxyType({k: v for k, v in self._lanes.items() if k != topic})
        queue.clear()

    async def _to_lane(self, topic: str, messages: list[Any]) -> None:
        me = cast(Any, self)
        # What the conductor awaits per record: a full producer buffer (changelog writes)
        # holds the input back; put() waits while flow control is suspended or the lane full.
        await me.app.producer.buffer.wait_until_ebb()
        queue = self._lanes.get(topic)
        if queue is None:  # closed meanwhile (its agent stopped): delivered again later
            me.hand_back([messages])
            return
        await queue.put(messages)

    def _commit_behind(self) -> None:
        """Faust awaits this commit in the drain loop, which then waits for the producer's
        flush (changelogs) and the broker: seconds against a busy broker, with nothing handed
        to the streams meanwhile. Here it runs beside the hand-over, one at a time."""
        task = self._commit_task
        if task is None or task.done():
            self._commit_task = asyncio.get_running_loop().create_task(
                cast(Any, self).commit(), name="commit-every"
            )

    async def _deliver_batch(self, batch: list[tuple[Any, Any]], progress: list[int]) -> None:
        """Hand each record to its streams (the conductor's callback), in order;
        `progress[0]` counts the records passed on."""
        me = cast(Any, self)
        callback = me.callback
        read_offset = me._read_offset
        get_read_offset = read_offset.__getitem__
        set_read_offset = read_offset.__setitem__
        acks_enabled_for = me.app.topics.acks_enabled_for
        commit_every = me._commit_every
        sleep = asyncio.sleep
        since_yield = 0
        lanes = self._lanes
        collected: dict[str, list[Any]] = {}
        for i, (tp, message) in enumerate(batch):
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await me._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and me._n_acked >= commit_every:
                    me._n_acked = 0
                    self._commit_behind()
                topic = message.topic
                if topic in lanes:
                    bucket = collected.setdefault(topic, [])
                    bucket.append(message)
                    if len(bucket) >= LANE_BATCH:
                        del collected[topic]
                        await self._to_lane(topic, bucket)
                else:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await sleep(0)
                        since_yield = 0
                    await callback(message)
                set_read_offset(tp, offset)
            progress[0] = i + 1
        for topic, bucket in collected.items():
            await self._to_lane(topic, bucket)
