"""The GPS agent's `handle` (tracker_ws/agents/positions.py) against the reference pipeline it
was made faster than: parse_gps_event → derive_status → position_envelope → position_keys →
route, with registry and geozone changes in between."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import orjson

from tracker_ws.agents import positions
from tracker_ws.agents.publisher import Publisher
from tracker_ws.config import Settings
from tracker_ws.domain import envelope
from tracker_ws.domain.events import parse_gps_event
from tracker_ws.domain.geozones import GeozoneState
from tracker_ws.domain.models import Vehicle
from tracker_ws.domain.registry import VehicleRegistry
from tracker_ws.domain.status import derive_status, next_still_since
from tracker_ws.domain.subscriptions import position_keys
from tracker_ws.metrics import Metrics
from tracker_ws.web.hub import Hub

CO = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
CO2 = "dddddddd-cccc-4ccc-8ccc-cccccccccccc"
G1 = "91000000-0000-4000-8000-000000000001"
G2 = "91000000-0000-4000-8000-000000000002"
Z1 = "a1000000-0000-4000-8000-000000000001"
VIDS = [f"{i:08d}-1111-4111-8111-111111111111" for i in range(6)]


class _Table(dict[str, Any]):
    @property
    def data(self) -> dict[str, Any]:
        return self


def _handle(rt: Any, tables: Any, publisher: Publisher) -> Any:
    captured: dict[str, Any] = {}
    app = SimpleNamespace(
        agent=lambda *_a, **_k: lambda fn: captured.setdefault("agent", fn),
        timer=lambda **_k: lambda fn: fn,
    )
    route = positions.table_router(rt, tables)
    positions.install(app, rt, SimpleNamespace(gps="g", gps_dlq=None), tables, publisher, route)  # type: ignore[arg-type]
    agent = captured["agent"]
    cells = dict(zip(agent.__code__.co_freevars, agent.__closure__, strict=True))
    return cells["handle"].cell_contents, route


def test_handle_publishes_what_the_reference_pipeline_builds() -> None:
    metrics = Metrics("me")
    registry, zones = VehicleRegistry(), GeozoneState()
    for i, vid in enumerate(VIDS):
        registry.upsert(Vehicle(vid, CO, f"T{i}", frozenset({G1, G2} if i % 2 else {G1})))
    hub = Hub(metrics, registry, zones)
    # A str stands in for a connection (the index only hashes it): a subscriber here.
    hub.index.add("conn", [f"group:{G2}"])  # type: ignore[arg-type]
    subs = _Table({f"company:{CO}#p{p}": ["b", "a", "me"] for p in range(12)})
    subs[f"vehicle:{VIDS[0]}#p3"] = ["c"]
    rt = SimpleNamespace(
        settings=Settings(instance_id="me"),
        metrics=metrics,
        registry=registry,
        geozones=zones,
        hub=hub,
        dead_instances=set(),
    )
    tables = SimpleNamespace(last_positions=_Table(), subscriptions=subs)
    publisher = Publisher(SimpleNamespace(), metrics)  # type: ignore[arg-type]
    handle, route = _handle(rt, tables, publisher)

    now = time.time()
    still: dict[str, int | None] = {}
    for step in range(12):
        if step == 4:
            zones.apply(CO, VIDS[1], Z1, "entered")
            hub.index.add("conn2", [f"geozone:{Z1}"])  # type: ignore[arg-type]
        if step == 6:
            registry.upsert(Vehicle(VIDS[2], CO2, "moved", frozenset({G2})))
        if step == 8:
            zones.apply(CO, VIDS[1], Z1, "exited")
            rt.dead_instances.add("b")
        for i, vid in enumerate(VIDS):
            ts = int((now - 30 + step) * 1000)
            value: dict[str, Any] = {
                "vehicleId": vid.upper() if i == 3 else vid,
                "latitude": 55.75 + step / 1000,
                "longitude": 37.62,
                "speed": [42.5, 0, 2.5, 10][(step + i) % 4],
                "course": 90,
                "timestamp": positions_iso(ts) if i % 2 else ts,
            }
            if i % 3 == 0:
                value["sensors"] = {"fuel": 40, "ignition": step % 2 == 0}
            if i == 4:
                value["satellites"] = 2 if step % 5 == 0 else 9
                value["altitude"] = 120.5
            partition = 3
            out: list[Any] = []
            outcome = handle(vid.encode(), orjson.dumps(value), partition, now, out)
            assert outcome == "ok"
            # The reference.
            fix = parse_gps_event(value, vid)
            vehicle = registry.get(vid)
            assert vehicle is not None
            still[vid] = next_still_since(still.get(vid), fix)
            status = derive_status(fix, still[vid], int(now * 1000), 600.0)
            env = envelope.position_envelope(fix, vehicle, status)
            keys = position_keys(vid, vehicle.company_id, vehicle.group_ids, zones.zones_of(vid))
            (item,) = out
            assert item.payload == envelope.encode(env)
            assert list(item.targets) == route(keys, partition)
            assert (item.vehicle_id, item.fix_ms) == (vid, fix.timestamp_ms)
            assert tables.last_positions[vid]["env"]["s"] == env["s"]
    # Out of order and unregistered are still told apart.
    old = {"vehicleId": VIDS[0], "latitude": 1, "longitude": 1, "speed": 1, "course": 1}
    out = []
    assert handle(None, orjson.dumps({**old, "timestamp": 1}), 3, now, out) == "out_of_order"
    stranger = "99999999-1111-4111-8111-111111111111"
    new = {**old, "vehicleId": stranger, "timestamp": int(now * 1000)}
    assert handle(None, orjson.dumps(new), 3, now, out) == "unregistered"
    assert out == []  # nothing to publish for either


def positions_iso(ms: int) -> str:
    from tracker_ws.domain.protocol import iso_from_ms

    return iso_from_ms(ms)


def test_route_is_sorted_unique_and_decides_for_this_instance() -> None:
    metrics = Metrics("me")
    hub = Hub(metrics)
    subs = _Table({"k1#p0": ["z", "me", "a"], "k2#p0": ["a", "y"], "k3#p1": ["q"]})
    rt = SimpleNamespace(settings=Settings(instance_id="me"), hub=hub, dead_instances={"y"})
    route = positions.table_router(rt, SimpleNamespace(subscriptions=subs))  # type: ignore[arg-type]
    assert route(["k1", "k2"], 0) == ["a", "z"]  # own stale entry ignored, dead left out
    assert route(iter(["k2", "k3"]), 0) == ["a"]  # any iterable, read twice
    hub.index.add("c", ["k3"])  # type: ignore[arg-type]  # a str for a connection
    assert route(("k3",), 1) == ["me", "q"]
    assert route([], 5) == []
