"""One tracker-ws instance in the test's own event loop (tests/adapter/).

The WebSocket and HTTP handlers come from `tracker_ws.web.instance.in_process_app` on the memory
bus, served by aiohttp's TestServer on a loopback port: real sockets, real frames, no worker
process, broker or Redis. What the Faust side would do is done here through the same narrow
interfaces the worker uses:

- the vehicle registry: `RegistryReader.apply` with the topic's JSON (permission re-checks
  reach the hub through its listener, as in the worker);
- positions: the GPS agent's output, an `Outgoing` per fix routed by a memory `Router` (this
  instance's own index, what `positions.table_router` answers for a lone instance);
- geo events, notifications, maintenance, alerts: `EventIngest.submit` with the topic's JSON;
- both handed to a started `Publisher`, which publishes on the memory bus as the agents do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from tests.support.client import SeedLikeClient, WsClient
from tests.support.fleet import Company, fix, new_id
from tracker_ws.agents.events import EventIngest
from tracker_ws.agents.publisher import Publisher
from tracker_ws.agents.registry import RegistryReader
from tracker_ws.auth import mint_token
from tracker_ws.bus import Outgoing
from tracker_ws.config import DEV_JWT_SECRET, Settings
from tracker_ws.domain import envelope
from tracker_ws.domain.events import load_json
from tracker_ws.domain.fixes import VehicleView, parse_gps_record, record_status
from tracker_ws.domain.status import still_since_of
from tracker_ws.runtime import Runtime
from tracker_ws.web.drain import drain
from tracker_ws.web.instance import in_process_app

# The worker's environment as the test fixtures set it, on the memory bus.
BASE_ENV = {
    "TRACKER_WS_REDIS_URL": "memory://",
    "TRACKER_WS_DEV_MODE": "1",
    "TRACKER_WS_INSTANCE_ID": "ws-inproc",
}


def settings(**overrides: Any) -> Settings:
    """Settings from the worker's environment, then `overrides` by field name (values below
    a variable's bound too, e.g. a state TTL of 0.2 s: the bounds protect operators)."""
    return dataclasses.replace(Settings.from_env(BASE_ENV), **overrides)


def local_router(rt: Runtime) -> Callable[[Iterable[str], int], list[str]]:
    """`positions.Router` for one instance: the interest table would hold only this
    instance's own keys, which its index knows (table_router's local rule)."""

    def route(keys: Iterable[str], partition: int) -> list[str]:
        return [rt.settings.instance_id] if rt.hub.wants(keys) else []

    return route


