"""Faust's aiokafka transport with a short fetch long-poll.

faust-streaming hard-codes `fetch_max_wait_ms=1500` for the worker consumer. Brokers that
hold a fetch until the wait expires even when data arrives (seen with the embedded Tansu)
then add up to 1.5 s to every delivery. Positions must arrive within a blink, so the wait is
cut to `TRACKER_WS_FETCH_MAX_WAIT_MS` (default 20). The price is idle polling: every poll
decodes a fetch response for each assigned partition (bench S1, one worker on 12 partitions
holding 10,000 idle connections: 14 % of a core at 10 ms, 5 % at 50 ms; quick S1: 9 %, 7 %,
4 % at 10, 20, 50 ms). At 20 ms the S2 median at 40 fixes/s is 9 ms against 18 ms at 50;
10 ms gained another millisecond there but, with three workers on two cores, doubled the
cross-instance p99 (bench.cluster: 97.8 ms against 44.2 ms at 20). With a broker that
answers as soon as data arrives (Apache Kafka), a longer wait costs no latency: raise it there.

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
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from tracker_ws.kafka.drain import BatchDrain
from tracker_ws.kafka.offset_guard import DELIVER, REWIND, OffsetGuard, Verdict
from tracker_ws.kafka.producer import Producer
from tracker_ws.kafka.rejoin import LeaderAwareAssignor, rejoin_delay

log = logging.getLogger(__name__)

K = TypeVar("K")

FETCH_MAX_WAIT_MS = 20
PIN_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 10.0


def never_committed(committed: Mapping[TopicPartition, int | None]) -> list[TopicPartition]:
    """Input partitions without a committed offset. Changelogs are left alone: table
    recovery positions them itself."""
    return sorted(
        (tp for tp, offset in committed.items() if offset is None and not is_changelog(tp.topic)),
        key=lambda tp: (tp.topic, tp.partition),
    )


def is_changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


def true_end(reported: int, last_seen: int | None) -> int:
    """The log end offset: one past the last record actually in the partition. `reported`
    is the broker's ListOffsets answer, `last_seen` the highest offset a fetch from
    `reported - 1` returned (None: nothing)."""
    return reported if last_seen is None else max(reported, last_seen + 1)


class LogEndCheck(Generic[K]):
    """Which changelog partitions get their log end read from the last batch (true_end)
    before a table recovery. Pure: the consumer thread tells it what the broker said.

    A partition is read when its ListOffsets answer is not confirmed by the high watermark of
    the consumer's own last fetch of it (the fetch response's high watermark is right on
    Tansu too; equal to the answer, the answer is the end: the log only grows). When the
    broker is trusted (TRACKER_WS_TRUST_LOG_END, e.g. Apache Kafka) nothing is read, until a
    fetch or a read shows an answer short of the end: from then on it is read as if untrusted.
    """

    def __init__(self, trusted: bool = False) -> None:
        self.trusted = trusted
        self.short: str | None = None  # the first answer seen short of the end, for the log

    @property
    def active(self) -> bool:
        return not self.trusted or self.short is not None

    def to_read(self, reported: Mapping[K, int], fetched: Mapping[K, int | None]) -> dict[K, int]:
        """`reported`: ListOffsets answers; `fetched`: the high watermark of the consumer's
        last fetch of each partition (None: not fetched since it was assigned)."""
        for key, end in reported.items():
            high = fetched.get(key)
            if high is not None and high > end:
                self.saw_short(key, end, high)
        if not self.active:
            return {}
        return {key: end for key, end in reported.items() if end and fetched.get(key) != end}

    def saw_short(self, key: K, reported: int, end: int) -> bool:
        """Records an answer short of the end; True the first time (worth a log line)."""
        if self.short is not None:
            return False
        self.short = f"{key}: answered {reported}, holds records up to {end - 1}"
        return True


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    _probe: AIOKafkaConsumer | None = None
    _log_end: LogEndCheck[Any] | None = None

    async def highwaters(self, *partitions: Any) -> Mapping[Any, int]:
        """Log end offsets for table recovery, corrected by reading the last batch of each
        partition whose end is not confirmed (LogEndCheck). The embedded Tansu answers
        ListOffsets(latest) with one past the *first* offset of the last record batch, so a
        changelog whose last batch held several records looked shorter than it is, and a
        table was recovered without them (lost interest entries, stale positions after a
        rebalance)."""
        reported: Mapping[Any, int] = await super().highwaters(*partitions)
        result: Mapping[Any, int] = await self.call_thread(self._true_ends, reported)
        return result

    async def _true_ends(self, reported: Mapping[Any, int]) -> Mapping[Any, int]:
        """Runs in the consumer's thread."""
        check = self._ensure_log_end()
        kafka = self._ensure_consumer()
        assigned = kafka.assignment()
        fetched = {tp: kafka.highwater(tp) if tp in assigned else None for tp in reported}
        first_short = check.short is None
        wanted = check.to_read(reported, fetched)
        if not wanted:
            self._log_short(first_short, check)
            return reported
        try:
            seen = await asyncio.wait_for(self._last_offsets(wanted), PROBE_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not read the last batch of %d partitions: %r", len(wanted), exc)
            return reported
        for tp, last in seen.items():
            if last + 1 > reported[tp]:
                check.saw_short(tp, reported[tp], last + 1)
        self._log_short(first_short, check)
        return {tp: true_end(end, seen.get(tp)) for tp, end in reported.items()}

    def _ensure_log_end(self) -> LogEndCheck[Any]:
        if self._log_end is None:
            settings = getattr(self.app, "rt", None)
            self._log_end = LogEndCheck(settings.settings.trust_log_end if settings else False)
        return self._log_end

    @staticmethod
    def _log_short(first: bool, check: LogEndCheck[Any]) -> None:
        if not first or check.short is None:
            return
        if check.trusted:
            log.warning(
                "TRACKER_WS_TRUST_LOG_END is set but the broker answered a log end offset short"
                " of the last record batch (%s): reading changelogs' last batches from now on",
                check.short,
            )
        else:
            log.info("the broker answers log end offsets short of the last batch (%s)", check.short)

    async def _last_offsets(self, reported: Mapping[Any, int]) -> dict[Any, int]:
        """Highest offset in each partition's last batch (a fetch from `reported - 1`)."""
        wanted = {
            TopicPartition(tp.topic, tp.partition): end for tp, end in reported.items() if end
        }
        if not wanted:
            return {}
        probe = await self._ensure_probe()
        probe.assign(list(wanted))
        for tp, end in wanted.items():
            probe.seek(tp, end - 1)
        seen: dict[Any, int] = {}
        while len(seen) < len(wanted):
            batches = await probe.getmany(*(set(wanted) - set(seen)), timeout_ms=500)
            if not batches:
                break
            for tp, records in batches.items():
                if records:
                    seen[tp] = records[-1].offset
        return seen

    async def _ensure_probe(self) -> AIOKafkaConsumer:
        if self._probe is None:
            kafka = self._ensure_consumer()
            self._probe = AIOKafkaConsumer(
                bootstrap_servers=kafka._client._bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=100,
            )
            await self._probe.start()
        return self._probe

    async def on_thread_stop(self) -> None:
        await super().on_thread_stop()
        if self._probe is not None:
            await self._probe.stop()

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # Runs before aiokafka sends JoinGroup: a follower lets the leader rejoin first
        # (rejoin.py).
        await super().on_partitions_revoked(revoked)
        delay = self.rejoin_wait()
        if delay:
            await asyncio.sleep(delay)  # the pacing itself: nothing to wait for but time

    def rejoin_wait(self) -> float:
        """Seconds to wait before rejoining the rebalance that is beginning."""
        assignor = self.app.assignor
        led = assignor.take_leadership() if isinstance(assignor, LeaderAwareAssignor) else True
        rt = getattr(self.app, "rt", None)
        return rejoin_delay(led, rt.settings.kafka_rejoin_stagger_s if rt is not None else 0.0)

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


class Consumer(BatchDrain, faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's consumer with two guarantees Faust lacks after rebalances (offset_guard.py):
    no hole in what reaches the agents, and no ack for a record the agents never saw."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: OffsetGuard[Any] = OffsetGuard()
        self.refused_acks = 0
        self.cleared = 0

    def hand_back(self, items: Iterable[Any]) -> None:
        """Items of a stream queue or a lane Faust is emptying (app.HandBackQueue): on a
        rebalance and again on *each* resume of flow control, which also happens after the
        seek that ends a rebalance, so records handed to a stream in between are dropped
        unseen. Each one goes back to the guard, to be delivered again (unless the next
        rebalance's seek covers it anyway)."""
        for item in items:
            # A stream queue holds Events, a lane (drain.py) lists of Messages.
            messages = item if isinstance(item, list) else [getattr(item, "message", None)]
            for message in messages:
                if message is None or message.acked or is_changelog(message.topic):
                    continue
                self.guard.unprocessed(message.tp, message.offset)
                self.cleared += 1

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # Faust just set the read offsets from the committed ones (None: never committed,
        # started at the pinned reset position): delivery resumes exactly there.
        for tp in self.assignment():
            if not is_changelog(tp.topic):
                self.guard.expect(tp, self._read_offset.get(tp))

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        for tp in revoked:
            self.guard.expect(tp, None)  # forgotten: the next assignment seeks anyway
        await super().on_partitions_revoked(revoked)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        for item in await self.fetch_batch(timeout):
            yield item

    async def fetch_batch(self, timeout: float) -> list[tuple[Any, Any]]:
        """One fetch as a list of (tp, Message), through the offset guard: Faust's `getmany`
        (its scheduler's round-robin order; stopped by a rebalance or a new generation; a
        seek to the committed offsets while the flow is stopped) without two async
        generators and an end-offset lookup per record (the high watermark, from the fetch
        response, is the same for every record of a partition: told to the monitor once
        per partition and fetch). The drain (drain.py) takes the list at once."""
        if self.flow_active and self.app.flow_control.is_active():
            await self._redeliver()
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:
            # As Faust's getmany: a fetch while the flow is stopped seeks back.
            try:
                await self.perform_seek()
            except Exception as exc:
                log.warning("could not seek back to the committed offsets: %r", exc)
            return []
        app = self.app
        generation = app.consumer_generation_id
        buffered = self._buffered_partitions
        to_message = self._to_message
        check = self.guard.check
        monitored: set[Any] = set()
        rewound: set[Any] = set()
        out: list[tuple[Any, Any]] = []
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active or app.consumer_generation_id != generation:
                break
            if active is not None and tp not in active and tp not in buffered:
                continue
            if tp not in monitored:
                monitored.add(tp)
                app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if is_changelog(tp.topic):
                out.append((tp, to_message(tp, record)))
                continue
            if tp in rewound:
                continue  # the rest of a batch that ran past a hole
            verdict = check(tp, record.offset)
            if verdict.action == DELIVER:
                if verdict.gave_up:
                    log.warning(
                        "%s[%d]: offsets %s..%d never came back after %d seeks; going on",
                        tp.topic,
                        tp.partition,
                        verdict.to,
                        record.offset - 1,
                        self.guard.max_rewinds,
                    )
                out.append((tp, to_message(tp, record)))
            elif verdict.action == REWIND:
                rewound.add(tp)
                await self._rewind(tp, verdict, record.offset)
        return out

    async def _redeliver(self) -> None:
        taken = self.guard.take_unprocessed()
        if not taken:  # the usual case, on every fetch: no assignment set built
            return
        assigned = self.assignment()
        for tp, offset in sorted(taken.items()):
            if tp in assigned:
                log.info("%s[%d]: delivering again from %d", tp.topic, tp.partition, offset)
                await self._seek_back(tp, offset)

    async def _seek_back(self, tp: Any, offset: int) -> None:
        try:
            await self._thread.seek_wait({tp: offset})
        except Exception as exc:  # revoked meanwhile: the new assignment seeks anyway
            log.info("could not seek %s[%d] back: %r", tp.topic, tp.partition, exc)

    async def _rewind(self, tp: Any, verdict: Verdict, got: int) -> None:
        assert verdict.to is not None
        if verdict.first:
            log.warning(
                "%s[%d]: fetched offset %d while %d..%d were never processed; seeking back",
                tp.topic,
                tp.partition,
                got,
                verdict.to,
                got - 1,
            )
        await self._seek_back(tp, verdict.to)

    def ack(self, message: Any) -> bool:
        app = self.app
        if is_changelog(message.topic) or (
            app.flow_control.is_active() and message.generation_id == app.consumer_generation_id
        ):
            return bool(super().ack(message))
        # A stream skips a record that arrives while a rebalance is under way (or from an
        # older generation) and then acks it anyway. Acking would let the next commit move
        # past a record no agent processed: it stays uncommitted and is delivered again,
        # by the seek to the committed offsets after the rebalance or else by _redeliver.
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
        if not self.refused_acks:
            log.info(
                "not acknowledging %s[%d]@%d, skipped by its stream (flow %s, generation %s/%s)",
                message.topic,
                message.partition,
                message.offset,
                app.flow_control.is_active(),
                message.generation_id,
                app.consumer_generation_id,
            )
        self.refused_acks += 1
        self.guard.unprocessed(message.tp, message.offset)
        return False

    def ack_many(self, messages: list[Any]) -> None:
        """`ack` of each message of one topic, in order, with the bookkeeping of
        Faust's `Consumer.ack` done under one `ack_lock` round for the list: per record, the
        lock, two method calls, the topic's acks check and the waiter's notify were a
        twentieth of the worker's CPU at full ingest. A record that `ack` would refuse
        (skipped by its stream: flow suspended, older generation) takes `ack` itself."""
        app = self.app
        if not messages:
            return
        if not app.flow_control.is_active() or not app.topics.acks_enabled_for(messages[0].topic):
            for message in messages:
                self.ack(message)
            return
        generation = app.consumer_generation_id
        committed_offset = self._committed_offset
        acked_index = self._acked_index
        acked = self._acked
        unacked = self._unacked_messages
        refused: list[Any] = []
        n = 0
        with ack_lock:
            for message in messages:
                if message.generation_id != generation:
                    refused.append(message)
                    continue
                if message.acked:
                    continue
                message.acked = True
                tp = message.tp
                offset = message.offset
                committed = committed_offset[tp]
                if committed is None or offset >= committed:
                    index = acked_index[tp]
                    if offset not in index:
                        unacked.discard(message)
                        index.add(offset)
                        acked[tp].append(offset)
                        n += 1
            self._n_acked += n
            notify(self._waiting_for_ack)
        for message in refused:
            self.ack(message)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "offset gap on %s[%d]: %d..%d marked done by Faust (committed %s)",
            tp.topic,
            tp.partition,
            offset_from,
            offset_to - 1,
            self._committed_offset.get(tp),
        )
        await super()._add_gap(tp, offset_from, offset_to)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = Consumer
    Producer = Producer
