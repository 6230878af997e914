"""Micro-benchmark of the per-position hot path through the Redis bus (issue 11).

    python -m bench.micro_delivery            # packing + delivery, no server needed
    python -m bench.micro_delivery --redis    # also publish through a redis-server of its own
    python -m bench.micro_delivery --profile  # cProfile of the delivery part

(a) publish: `RedisFanout.publish` for a batch of 1,000 position Outgoings, with the script call
    replaced by redis-py's own command packing (`Connection.pack_command`, what the real call
    does before writing to the socket): the Python-side cost of building and packing the
    arguments. With --redis, the same batch through a real redis-server (round trip, Lua
    included) started on a free loopback port.
(b) deliver: `Hub.deliver` of one delivery message of 1,000 positions (parse_delivery included)
    on a Hub with one connection per company subscribed to all its vehicles.

Figures are µs per position, median of several repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import Connection

from tracker_ws.bus import Outgoing
from tracker_ws.bus.redis import RedisFanout, RedisLink, parse_delivery
from tracker_ws.domain import envelope
from tracker_ws.domain.batching import Outbox
from tracker_ws.domain.models import GpsFix, Sensors, UserContext, Vehicle, VehicleStatus
from tracker_ws.domain.permissions import Permissions
from tracker_ws.metrics import Metrics
from tracker_ws.web.hub import Hub

N = 1000
COMPANIES = 10
T0_MS = 1_764_000_000_000


def _fleet(n: int) -> list[Vehicle]:
    companies = [str(uuid.UUID(int=c + 1)) for c in range(COMPANIES)]
    return [
        Vehicle(
            str(uuid.UUID(int=(1 << 64) + i)),
            companies[i % COMPANIES],
            f"Truck {i}",
            frozenset({str(uuid.UUID(int=(2 << 64) + i % 7))}),
        )
        for i in range(n)
    ]


def _payload(vehicle: Vehicle, i: int, t_ms: int) -> bytes:
    fix = GpsFix(
        vehicle.vehicle_id,
        55.75 + i * 1e-5,
        37.61 + i * 1e-5,
        42.5,
        i % 360,
        t_ms,
        altitude=150,
        satellites=9,
        sensors=Sensors(fuel=61.5, ignition=True) if i % 2 else None,
    )
    return envelope.encode(envelope.position_envelope(fix, vehicle, VehicleStatus.MOVING))


def _positions(fleet: list[Vehicle], t_ms: int) -> list[Outgoing]:
    targets = ["worker-1"]
    return [
        Outgoing(targets, _payload(v, i, t_ms), vehicle_id=v.vehicle_id, fix_ms=t_ms)
        for i, v in enumerate(fleet)
    ]


def _median_us(fn: Callable[[], object], per: int, repeats: int, inner: int) -> float:
    fn()  # warm up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - t) / inner / per * 1e6)
    return statistics.median(runs)


# ------------------------------------------------------------------------------ (a) publish


def bench_pack(repeats: int) -> float:
    bus = RedisFanout(RedisLink("redis://127.0.0.1:1/0"), "worker-1")
    conn = Connection()
    sha = bus._publish.sha
    packed: list[Any] = []

    reply = " ".join(map(str, range(1, N + 1))).encode()  # publish.lua's reply shape

    async def script(keys: list[Any], args: list[Any]) -> bytes:
        # What Script.__call__ -> evalsha -> execute_command does before the socket write.
        packed.append(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
        return reply

    bus._publish = script  # type: ignore[assignment]
    items = _positions(_fleet(N), T0_MS)

    def once() -> None:
        coro = bus.publish(items)
        with contextlib.suppress(StopIteration):
            coro.send(None)  # nothing in it awaits: the coroutine finishes here
        packed.clear()

    return _median_us(once, N, repeats, 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _bench_redis_publish(port: int, repeats: int) -> tuple[float, float]:
    link = RedisLink(f"redis://127.0.0.1:{port}/0")
    bus = RedisFanout(link, "worker-1")
    fleet = _fleet(N)
    batches = [_positions(fleet, T0_MS + k) for k in range(repeats * 10 + 1)]
    try:
        await bus.publish(batches[0])  # loads the script
        runs = []
        for r in range(repeats):
            t = time.perf_counter()
            for k in range(10):
                ids = await bus.publish(batches[1 + r * 10 + k])
                assert all(ids), "fresh fixes must all get eventIds"
            runs.append((time.perf_counter() - t) / 10 / N * 1e6)
        stats = await bus.client.info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {})
        return statistics.median(runs), float(evalsha.get("usec_per_call", 0)) / N
    finally:
        await link.close()


def bench_redis_publish(repeats: int) -> tuple[float, float] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            return asyncio.run(_bench_redis_publish(port, repeats))
        finally:
            proc.terminate()
            proc.wait()


# ------------------------------------------------------------------------------ (b) deliver


class _Conn:
    """The part of web.session.Session that Hub.deliver touches, with the real Outbox."""

    __slots__ = ("conn_id", "delivered", "outbox", "perms", "shared", "stream", "user")

    def __init__(self, user: UserContext) -> None:
        self.conn_id = uuid.uuid4().hex
        self.user = user
        self.perms = Permissions(user)
        self.outbox = Outbox(10_000, 0.1)
        self.delivered = 0
        self.stream: object = None  # its position stream (a Hub without a Flusher: private)
        self.shared = False

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None:
        self.outbox.push_position(vehicle_id, event_id, single, fragment)
        self.delivered += 1


def delivery_setup() -> tuple[Hub, bytes, list[_Conn]]:
    fleet = _fleet(N)
    hub = Hub(Metrics("bench"))
    conns = []
    for c in sorted({v.company_id for v in fleet}):
        conn = _Conn(UserContext(str(uuid.uuid4()), c))
        hub.subscribe(conn, [f"company:{c}"])  # type: ignore[arg-type]
        conns.append(conn)
    # One ws:deliver message as publish.lua builds it: "<eventId> <payload>\n" per record.
    message = b"".join(
        b"%d %s\n" % (1000 + i, item.payload) for i, item in enumerate(_positions(fleet, T0_MS))
    )
    return hub, message, conns


def bench_deliver(repeats: int) -> float:
    hub, message, conns = delivery_setup()

    def once() -> None:
        hub.deliver(parse_delivery(message))

    us = _median_us(once, N, repeats, 20)
    assert sum(c.delivered for c in conns) >= N
    return us


def profile_deliver() -> None:
    hub, message, _ = delivery_setup()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        hub.deliver(parse_delivery(message))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.micro_delivery")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--redis", action="store_true", help="also publish through a redis-server")
    ap.add_argument("--profile", action="store_true", help="cProfile of the delivery part")
    opts = ap.parse_args()
    print(f"positions per batch/message: {N}; medians of {opts.repeats} repeats")
    print(f"(a) publish args + redis-py pack_command: {bench_pack(opts.repeats):7.3f} µs/position")
    if opts.redis:
        found = bench_redis_publish(opts.repeats)
        if found is None:
            print("(a') publish through redis-server: redis-server not found")
        else:
            print(f"(a') publish through redis-server (round trip): {found[0]:7.3f} µs/position")
            print(f"     of which the script in Redis (mean):       {found[1]:7.3f} µs/position")
    print(
        f"(b) parse_delivery + Hub.deliver:          {bench_deliver(opts.repeats):7.3f} µs/position"
    )
    if opts.profile:
        profile_deliver()


if __name__ == "__main__":
    main()