class Instance:
    """A running in-process instance and the partition owner's side of it."""

    def __init__(self, rt: Runtime, server: TestServer, http: TestClient[Any, Any]) -> None:
        self.rt = rt
        self.server = server
        self.http = http
        self.publisher = Publisher(rt.bus.fanout, rt.metrics)
        self.ingest = EventIngest(rt, self.publisher)
        self.registry = RegistryReader(rt, bootstrap="")  # only `apply`: nothing to consume
        self.registry.listeners.append(rt.hub.on_registry_change)
        self.route = local_router(rt)
        self.clients: list[WsClient] = []
        self.seed_clients: list[SeedLikeClient] = []
        self._last_ts_ms = 0

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return self.url + "/ws"

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this instance's Prometheus registry (0 when not exported yet)."""
        value = self.rt.metrics.registry.get_sample_value(
            name, {"instance": self.rt.settings.instance_id, **labels}
        )
        return value or 0.0

    # ------------------------------------------------------------------ clients, tokens
    async def connect(self, token: str | None, *, query: str = "", **kw: Any) -> WsClient:
        """A client past `connected` (closed with the instance)."""
        client = await WsClient.connect(self.ws_url, token, query=query, **kw)
        self.clients.append(client)
        return client

    async def seed_client(
        self, token: str, subs: list[tuple[str, dict[str, Any]]], *, query: str = ""
    ) -> SeedLikeClient:
        """A client that reconnects like the seed's (lastEventId = max seen, subscribes
        re-sent on every open), opened and with the replies to its subscribes received."""
        client = SeedLikeClient(token, subs, query=query)
        self.seed_clients.append(client)
        await self.reopen(client)
        return client

    async def reopen(self, client: SeedLikeClient) -> dict[str, Any]:
        """Open `client` again; returns `connected` once its subscribes are answered."""
        hello = await client.open(self.ws_url)
        n = len(client.subscriptions)
        await client.wait_for(
            lambda: sum(m["type"] in ("subscribed", "error") for _, m in client.conn.messages) >= n,
            5,
            "the replies to the subscribes",
        )
        return hello

    def admin_token(self, **kw: Any) -> str:
        return mint_token(new_id(), new_id(), secret=DEV_JWT_SECRET, roles=["admin"], **kw)

    def admin_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token()}"}

    async def request(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """(status, JSON body or None) of one HTTP request to this instance, once the
        connection registry queued so far is written (it is written behind, bus/writeback.py,
        and the admin API reads it)."""
        await self.rt.writeback.flush()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, bytes | None) else orjson.dumps(body)
        async with self.http.request(method, path, headers=headers, data=data) as resp:
            raw = await resp.read()
            return resp.status, (orjson.loads(raw) if raw else None)

    async def admin_get(self, path: str) -> Any:
        status, body = await self.request("GET", path, token=self.admin_token())
        assert status == 200, (path, status, body)
        return body

    # ------------------------------------------------------------------ registry
    def register(
        self, company: str, vehicle_id: str, *, name: str = "", groups: Iterable[str] = ()
    ) -> None:
        value = {
            "vehicleId": vehicle_id,
            "companyId": company,
            "name": name or f"V-{vehicle_id[:6]}",  # FleetDriver.register's default
            "groupIds": list(groups),
        }
        self.registry.apply(vehicle_id.encode(), orjson.dumps(value))

    def unregister(self, vehicle_id: str) -> None:
        self.registry.apply(vehicle_id.encode(), None)

    def company(self, n_vehicles: int, *, groups: int = 0) -> Company:
        """A registered company: vehicle i is in group i % groups (as FleetDriver.company)."""
        c = Company()
        group_ids = [new_id() for _ in range(groups)]
        for i in range(n_vehicles):
            vid = new_id()
            gids = [group_ids[i % groups]] if groups else []
            self.register(c.company_id, vid, groups=gids)
            c.vehicles.append(vid)
            for g in gids:
                c.groups.setdefault(g, []).append(vid)
        return c

    # ------------------------------------------------------------------ partition owner
    def fix(self, vehicle_id: str, **kw: Any) -> dict[str, Any]:
        """A gps-events value (tests.support.fleet.fix). Without `ts_ms`, a timestamp later
        than any before: the bus drops a fix not newer than the vehicle's last one, and two
        fixes sent in one millisecond would otherwise share it."""
        if kw.get("ts_ms") is None:
            kw["ts_ms"] = self._last_ts_ms = max(int(time.time() * 1000), self._last_ts_ms + 1)
        return fix(vehicle_id, **kw)

    def position(self, value: dict[str, Any]) -> Outgoing:
        """What the GPS agent publishes for one gps-events value of a registered vehicle: its
        envelope, routed to this instance if anything here wants it."""
        rec = parse_gps_record(load_json(orjson.dumps(value)))
        vehicle = self.rt.registry.get(rec.vehicle_id)
        assert vehicle is not None, f"{rec.vehicle_id} is not registered"
        still = still_since_of(None, rec.position["speed"], rec.timestamp_ms)
        status = record_status(
            rec, still, int(time.time() * 1000), self.rt.settings.offline_after_s
        )
        view = VehicleView.of(vehicle, self.rt.geozones.zones_of(rec.vehicle_id))
        env = envelope.fix_envelope(
            rec.vehicle_id,
            vehicle.company_id,
            view.groups,
            vehicle.name,
            status,
            rec.position,
            rec.timestamp_ms,
            rec.sensors,
        )
        return Outgoing(
            self.route(view.keys, 0),
            envelope.encode(env),
            vehicle_id=rec.vehicle_id,
            fix_ms=rec.timestamp_ms,
        )

    async def publish(self, *items: Outgoing) -> None:
        """Hand items to the publisher and wait until the bus has them (delivery to the hub
        follows on the next loop turn, as a pub/sub message would)."""
        self.publisher.add_many(list(items))
        await self.publisher.flush()

    async def send_fix(self, vehicle_id: str, **kw: Any) -> dict[str, Any]:
        """Publish one fix (tests.support.fleet.fix's arguments); returns the value sent."""
        value = self.fix(vehicle_id, **kw)
        await self.publish(self.position(value))
        return value

    async def event(self, kind: str, value: dict[str, Any], key: str | None = None) -> None:
        """One event as read from its topic (`geo-events`, `notifications`,
        `maintenance-events`, `system-alerts`), published and on the bus when this returns."""
        self.ingest.submit(kind, key.encode() if key else None, orjson.dumps(value))
        await self.publisher.flush()

    async def drain(self) -> None:
        await drain(self.rt)


@asynccontextmanager
async def running(s: Settings | None = None) -> AsyncIterator[Instance]:
    """Start an instance (its Runtime from `s`, default `settings()`), stop it afterwards."""
    rt = Runtime.create(s or settings())
    server = TestServer(in_process_app(rt), host="127.0.0.1")
    http = TestClient(server)
    await http.start_server()
    inst = Instance(rt, server, http)
    inst.publisher.start()
    try:
        yield inst
    finally:
        await asyncio.gather(
            *(c.close() for c in inst.clients),
            *(c.shutdown() for c in inst.seed_clients),
            return_exceptions=True,
        )
        await inst.publisher.stop()
        await http.close()


async def until(
    pred: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    """Wait for a condition the server reaches on its own, with no frame to wait for (a
    session leaving the hub, a saved state written or expired): polled every millisecond."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got if isinstance(got, bool) else await got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)
