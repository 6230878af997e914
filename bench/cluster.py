"""Three instances: cross-instance delivery latency, and the pause after a kill -9 (issue 3).

    python -m bench.cluster --fixes 1000
    python -m bench.cluster --fixes 5000 --rate 200 --vehicles 48 --json

Starts its own embedded broker, Redis and three `python -m tracker_ws worker` processes (one
consumer group, one Redis) on free loopback ports, and stops everything it started.

1. Latency. Each instance gets one client subscribed (byIds) to the vehicles whose partitions
   the *other* instances own, so every delivery crosses instances through Redis. `--fixes`
   fixes are produced at `--rate` per second, round-robin over the vehicles, each carrying its
   production time (epoch ms) as its `timestamp`; a client's latency is receipt time minus that
   timestamp (same machine, same clock). Printed: median, p90, p99, max over every delivery
   (fix × receiving client), and how many fixes were coalesced away by the flush window.
2. Failover. Fixes flow at `--kill-rate` per second; after a few seconds one instance is killed
   with SIGKILL. The clients on the two survivors record every arrival: the longest gap after the
   kill is the rebalance pause, printed for all vehicles and for the dead instance's vehicles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tracker_ws.agents.positions import partition_of
from tracker_ws.auth import mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws.tables.definitions import topic_plan
from tracker_ws_dev import stack as devstack

PARTITIONS = 12
LAT0 = 1.0  # a fix's sequence number rides in its latitude: LAT0 + seq / 10_000


def say(msg: str) -> None:
    print(f"[bench.cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def iso_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


# ------------------------------------------------------------------------------ processes


class Stack:
    """Broker, Redis and three workers; `close()` stops whatever was started."""

    def __init__(self, log_dir: Path, workers: int, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.n = workers
        self.app_id = f"bench-cluster-{uuid.uuid4().hex[:8]}"
        self.broker: devstack.Broker | None = None
        self.redis: devstack.RedisServer | None = None
        self.workers: list[devstack.Worker] = []

    def start(self) -> None:
        self.broker = devstack.start_broker(log_dir=self.log_dir)
        self.redis = devstack.start_redis(log_dir=self.log_dir)
        topics, configs = topic_plan(PARTITIONS)
        asyncio.run(devstack.create_topics(self.broker.url, topics, configs=configs))
        broker_url, redis_url = self.broker.url, self.redis.url

        def start(i: int) -> devstack.Worker:
            w = devstack.start_worker(
                broker_url=broker_url,
                redis_url=redis_url,
                log_dir=self.log_dir,
                instance_id=f"{self.app_id}-{i + 1}",
                env={"TRACKER_WS_APP_ID": self.app_id, **self.env},
            )
            self.workers.append(w)
            return w

        # Side by side: one join round for the group instead of one per worker.
        with ThreadPoolExecutor(self.n) as pool:
            for f in [pool.submit(start, i) for i in range(self.n)]:
                f.result()
        self.workers.sort(key=lambda w: w.instance_id)
        self.wait_balanced()

    def live(self) -> list[devstack.Worker]:
        return [w for w in self.workers if w.alive()]

    def partitions(self) -> dict[str, list[int]]:
        return {w.instance_id: list(w.health().get("partitions", [])) for w in self.live()}

    def wait_balanced(self, timeout: float = 90.0) -> None:
        def balanced() -> bool:
            parts = self.partitions()
            owned = sorted(p for ps in parts.values() for p in ps)
            healthy = all(w.health().get("status") == "healthy" for w in self.live())
            return healthy and owned == list(range(PARTITIONS)) and all(parts.values())

        devstack.wait_for(balanced, timeout, interval=0.2, what="partitions balanced")

    def owner(self, vehicle_id: str) -> devstack.Worker:
        p = partition_of(vehicle_id, PARTITIONS)
        for w in self.live():
            if p in w.health().get("partitions", []):
                return w
        raise RuntimeError(f"no live worker owns partition {p}")

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.workers))) as pool:
            for w in self.workers:
                pool.submit(w.stop, 15.0)
        for s in (self.redis, self.broker):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.stop()


# ------------------------------------------------------------------------------ clients


@dataclass
class Client:
    worker: devstack.Worker
    vehicles: set[str]
    ws: Any = None
    session: aiohttp.ClientSession | None = None
    # (receipt wall ms, receipt monotonic s, vehicleId, position) of every live position
    got: list[tuple[float, float, str, dict[str, Any]]] = field(default_factory=list)
    frames: int = 0
    batched: int = 0
    reader: asyncio.Task[None] | None = None

    async def open(self, token: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{self.worker.ws_url}?token={token}")
        hello = orjson.loads((await self.ws.receive(timeout=10)).data)
        assert hello["type"] == "connected", hello
        await self.ws.send_str(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "subscriptionType": "vehicles",
                    "filter": {"type": "byIds", "ids": sorted(self.vehicles)},
                }
            ).decode()
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            wall, mono = time.time() * 1000, time.monotonic()
            m = orjson.loads(msg.data)
            if m.get("type") == "position":
                self.frames += 1
                self.got.append((wall, mono, m["vehicleId"], m["position"]))
            elif m.get("type") == "positionBatch" and m.get("eventId"):
                self.frames += 1
                self.batched += len(m["positions"])
                for p in m["positions"]:
                    self.got.append((wall, mono, p["vehicleId"], p["position"]))
            elif m.get("type") == "error":
                say(f"client on {self.worker.instance_id} got an error: {m}")

    def seen(self) -> set[str]:
        return {v for _, _, v, _ in self.got}

    def seqs(self) -> set[int]:
        return {round((p["lat"] - LAT0) * 10_000) for _, _, _, p in self.got if p["lat"] >= LAT0}

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
        if self.session is not None:
            await self.session.close()


def fix(vid: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "vehicleId": vid,
            "latitude": LAT0 + seq / 10_000,
            "longitude": 37.62,
            "speed": 40.0,
            "course": 90,
            "timestamp": int(time.time() * 1000),  # production time, epoch ms
        }
    )


class Producer:
    def __init__(self, bootstrap: str) -> None:
        self.kafka = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        self.seq = 0
        self.sent: dict[int, tuple[str, float]] = {}  # seq -> (vehicleId, monotonic send time)
        self._acks: list[asyncio.Future[Any]] = []

    async def send(self, vid: str) -> int:
        seq = self.seq
        self.seq += 1
        self.sent[seq] = (vid, time.monotonic())
        self._acks.append(
            await self.kafka.send("gps-events", key=vid.encode(), value=fix(vid, seq))
        )
        return seq

    async def paced(self, vehicles: list[str], rate: float, stop: asyncio.Event | int) -> None:
        """Round-robin at `rate`/s until `stop` is set (Event) or that many fixes were sent."""
        started = time.monotonic()
        for n in itertools.count():
            done = stop.is_set() if isinstance(stop, asyncio.Event) else n >= stop
            if done:
                break
            await self.send(vehicles[n % len(vehicles)])
            ahead = started + (n + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing: the clock is all there is to wait for
        await self.flush()

    async def flush(self) -> None:
        acks, self._acks = self._acks, []
        await asyncio.gather(*acks)


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def longest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


# ------------------------------------------------------------------------------ the run


async def run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.broker is not None
    company = str(uuid.uuid4())
    vehicles = []
    for i in range(args.vehicles):
        while True:
            vid = str(uuid.uuid4())
            if partition_of(vid, PARTITIONS) == i % PARTITIONS:
                vehicles.append(vid)
                break
    producer = Producer(stack.broker.bootstrap)
    await producer.kafka.start()
    clients: list[Client] = []
    try:
        before = {w.instance_id: int(w.health().get("registryVehicles", 0)) for w in stack.workers}
        for vid in vehicles:
            value = {"vehicleId": vid, "companyId": company, "name": vid[:8], "groupIds": []}
            await producer.kafka.send(
                "vehicle-registry", key=vid.encode(), value=orjson.dumps(value)
            )
        await producer.kafka.flush()
        await asyncio.to_thread(
            devstack.wait_for,
            lambda: all(
                int(w.health().get("registryVehicles", 0)) >= before[w.instance_id] + len(vehicles)
                for w in stack.workers
            ),
            30.0,
            0.2,
            "registries",
        )
        owner = {v: stack.owner(v).instance_id for v in vehicles}
        for w in stack.workers:
            c = Client(w, {v for v in vehicles if owner[v] != w.instance_id})
            await c.open(mint_token(str(uuid.uuid4()), company, secret=DEV_JWT_SECRET))
            clients.append(c)

        # Interest reaches the owners through a Kafka topic: produce until every client sees
        # every vehicle it asked for.
        say("warming up (interest propagation)")
        deadline = time.monotonic() + 60
        while not all(c.vehicles <= c.seen() for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("clients did not receive their vehicles within 60 s")
            for v in vehicles:
                await producer.send(v)
            await producer.flush()
            with contextlib.suppress(TimeoutError):
                await until(lambda: all(c.vehicles <= c.seen() for c in clients), 0.3, "a round")
        for c in clients:
            c.got.clear()
            c.frames = c.batched = 0

        # ---------------------------------------------------------------- 1. latency
        say(f"latency: {args.fixes} fixes at {args.rate:g}/s over {len(vehicles)} vehicles")
        first = producer.seq
        await producer.paced(vehicles, args.rate, args.fixes)
        last_of = {v: max(s for s, (vv, _) in producer.sent.items() if vv == v) for v in vehicles}
        await until(
            lambda: all(all(last_of[v] in c.seqs() for v in c.vehicles) for c in clients),
            30,
            "the last fix of every vehicle",
        )
        samples: list[float] = []
        owed = delivered = 0
        for c in clients:
            seqs = set()
            for wall, _, _, pos in c.got:
                seq = round((pos["lat"] - LAT0) * 10_000)
                if seq >= first and seq not in seqs:
                    seqs.add(seq)
                    samples.append(wall - iso_ms(pos["timestamp"]))
            owed += sum(1 for s in range(first, producer.seq) if producer.sent[s][0] in c.vehicles)
            delivered += len(seqs)
        frames = sum(c.frames for c in clients)
        batched = sum(c.batched for c in clients)
        latency = {
            "fixes": args.fixes,
            "rate": args.rate,
            "vehicles": len(vehicles),
            "flush_window_ms": args.flush_window_ms,
            "deliveries": len(samples),
            "owed": owed,
            "coalesced_or_lost": owed - delivered,
            "frames": frames,
            "positions_in_batches": batched,
            "median_ms": statistics.median(samples),
            "p90_ms": percentile(samples, 90),
            "p99_ms": percentile(samples, 99),
            "max_ms": max(samples),
        }
        window = (
            f"{args.flush_window_ms} ms"
            if args.flush_window_ms is not None
            else "the service default"
        )
        print(
            f"cross-instance delivery latency over {len(samples)} deliveries "
            f"({args.fixes} fixes x 2 clients on non-owner instances, flush window "
            f"{window}): "
            f"median {latency['median_ms']:.1f} ms, p90 {latency['p90_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms; "
            f"{owed - delivered} of {owed} coalesced by the flush window or lost; "
            f"{batched} positions arrived inside positionBatch frames",
            flush=True,
        )

        # ---------------------------------------------------------------- 2. kill -9
        victim = stack.workers[-1]
        dead_parts = set(victim.health().get("partitions", []))
        moved = {v for v in vehicles if partition_of(v, PARTITIONS) in dead_parts}
        survivors = [c for c in clients if c.worker is not victim]
        say(f"failover: fixes at {args.kill_rate:g}/s, then kill -9 of {victim.instance_id}")
        stop = asyncio.Event()
        flow = asyncio.create_task(producer.paced(vehicles, args.kill_rate, stop))
        baseline = time.monotonic()
        await until(lambda: producer.seq - first - args.fixes >= 3 * args.kill_rate, 30, "3 s")
        killed_seq = producer.seq
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)

        def resumed() -> bool:
            def after_kill(c: Client, among: set[str]) -> bool:
                wanted = c.vehicles & among
                return not wanted or any(
                    s > killed_seq and producer.sent[s][0] in wanted for s in c.seqs()
                )

            return all(after_kill(c, moved) and after_kill(c, c.vehicles) for c in survivors)

        await until(resumed, 90, "delivery on the survivors after the kill")
        back_at = time.monotonic()
        await asyncio.to_thread(stack.wait_balanced, 90.0)
        balanced_at = time.monotonic()
        stop.set()
        await flow
        ended = time.monotonic()
        gaps, moved_gaps, before_gaps = [], [], []
        for c in survivors:
            times = [mono for _, mono, _, _ in c.got]
            gaps.append(longest_gap(times, killed_at, ended))
            before_gaps.append(longest_gap(times, baseline, killed_at))
            mt = [mono for _, mono, v, _ in c.got if v in moved]
            if c.vehicles & moved:
                moved_gaps.append(longest_gap(mt, killed_at, ended))
        failover = {
            "victim_partitions": sorted(dead_parts),
            "rate": args.kill_rate,
            "gap_before_kill_s": max(before_gaps),
            "rebalance_pause_s": max(gaps),
            "dead_instance_vehicles_pause_s": max(moved_gaps) if moved_gaps else None,
            "resumed_after_s": back_at - killed_at,
            "rebalanced_after_s": balanced_at - killed_at,
        }
        print(
            f"kill -9 of 1 of 3 instances at {args.kill_rate:g} fixes/s: the dead instance's "
            f"vehicles paused {failover['dead_instance_vehicles_pause_s']:.2f} s (delivered "
            f"again {failover['resumed_after_s']:.2f} s after the kill); longest gap of any "
            f"delivery on a survivor's client {failover['rebalance_pause_s']:.2f} s (before the "
            f"kill: {failover['gap_before_kill_s']:.2f} s); partitions rebalanced "
            f"{failover['rebalanced_after_s']:.2f} s after the kill",
            flush=True,
        )
        return {"latency": latency, "failover": failover}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        with contextlib.suppress(Exception):
            await producer.kafka.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fixes", type=int, default=1000, help="fixes for the latency phase")
    p.add_argument("--rate", type=float, default=100.0, help="fixes/s in the latency phase")
    p.add_argument("--vehicles", type=int, default=24, help="vehicles (spread over partitions)")
    p.add_argument("--kill-rate", type=float, default=20.0, help="fixes/s around the kill")
    p.add_argument(
        "--flush-window-ms",
        type=int,
        help="TRACKER_WS_FLUSH_WINDOW_MS for the workers (default: the service's)",
    )
    p.add_argument("--log-dir", type=Path, help="keep worker/broker/Redis logs here")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fixes < 1 or args.rate <= 0 or args.vehicles < 3 or args.kill_rate <= 0:
        raise SystemExit("need --fixes >= 1, --vehicles >= 3 and positive rates")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {}
    if args.flush_window_ms is not None:
        env["TRACKER_WS_FLUSH_WINDOW_MS"] = str(args.flush_window_ms)
    stack = Stack(log_dir, 3, env)
    ok = False
    try:
        started = time.monotonic()
        say(f"starting broker, Redis and 3 workers (logs: {log_dir})")
        stack.start()
        say(f"cluster ready in {time.monotonic() - started:.1f} s: {stack.partitions()}")
        result = asyncio.run(run(stack, args))
        if args.json:
            print(orjson.dumps(result).decode(), flush=True)
        ok = True
    finally:
        stack.close()
        if ok and args.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif not ok:
            say(f"logs kept in {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
