"""Log end offsets as table recovery sees them (tracker_ws/kafka/transport.py): one past the last
record in the partition, also when the last record batch holds several records (the
embedded broker's ListOffsets answer is then too small, and a table recovered up to it
would miss the batch's later records)."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tracker_ws.kafka.transport import ConsumerThread, LogEndCheck, true_end
from tracker_ws_dev import stack as devstack


class _Thread(ConsumerThread):
    """The probing half of the worker's consumer thread, on a plain consumer."""

    def __init__(self, consumer: AIOKafkaConsumer, trusted: bool = False) -> None:
        self._consumer = consumer
        self._log_end = LogEndCheck(trusted)

    def _ensure_consumer(self) -> Any:
        return self._consumer


async def test_end_offsets_count_every_record_of_a_multi_record_last_batch(broker_url: str) -> None:
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    await devstack.create_topics(broker_url, {topic: 4})
    bootstrap = devstack.bootstrap_servers(broker_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await producer.start()
    await consumer.start()
    thread = _Thread(consumer)
    try:
        # p0: one batch of 7; p1: a batch of 3 then a single record; p2: 2 single records;
        # p3: empty.
        sends = [await producer.send(topic, b"x", partition=0) for _ in range(7)]
        sends += [await producer.send(topic, b"x", partition=1) for _ in range(3)]
        await producer.flush()
        for partition in (1, 2, 2):
            sends.append(await producer.send(topic, b"x", partition=partition))
            await producer.flush()
        last: dict[int, int] = {}
        for fut in sends:
            meta = await fut
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
        tps = [TopicPartition(topic, p) for p in range(4)]
        reported = await consumer.end_offsets(tps)
        seen = await thread._last_offsets(reported)
        ends = {tp.partition: true_end(reported[tp], seen.get(tp)) for tp in tps}
        assert ends == {0: 7, 1: 4, 2: 2, 3: 0}, (reported, seen)
        assert ends == {p: last.get(p, -1) + 1 for p in range(4)}
    finally:
        if thread._probe is not None:
            await thread._probe.stop()
        await consumer.stop()
        await producer.stop()


async def test_a_trusted_broker_is_read_once_a_fetch_shows_its_answer_short(
    broker_url: str,
) -> None:
    """TRACKER_WS_TRUST_LOG_END=1 reads nothing, until the consumer's own fetch of a partition
    holds records past the broker's answer (the embedded broker: a multi-record batch)."""
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    await devstack.create_topics(broker_url, {topic: 2})
    bootstrap = devstack.bootstrap_servers(broker_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await producer.start()
    await consumer.start()
    trusted = _Thread(consumer, trusted=True)
    untrusted = _Thread(consumer)
    try:
        sends = [await producer.send(topic, b"x", partition=0) for _ in range(5)]
        await producer.flush()
        for fut in sends:
            await fut
        tps = [TopicPartition(topic, p) for p in range(2)]
        reported = await consumer.end_offsets(tps)
        corrected = await untrusted._true_ends(reported)
        assert corrected == {tps[0]: 5, tps[1]: 0}, reported
        assert trusted._probe is None
        assert await trusted._true_ends(reported) == reported  # trusted: not read
        assert trusted._probe is None
        if reported[tps[0]] == 5:
            return  # a broker that answers right: nothing more to see
        assert untrusted._log_end is not None and untrusted._log_end.short is not None
        consumer.assign(tps)
        consumer.seek(tps[0], 0)
        fetched = 0
        while fetched < 5:
            batches = await consumer.getmany(tps[0], timeout_ms=1000)
            fetched += sum(len(records) for records in batches.values())
        assert await trusted._true_ends(reported) == corrected
        assert trusted._log_end is not None and trusted._log_end.active
    finally:
        for thread in (trusted, untrusted):
            if thread._probe is not None:
                await thread._probe.stop()
        await consumer.stop()
        await producer.stop()
