"""Baseline servers, fed from the same Kafka topics and producer as tracker_ws.

    python -m bench.baselines picows   --port P --broker HOST:PORT --redis URL [--uvloop]
    python -m bench.baselines socketio --port P --broker HOST:PORT --redis URL

(a) `picows` — the Python ceiling: a minimal picows server. No JWT verification (the token's
    payload is read unverified only to learn the company), no permission checks, no Redis, no
    queues, no batching: each fix is encoded once as a `position` frame and handed to
    `transport.send` of every subscriber found by one dict lookup. It speaks the tracker_ws
    protocol (`connected`, `subscribe`, `subscribed`, `position`) so the same client measures it.

(b) `socketio` — what a Python team would pick: python-socketio on aiohttp with its
    `AsyncRedisManager`, JWT verified on CONNECT, one room per vehicle (a dispatcher `all`
    subscription enters the rooms of every vehicle of its company), one `emit` per fix to the
    vehicle's room (one Redis PUBLISH per event, delivered back through Redis pub/sub).

Both read `vehicle-registry` from the beginning (vehicleId -> companyId) and consume
`gps-events` in their own consumer group from the latest offset, like the worker does.
Both serve `GET /health` with {status, registryVehicles, connections, events}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import time
import urllib.parse
from collections import defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

GPS_TOPIC = "gps-events"
REGISTRY_TOPIC = "vehicle-registry"
FETCH_MAX_WAIT_MS = 20  # the same short long-poll as tracker_ws/kafka/transport.py


@lru_cache(maxsize=4096)
def _iso_second(sec: int) -> str:
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ms(ms: int) -> str:
    sec, milli = divmod(int(ms), 1000)
    return f"{_iso_second(sec)}.{milli:03d}Z"


def position_obj(fix: dict[str, Any]) -> dict[str, Any]:
    """The seed Position object; `timestamp` last, as tracker_ws writes it."""
    pos = {
        "lat": fix["latitude"],
        "lon": fix["longitude"],
        "speed": fix.get("speed", 0),
        "course": fix.get("course", 0),
    }
    if "altitude" in fix:
        pos["altitude"] = fix["altitude"]
    if "satellites" in fix:
        pos["satellites"] = fix["satellites"]
    pos["timestamp"] = iso_ms(fix["timestamp"])
    return pos


class Feed:
    """Registry (vehicleId -> companyId, names) and the GPS consumer of a baseline."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.vehicle_company: dict[str, str] = {}
        self.vehicle_name: dict[str, str] = {}
        self.company_vehicles: dict[str, list[str]] = defaultdict(list)
        self.gps: AIOKafkaConsumer | None = None
        self.events = 0

    @property
    def assigned(self) -> bool:
        return self.gps is not None and bool(self.gps.assignment())

    async def read_registry(self) -> None:
        consumer = AIOKafkaConsumer(
            REGISTRY_TOPIC,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for r in records:
                        if r.value is None:
                            continue
                        v = orjson.loads(r.value)
                        vid, cid = v["vehicleId"], v["companyId"]
                        if vid not in self.vehicle_company:
                            self.company_vehicles[cid].append(vid)
                        self.vehicle_company[vid] = cid
                        self.vehicle_name[vid] = v.get("name", "")
        finally:
            await consumer.stop()

    async def consume(self, handle: Any) -> None:
        """Feed every gps-events record to `await handle(fix_dict)` (in order)."""
        self.gps = AIOKafkaConsumer(
            GPS_TOPIC,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            auto_offset_reset="latest",
            enable_auto_commit=True,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_partition_fetch_bytes=4 << 20,
        )
        await self.gps.start()
        try:
            while True:
                batches = await self.gps.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for r in records:
                        self.events += 1
                        await handle(orjson.loads(r.value))
        finally:
            await self.gps.stop()


# ------------------------------------------------------------------------- (a) picows


def _unverified_company(token: str) -> str:
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return str(orjson.loads(base64.urlsafe_b64decode(payload)).get("companyId", ""))
    except Exception:
        return ""


async def run_picows(args: argparse.Namespace) -> None:
    from picows import (
        WSListener,
        WSMsgType,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    TEXT = WSMsgType.TEXT
    feed = Feed(args.broker, f"bench-picows-{args.port}")
    by_vehicle: dict[str, set[Any]] = defaultdict(set)
    by_company: dict[str, set[Any]] = defaultdict(set)
    state = {"connections": 0, "event_id": 0}

    class Client(WSListener):  # type: ignore[misc]
        __slots__ = ("company", "keys", "transport")

        def __init__(self, company: str) -> None:
            self.company = company
            self.keys: list[tuple[dict[str, set[Any]], str]] = []
            self.transport: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            state["connections"] += 1
            transport.send(TEXT, b'{"type":"connected","eventId":0,"connectionId":"x"}')

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is not TEXT:
                return
            msg = orjson.loads(frame.get_payload_as_bytes())
            if msg.get("type") != "subscribe":
                return
            flt = msg.get("filter") or {}
            if flt.get("type") == "all":
                by_company[self.company].add(transport)
                self.keys.append((by_company, self.company))
                count = len(feed.company_vehicles.get(self.company, ()))
            else:
                ids = [v for v in flt.get("ids", ()) if isinstance(v, str)]
                for vid in ids:
                    by_vehicle[vid].add(transport)
                    self.keys.append((by_vehicle, vid))
                count = len(ids)
            transport.send(
                TEXT,
                b'{"type":"subscribed","eventId":0,"subscriptionType":"vehicles","count":%d}'
                % count,
            )

        def on_ws_disconnected(self, transport: Any) -> None:
            state["connections"] -= 1
            for index, key in self.keys:
                index[key].discard(transport)

    def health() -> bytes:
        return orjson.dumps(
            {
                "status": "healthy" if feed.assigned else "starting",
                "registryVehicles": len(feed.vehicle_company),
                "connections": state["connections"],
                "events": feed.events,
            }
        )

    def factory(request: Any) -> Any:
        path = request.path.decode()
        if path.startswith("/health"):
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(health()), None
            )
        if not path.startswith("/ws"):
            return None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        return Client(_unverified_company(query.get("token", [""])[0]))

    async def handle(fix: dict[str, Any]) -> None:
        vid = fix["vehicleId"]
        direct = by_vehicle.get(vid)
        company = by_company.get(feed.vehicle_company.get(vid, ""))
        if not direct and not company:
            return
        state["event_id"] += 1
        frame = orjson.dumps(
            {
                "type": "position",
                "eventId": state["event_id"],
                "timestamp": iso_ms(int(time.time() * 1000)),
                "vehicleId": vid,
                "position": position_obj(fix),
            }
        )
        for group in (direct, company):
            if group:
                for t in group:
                    t.send(TEXT, frame)

    server = await ws_create_server(factory, "127.0.0.1", args.port, backlog=4096)
    async with server:
        await asyncio.gather(feed.read_registry(), feed.consume(handle))


# ------------------------------------------------------------------------- (b) socketio


async def run_socketio(args: argparse.Namespace) -> None:
    import jwt
    import socketio
    from aiohttp import web

    from tracker_ws.config import DEV_JWT_SECRET

    feed = Feed(args.broker, f"bench-socketio-{args.port}")
    mgr = socketio.AsyncRedisManager(args.redis)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=mgr,
        transports=["websocket"],
        cors_allowed_origins=[],
        ping_interval=25,
        ping_timeout=60,
    )
    app = web.Application()
    sio.attach(app)
    state = {"connections": 0}

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "healthy" if feed.assigned else "starting",
                "registryVehicles": len(feed.vehicle_company),
                "connections": state["connections"],
                "events": feed.events,
            }
        )

    app.router.add_get("/health", health)

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            claims = jwt.decode(token or "", DEV_JWT_SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from exc
        await sio.save_session(sid, {"user": claims["sub"], "company": claims["companyId"]})
        state["connections"] += 1

    @sio.event  # type: ignore[misc]
    async def disconnect(sid: str, *args: Any) -> None:
        state["connections"] -= 1

    @sio.event  # type: ignore[misc]
    async def subscribe(sid: str, data: Any) -> None:
        session = await sio.get_session(sid)
        company = session["company"]
        flt = data.get("filter") or {}
        if flt.get("type") == "all":
            ids = list(feed.company_vehicles.get(company, ()))
        else:
            ids = [v for v in flt.get("ids", ()) if feed.vehicle_company.get(v) == company]
        for vid in ids:
            await sio.enter_room(sid, f"vehicle:{vid}")
        await sio.emit("subscribed", {"subscriptionType": "vehicles", "count": len(ids)}, to=sid)

    async def handle(fix: dict[str, Any]) -> None:
        vid = fix["vehicleId"]
        await sio.emit(
            "position",
            {
                "vehicleId": vid,
                "vehicleName": feed.vehicle_name.get(vid, ""),
                "position": position_obj(fix),
                "status": "moving" if fix.get("speed") else "stopped",
            },
            room=f"vehicle:{vid}",
        )

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    try:
        await asyncio.gather(feed.read_registry(), feed.consume(handle))
    finally:
        await runner.cleanup()


async def run_raw_consumer(args: argparse.Namespace) -> None:
    """Read `--count` gps-events records from the beginning with a plain aiokafka consumer
    (JSON-decoding each value) and print one JSON line: events/s and events per CPU-second."""
    import os
    import sys

    consumer = AIOKafkaConsumer(
        GPS_TOPIC,
        bootstrap_servers=args.broker,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    n = 0
    first = cpu_first = 0.0
    deadline = time.monotonic() + 150.0
    try:
        while n < args.count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for r in records:
                    if n == 0:
                        first = time.monotonic()
                        t = os.times()
                        cpu_first = t.user + t.system
                    orjson.loads(r.value)
                    n += 1
    finally:
        await consumer.stop()
    wall = time.monotonic() - first
    t = os.times()
    cpu = t.user + t.system - cpu_first
    print(
        orjson.dumps(
            {
                "events": n,
                "wall_s": round(wall, 3),
                "events_per_s": round(n / wall, 1) if wall > 0 else None,
                "events_per_cpu_s": round(n / cpu, 1) if cpu > 0 else None,
            }
        ).decode(),
        file=sys.stdout,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("kind", choices=("picows", "socketio", "raw-consumer"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=0, help="raw-consumer: records to read")
    parser.add_argument("--broker", required=True, help="bootstrap host:port")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    from bench.common import raise_nofile

    raise_nofile()
    if args.uvloop:
        import uvloop

        uvloop.install()
    runner = {"picows": run_picows, "socketio": run_socketio, "raw-consumer": run_raw_consumer}[
        args.kind
    ]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(args))


if __name__ == "__main__":
    main()
