"""Micro-benchmark of the GPS agent's per-fix work (issue 11): no Kafka, no Redis.

    python -m bench.micro_ingest                       # this tree
    python -m bench.micro_ingest --tracker-src PATH    # another tree (before/after runs)
    python -m bench.micro_ingest --profile             # plus a cProfile of one pass

Drives the real agent function of tracker_ws/agents/positions.py (`install` with stub app,
topics and tables, the real Publisher, Hub, registry and geozones) over batches of fixes as
JSON bytes shaped like the simulator's: 5,000 vehicles in 20 companies, one fix per vehicle
per round, timestamps one second apart between rounds. Three vehicles in four send the
simulator's record (epoch-ms timestamp, altitude, satellites; sensors on every other one),
the fourth an ISO-8601 timestamp and no optional fields. Interest: every company is
subscribed on two other instances and locally, one vehicle in ten by id elsewhere, one in
twenty sits in a geozone. Reports CPU µs per fix: the median over rounds after a warm-up
round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.micro_ingest", description=__doc__)
    p.add_argument("--tracker-src", default="", help="import tracker_ws from this tree")
    p.add_argument("--vehicles", type=int, default=5000)
    p.add_argument("--companies", type=int, default=20)
    p.add_argument("--rounds", type=int, default=9, help="measured rounds (one fix per vehicle)")
    p.add_argument("--batch", type=int, default=1000, help="events per agent batch")
    p.add_argument("--profile", action="store_true", help="cProfile one extra round")
    return p.parse_args()


def main() -> None:
    args = _args()
    if args.tracker_src:
        sys.path.insert(0, os.path.abspath(args.tracker_src))
    asyncio.run(_run(args))


def _fixes(fleet: Any, now: float) -> list[tuple[bytes, bytes]]:
    """(key, value) of one fix per vehicle at `now`."""
    import orjson

    from tracker_ws.domain.protocol import iso_from_ms

    out = []
    for i, v in enumerate(fleet.vehicles):
        fix = v.fix(now)
        if i % 4 == 3:  # another producer: ISO time, no optional fields
            fix["timestamp"] = iso_from_ms(fix["timestamp"])
            for name in ("altitude", "satellites", "sensors"):
                del fix[name]
        elif i % 2:
            del fix["sensors"]
        out.append((v.vehicle_id.encode(), orjson.dumps(fix)))
    return out


class _Table(dict[str, Any]):
    """A faust table as the agent uses it: item assignment and the `data` store."""

    @property
    def data(self) -> dict[str, Any]:
        return self


async def _run(args: argparse.Namespace) -> None:
    import tracker_ws
    from tracker_ws.agents import positions
    from tracker_ws.agents.publisher import Publisher
    from tracker_ws.config import Settings
    from tracker_ws.domain.geozones import GeozoneState
    from tracker_ws.domain.registry import VehicleRegistry, parse_vehicle
    from tracker_ws.kafka.stream import BatchStream
    from tracker_ws.metrics import Metrics
    from tracker_ws.web.hub import Hub
    from tracker_ws_dev.simulator import Fleet

    fleet = Fleet.build(args.vehicles, args.companies, groups_per_company=2, seed=4)
    settings = Settings(instance_id="me")
    metrics = Metrics("me")
    registry = VehicleRegistry()
    for v in fleet.vehicles:
        vehicle = parse_vehicle(v.vehicle_id, v.registry_record())
        assert vehicle is not None
        registry.upsert(vehicle)
    geozones = GeozoneState()
    zones = {z.company_id: z.geozone_id for z in fleet.geozones}
    for v in fleet.vehicles[::20]:
        geozones.apply(v.company_id, v.vehicle_id, zones[v.company_id], "entered")
    hub = Hub(metrics, registry, geozones)
    subs = _Table()
    n = settings.partitions
    for c in fleet.company_ids():
        # Any hashable marks the key as wanted here (Hub.wants): no Session needed.
        hub.index.add("local-conn", [f"company:{c}"])  # type: ignore[arg-type]
        for p in range(n):
            subs[f"company:{c}#p{p}"] = ["other-b", "other-a"]
    for v in fleet.vehicles[::10]:
        p = positions.partition_of(v.vehicle_id, n)
        subs[f"vehicle:{v.vehicle_id}#p{p}"] = ["other-c"]
    rt = SimpleNamespace(
        settings=settings,
        metrics=metrics,
        registry=registry,
        geozones=geozones,
        hub=hub,
        dead_instances=set(),
        assigned_partitions=lambda: list(range(n)),
    )
    tables = SimpleNamespace(last_positions=_Table(), subscriptions=subs)
    publisher = Publisher(SimpleNamespace(), metrics)  # type: ignore[arg-type]
    captured: dict[str, Any] = {}

    def agent(*_a: Any, **_k: Any) -> Any:
        return lambda fn: captured.setdefault("agent", fn)

    app = SimpleNamespace(agent=agent, timer=lambda **_k: lambda fn: fn)
    topics = SimpleNamespace(gps="gps-events", gps_dlq=None)
    route = positions.table_router(rt, tables)  # type: ignore[arg-type]
    positions.install(app, rt, topics, tables, publisher, route)  # type: ignore[arg-type]
    agent_fn = captured["agent"]

    class Stream(BatchStream):
        """Hands the agent prepared batches; never started."""

        def __new__(cls, batches: list[list[Any]]) -> Stream:
            self = object.__new__(cls)
            self._prepared = batches  # type: ignore[attr-defined]
            return self

        def __init__(self, batches: list[list[Any]]) -> None:
            pass

        async def batches(self, max_: int) -> AsyncIterator[list[Any]]:
            for batch in self._prepared:  # type: ignore[attr-defined]
                yield batch

    def events(now: float) -> list[list[Any]]:
        """Records as the lane hands them to the agent (kafka/stream.py: raw Messages); each
        is its own `.message` too, for an older tree whose agent took Events."""
        out = []
        for offset, (key, value) in enumerate(_fixes(fleet, now)):
            partition = positions.partition_of(key.decode(), n)
            rec = SimpleNamespace(
                key=key, value=value, partition=partition, topic="gps", offset=offset
            )
            rec.message = rec
            out.append(rec)
        return [out[i : i + args.batch] for i in range(0, len(out), args.batch)]

    start = time.time()
    rounds = [events(start + r) for r in range(args.rounds + 2)]
    # The prepared events are the bench's, not the worker's: keep the collector off them.
    gc.collect()
    gc.freeze()
    per_fix = []
    for r, batches in enumerate(rounds[: args.rounds + 1]):
        fixes = sum(len(b) for b in batches)
        t0 = time.process_time()  # CPU time: other work on the machine barely shows
        await agent_fn(Stream(batches))
        elapsed = time.process_time() - t0
        if len(publisher._pending) != fixes:
            raise SystemExit(f"round {r}: {len(publisher._pending)} published of {fixes}")
        publisher._pending.clear()
        if r:  # round 0 is the warm-up: first fix of every vehicle
            per_fix.append(elapsed / fixes * 1e6)
    print(f"tracker_ws from {tracker_ws.__path__[0]}")
    print(
        f"{args.vehicles} vehicles, {args.companies} companies, batches of {args.batch}, "
        f"{args.rounds} rounds"
    )
    print("µs per fix by round: " + " ".join(f"{x:.2f}" for x in per_fix))
    print(f"median µs per fix: {statistics.median(per_fix):.2f}  (min {min(per_fix):.2f})")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        await agent_fn(Stream(rounds[-1]))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
