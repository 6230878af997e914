"""Every instance reads the whole compacted vehicle-registry topic into memory.

Permission checks happen on whichever instance holds the connection, for any vehicle, so
each instance needs the full registry; the GPS agent enriches fixes from the same copy.
A plain aiokafka consumer without a group (all partitions assigned, read from the start)
does this; Faust's GlobalTable would too, but it can loop in recovery with several workers
(ARCHITECTURE §2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from tracker_ws.domain.errors import InvalidEvent
from tracker_ws.domain.events import load_json
from tracker_ws.domain.models import Vehicle
from tracker_ws.domain.registry import parse_vehicle
from tracker_ws.domain.validate import uuid_str
from tracker_ws.runtime import Runtime
from tracker_ws.tables.definitions import VEHICLE_REGISTRY

log = logging.getLogger(__name__)

# (vehicleId, previous record or None, new record or None): for permission re-checks.
RegistryListener = Callable[[str, Vehicle | None, Vehicle | None], None]


class RegistryReader:
    def __init__(self, rt: Runtime, bootstrap: str) -> None:
        self.rt = rt
        self.bootstrap = bootstrap
        self.caught_up = asyncio.Event()
        self.listeners: list[RegistryListener] = []
        self.applied = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        metrics = self.rt.metrics
        try:
            vid_key = uuid_str(key.decode(), "key", InvalidEvent) if key else None
            record = parse_vehicle(vid_key, load_json(value))
        except (InvalidEvent, UnicodeDecodeError) as exc:
            metrics.stream(VEHICLE_REGISTRY, "invalid")
            log.warning("skipping vehicle-registry record %r: %s", key, exc)
            return
        if record is None:
            if vid_key is None:
                metrics.stream(VEHICLE_REGISTRY, "invalid")
                return
            before = self.rt.registry.delete(vid_key)
            self._notify(vid_key, before, None)
        else:
            before = self.rt.registry.upsert(record)
            self._notify(record.vehicle_id, before, record)
        self.applied += 1
        metrics.stream(VEHICLE_REGISTRY, "ok")

    def _notify(self, vid: str, before: Vehicle | None, after: Vehicle | None) -> None:
        if before == after:
            return
        for listener in self.listeners:
            listener(vid, before, after)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            tps = [TopicPartition(VEHICLE_REGISTRY, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if end[tp] > 0}
            if not pending:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for rec in records:
                        self.apply(rec.key, rec.value)
                    if tp in pending and records and records[-1].offset + 1 >= end[tp]:
                        pending.discard(tp)
                if pending and not batches:
                    # Compaction can leave the end offset past the last record.
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                if not pending and not self.caught_up.is_set():
                    log.info("vehicle registry loaded: %d vehicles", len(self.rt.registry))
                    self.caught_up.set()
        finally:
            await consumer.stop()

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer) -> list[int]:
        for _ in range(100):
            parts = consumer.partitions_for_topic(VEHICLE_REGISTRY)
            if parts:
                return sorted(parts)
            # Metadata for a just-created topic arrives after a refresh.
            await consumer._client.force_metadata_update()
        raise RuntimeError(f"topic {VEHICLE_REGISTRY} has no partitions")
