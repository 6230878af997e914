"""Reading what a worker did with stream input: its dead-letter topics and its
`ws_stream_events_total` counters."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import Worker


async def _reader(broker_url: str) -> AIOKafkaConsumer:
    """A started consumer without a group, reading from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=devstack.bootstrap_servers(broker_url),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    return consumer


def stream_count(worker: Worker, topic: str, outcome: str) -> float:
    """The worker's `ws_stream_events_total{topic, outcome}`."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "ws_stream_events_total"
                and s.labels.get("topic") == topic
                and s.labels.get("outcome") == outcome
            ):
                total += s.value
    return total


async def read_dead_letters(
    broker_url: str, topic: str, markers: set[str], timeout: float
) -> dict[str, Any]:
    """marker -> dead-letter record of `topic` (a `…-dlq` topic) whose key or value holds
    the marker, read from the beginning without a group."""
    consumer = await _reader(broker_url)
    found: dict[str, Any] = {}
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while markers - found.keys() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    letter = orjson.loads(rec.value)
                    haystack = f"{letter.get('key')} {letter.get('value')}"
                    for marker in markers:
                        if marker in haystack:
                            found.setdefault(marker, letter)
    finally:
        await consumer.stop()
    return found


async def read_partition(broker_url: str, topic: str, partition: int) -> list[tuple[int, Any, Any]]:
    """(offset, key, value) of every record in one partition, read without a group."""
    consumer = await _reader(broker_url)
    out: list[tuple[int, Any, Any]] = []
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # Until a fetch comes back empty: the embedded broker's end offset can be short of
        # the last record (tracker_ws.kafka.transport.true_end).
        while batches := await consumer.getmany(tp, timeout_ms=500):
            out.extend((r.offset, r.key, r.value) for r in batches.get(tp, []))
    finally:
        await consumer.stop()
    return out
