"""Log end offsets as table recovery sees them (tracker_ws/kafka/transport.py): one past the last
record in the partition, also when the last record batch holds several records (the
embedded broker's ListOffsets answer is then too small, and a table recovered up to it
would miss the batch's later records)."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tracker_ws import devstack
from tracker_ws.kafka.transport import ConsumerThread, true_end


class _Thread(ConsumerThread):
    """The probing half of the worker's consumer thread, on a plain consumer."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

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
