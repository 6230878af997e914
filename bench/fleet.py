"""The benchmark fleet and a paced GPS producer.

Vehicles come from `tracker_ws_dev.simulator.Fleet` (deterministic ids, realistic fixes). Each fix
carries its production time (`time.time()` in epoch ms) as its `timestamp`, so a client on the
same machine measures latency as receipt time minus fix timestamp.

The producer builds one Kafka batch per partition per tick (key = vehicleId bytes, Kafka's
murmur2 partitioner), which keeps its own CPU cost low enough to share a core with the load
generator.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from tracker_ws.agents.positions import partition_of
from tracker_ws_dev.simulator import Fleet, SimVehicle, register

GPS_TOPIC = "gps-events"
REGISTRY_TOPIC = "vehicle-registry"
PARTITIONS = 12
TOPICS = {GPS_TOPIC: PARTITIONS, "gps-events-dlq": PARTITIONS, REGISTRY_TOPIC: PARTITIONS}
TOPIC_CONFIGS = {REGISTRY_TOPIC: {"cleanup.policy": "compact"}}
# The producer sends one batch per partition every TICK_S (a GPS gateway batches too). Each fix
# is stamped when its batch is handed to the producer. Measured on this machine: 5 ms ticks
# (one small produce request per partition every 5 ms) cost the embedded broker twice the CPU
# and put the Kafka leg alone at p99 ≈ 170 ms at 2,000 fixes/s; 20 ms ticks keep that leg at
# p99 ≈ 20–35 ms up to 8,000 fixes/s.
TICK_S = 0.02


@dataclass
class BenchFleet:
    fleet: Fleet
    by_company: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, vehicles: int, companies: int, seed: int = 4) -> BenchFleet:
        fleet = Fleet.build(vehicles, companies, groups_per_company=2, seed=seed)
        by_company: dict[str, list[str]] = defaultdict(list)
        for v in fleet.vehicles:
            by_company[v.company_id].append(v.vehicle_id)
        return cls(fleet, dict(by_company))

    @property
    def vehicles(self) -> list[SimVehicle]:
        return self.fleet.vehicles

    def companies(self) -> list[str]:
        return list(self.by_company)


class FixProducer:
    """Produces fixes at a given total rate, round-robin over a set of vehicles."""

    def __init__(self, bootstrap: str, fleet: BenchFleet) -> None:
        self.bootstrap = bootstrap
        self.fleet = fleet
        self.producer: AIOKafkaProducer | None = None
        self._keys = {v.vehicle_id: v.vehicle_id.encode() for v in fleet.vehicles}
        self._parts = {vid: partition_of(vid, PARTITIONS) for vid in self._keys}
        self._rr = 0
        self.total_sent = 0

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=0,
            acks=1,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
            request_timeout_ms=30000,
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def register(self) -> None:
        assert self.producer is not None
        await register(self.producer, self.fleet.fleet)

    async def _send(self, vehicles: list[SimVehicle], now: float) -> None:
        assert self.producer is not None
        batches: dict[int, object] = {}
        keys, parts = self._keys, self._parts
        for v in vehicles:
            vid = v.vehicle_id
            p = parts[vid]
            b = batches.get(p)
            if b is None:
                b = batches[p] = self.producer.create_batch()
            if b.append(key=keys[vid], value=orjson.dumps(v.fix(now)), timestamp=None) is None:  # type: ignore[attr-defined]
                # Batch full: ship it and start another one for this partition.
                await self.producer.send_batch(b, GPS_TOPIC, partition=p)
                b = batches[p] = self.producer.create_batch()
                b.append(key=keys[vid], value=orjson.dumps(v.fix(now)), timestamp=None)  # type: ignore[attr-defined]
        if batches:
            await asyncio.gather(
                *(self.producer.send_batch(b, GPS_TOPIC, partition=p) for p, b in batches.items())
            )
        self.total_sent += len(vehicles)

    async def run(
        self, rate: float, duration: float, vehicles: list[SimVehicle] | None = None
    ) -> Counter[str]:
        """Produce `rate` fixes/s for `duration` s; returns fixes sent per vehicleId."""
        pool = vehicles or self.fleet.vehicles
        sent: Counter[str] = Counter()
        n = len(pool)
        start = time.monotonic()
        done = 0
        loop_deadline = start + duration + 30.0  # bounded even if the broker stalls
        while True:
            now_m = time.monotonic()
            elapsed = now_m - start
            if elapsed >= duration or now_m > loop_deadline:
                break
            due = int(elapsed * rate) + 1 - done
            if due > 0:
                chunk = [pool[(self._rr + i) % n] for i in range(due)]
                self._rr = (self._rr + due) % n
                await self._send(chunk, time.time())
                for v in chunk:
                    sent[v.vehicle_id] += 1
                done += due
            await asyncio.sleep(TICK_S)
        return sent

    async def blast(self, count: int, chunk: int = 2000) -> float:
        """Produce `count` fixes as fast as possible; returns the seconds it took."""
        pool = self.fleet.vehicles
        n = len(pool)
        start = time.monotonic()
        done = 0
        while done < count:
            k = min(chunk, count - done)
            vs = [pool[(self._rr + i) % n] for i in range(k)]
            self._rr = (self._rr + k) % n
            await self._send(vs, time.time())
            done += k
        assert self.producer is not None
        await self.producer.flush()
        return time.monotonic() - start
