"""Scenarios S1–S5 (issue 4). Each starts its own broker, Redis and servers and stops them.

A scenario returns a JSON-able dict; bench/report.py turns it into tables and plots.

Measurement step (S2, S3, S4): the load generator's counters are reset, the producer sends
fixes at the step's rate for `step_s` seconds, then we wait until every expected update has
arrived or nothing moved for a second (bounded). Expected updates are computed per connection
from what was actually produced for the vehicles it subscribed to, so coalesced, lost or
cut-off updates all count as `dropped`. Server CPU is the kernel's user+sys time of the server
processes over the step (psutil), never wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bench.common import (
    CoreBusy,
    Hist,
    ProcWatch,
    bucket_counts,
    bucket_percentile,
    median,
    progress,
    scrape,
    stream_ok,
)
from bench.fleet import BenchFleet, FixProducer
from bench.loadgen import ConnSpec, LoadGen
from bench.stack import Server, Stack
from tracker_ws.auth import mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws_dev.simulator import sim_id

T = TypeVar("T")

P99_LIMIT_MS = 100.0


@dataclass
class Ctx:
    out_dir: Path
    log_dir: Path
    server_cpus: set[int] | None
    load_cpus: set[int] | None
    tracker_src: str = ""
    procs: int = 2
    concurrency: int = 64
    step_s: float = 8.0
    quick: bool = False
    profile: bool = False
    baselines: tuple[str, ...] = ("picows", "socketio")
    worker_env: dict[str, str] = field(default_factory=dict)
    py_spy: str = ""
    latency_sample: float = 1.0
    worker_uvloop: bool = False
    stamp: str = ""
    # S2/S3: fractions of the nominal rate to run instead of the ramp (--rates), each step
    # once, e.g. (1.0,) for an A/B of the nominal step alone.
    rates: tuple[float, ...] = ()


# ------------------------------------------------------------------------------ building blocks


def subscribe_frame(proto: str, flt: dict[str, Any]) -> bytes:
    body = {"subscriptionType": "vehicles", "filter": flt}
    if proto == "socketio":
        return b"42" + orjson.dumps(["subscribe", body])
    return orjson.dumps({"type": "subscribe", **body})


def make_spec(
    server: Server, group: int, user: str, company: str, flt: dict[str, Any], vehicles: list[str]
) -> ConnSpec:
    token = mint_token(user, company, secret=DEV_JWT_SECRET, ttl_s=6 * 3600)
    base = server.ws_urls[group]
    url = base if server.proto == "socketio" else f"{base}?token={token}"
    return ConnSpec(url, token, subscribe_frame(server.proto, flt), tuple(vehicles), group)


def fleet_specs(
    server: Server, fleet: BenchFleet, dispatchers: int, mobiles: int, seed: int = 7
) -> list[ConnSpec]:
    """S2 shape: dispatchers `all` of their company, mobiles `byIds` 1–5 of their company;
    spread round-robin over the server's instances."""
    rng = random.Random(seed)
    companies = fleet.companies()
    groups = len(server.ws_urls)
    specs = []
    for i in range(dispatchers):
        c = companies[i % len(companies)]
        specs.append(
            make_spec(
                server, i % groups, sim_id("dispatcher", i), c, {"type": "all"}, fleet.by_company[c]
            )
        )
    for j in range(mobiles):
        c = companies[j % len(companies)]
        ids = rng.sample(fleet.by_company[c], min(rng.randint(1, 5), len(fleet.by_company[c])))
        specs.append(
            make_spec(
                server,
                (dispatchers + j) % groups,
                sim_id("mobile", j),
                c,
                {"type": "byIds", "ids": ids},
                ids,
            )
        )
    # Interleave kinds so every load-generator process gets the same mix.
    rng.shuffle(specs)
    return specs


async def start_server(
    ctx: Ctx, stack: Stack, kind: str, n_vehicles: int, instances: int = 1
) -> Server:
    if kind == "tracker":
        handles: list[Any] = []
        for i in range(instances):
            handles.append(
                await asyncio.to_thread(stack.start_worker, ctx.worker_env, f"bench-ws-{i + 1}")
            )
    else:
        handles = [await asyncio.to_thread(stack.start_baseline, kind, uvloop=kind == "picows")]
    server = Server(kind, handles)
    await asyncio.to_thread(server.wait_registry, n_vehicles, 90.0)
    return server


class Run:
    """One system under test with its backends, producer and load generator."""

    def __init__(self, ctx: Ctx, kind: str, fleet: BenchFleet, instances: int = 1) -> None:
        self.ctx = ctx
        self.kind = kind
        self.fleet = fleet
        self.instances = instances
        self.stack = Stack(
            ctx.log_dir, ctx.server_cpus, ctx.load_cpus, ctx.tracker_src, ctx.worker_uvloop
        )
        self.producer: FixProducer | None = None
        self.server: Server | None = None
        self.lg: LoadGen | None = None
        self.backends: ProcWatch | None = None

    async def __aenter__(self) -> Run:
        try:
            await asyncio.to_thread(self.stack.start_backends)
            self.backends = ProcWatch(self.stack.backend_pids())
            self.producer = FixProducer(self.stack.bootstrap, self.fleet)
            await self.producer.start()
            await self.producer.register()
            self.server = await start_server(
                self.ctx, self.stack, self.kind, len(self.fleet.vehicles), self.instances
            )
            self.lg = LoadGen(self.ctx.procs, self.ctx.load_cpus)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.lg is not None:
            with contextlib.suppress(Exception):
                await self.lg.close()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
        await asyncio.to_thread(self.stack.close)

    async def connect(self, specs: list[ConnSpec]) -> dict[str, Any]:
        assert self.lg is not None and self.server is not None
        cpu0 = self.server.watch.cpu()
        rss0 = self.server.watch.rss()
        lg0 = await self.lg.reset()
        cores = CoreBusy(self.ctx.server_cpus), CoreBusy(self.ctx.load_cpus)
        res = await self.lg.connect(
            specs,
            self.server.proto,
            concurrency=self.ctx.concurrency,
            sample=self.ctx.latency_sample,
        )
        cpu = self.server.watch.cpu() - cpu0
        lg_cpu = (await self.lg.stats())["cpu"] - lg0
        res["server_cpu_s"] = round(cpu, 3)
        res["server_cpu_util"] = round(cpu / res["elapsed_s"], 3) if res["elapsed_s"] else None
        res["loadgen_cpu_util"] = round(lg_cpu / res["elapsed_s"], 3) if res["elapsed_s"] else None
        res["server_core_busy"] = cores[0].busy()
        res["load_core_busy"] = cores[1].busy()
        res["per_server_cpu_s"] = round(res["ok"] / cpu, 1) if cpu > 0 else None
        res["rss_before_mb"] = round(rss0 / 2**20, 1)
        res["rss_after_mb"] = round(self.server.watch.rss() / 2**20, 1)
        return res

    async def warmup(self, rate: float, max_s: float = 45.0) -> bool:
        """Produce until deliveries flow (the consumer group has been joined), bounded."""
        assert self.lg is not None and self.producer is not None
        deadline = time.monotonic() + max_s
        await self.lg.reset()
        while time.monotonic() < deadline:
            await self.producer.run(rate, 1.0)
            s = await self.lg.stats()
            if s["updates"] > 0:
                await self.producer.run(rate, 1.0 if self.ctx.quick else 2.0)  # settle
                return True
        return False

    async def quiesce(self, max_s: float = 20.0) -> None:
        """Wait until no update has arrived for ~1 s: a backlog left by an overloaded step
        must not leak into the next step's figures (bounded)."""
        assert self.lg is not None
        deadline = time.monotonic() + max_s
        last = -1
        still = 0
        while time.monotonic() < deadline:
            s = await self.lg.stats()
            still = still + 1 if s["updates"] == last else 0
            if still >= 2:
                return
            last = s["updates"]
            await asyncio.sleep(0.5)

    async def step(
        self, rate: float, duration: float, vehicles: list[Any] | None = None, label: str = ""
    ) -> dict[str, Any]:
        assert self.lg is not None and self.producer is not None and self.server is not None
        assert self.backends is not None
        await self.quiesce()
        lg_cpu0 = await self.lg.reset()
        handoff0 = await self._handoff()
        cpu0 = self.server.watch.cpu()
        be0 = self.backends.cpu()
        server_core = CoreBusy(self.ctx.server_cpus)
        load_core = CoreBusy(self.ctx.load_cpus)
        t0 = time.monotonic()
        sent = await self.producer.run(rate, duration, vehicles)
        produced_s = time.monotonic() - t0
        sent_d = dict(sent)
        # Drain: until everything expected arrived, or nothing moved for ~1 s (bounded).
        last = -1
        still = 0
        drain_deadline = time.monotonic() + max(3.0, duration)
        while True:
            await asyncio.sleep(0.3)
            s = await self.lg.stats(sent_d)
            if s["received"] >= s["expected"] or time.monotonic() > drain_deadline:
                break
            still = still + 1 if s["received"] == last else 0
            if still >= 4:
                break
            last = s["received"]
        wall = time.monotonic() - t0
        cpu = self.server.watch.cpu() - cpu0
        be_cpu = self.backends.cpu() - be0
        handoff1 = await self._handoff()
        hist: Hist = s["hist"]
        lat = hist.summary()
        fixes = sum(sent.values())
        dropped = max(0, s["expected"] - s["received"])
        lg_util = (s["cpu"] - lg_cpu0) / wall / max(1, len(self.ctx.load_cpus or {0}))
        step = {
            "label": label,
            "rate_fixes_per_s": round(fixes / produced_s, 1),
            "target_rate": rate,
            "duration_s": round(produced_s, 2),
            "wall_s": round(wall, 2),
            "fixes": fixes,
            "expected_updates": s["expected"],
            "updates": s["received"],
            "dropped": dropped,
            "excess": s["excess"],
            "short_conns": s["short_conns"],
            "missing_conns": s["missing_conns"],
            "groups": {str(g): {"expected": e, "received": r} for g, (e, r) in s["groups"].items()},
            "frames": s["pframes"],
            "other_frames": s["frames"] - s["pframes"],
            "bytes": s["bytes"],
            "updates_per_s": round(s["received"] / produced_s, 1),
            "frames_per_s": round(s["pframes"] / produced_s, 1),
            "mbytes_per_s": round(s["bytes"] / produced_s / 1e6, 2),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_util": round(cpu / wall, 3),
            "updates_per_cpu_s": round(s["received"] / cpu, 1) if cpu > 0 else None,
            "frames_per_cpu_s": round(s["pframes"] / cpu, 1) if cpu > 0 else None,
            "backend_cpu_s": round(be_cpu, 3),
            "loadgen_cpu_util": round(lg_util, 3),
            "server_rss_mb": round(self.server.watch.rss() / 2**20, 1),
            # tracker_ws's own view: fix time -> hand-off to the connection queues (bucket
            # upper bounds of ws_message_delivery_duration_seconds over the step).
            "handoff_p50_ms": bucket_percentile(handoff0, handoff1, 50) if handoff1 else None,
            "handoff_p99_ms": bucket_percentile(handoff0, handoff1, 99) if handoff1 else None,
            "disconnects": s["disconnects"],
            "close_codes": s["close_codes"],
            "open_connections": s["open"],
            **lat,
        }
        p99 = lat["p99_ms"]
        step["pass"] = bool(
            p99 is not None
            and p99 < P99_LIMIT_MS
            and dropped == 0
            and s["disconnects"] == 0
            and s["expected"] > 0
        )
        step["server_core_busy"] = server_core.busy()
        step["load_core_busy"] = load_core.busy()
        # The load side shares its core(s) with the producer, broker and Redis: past ~95 %
        # busy, latency measured there includes queueing in the load generator itself.
        step["load_side_saturated"] = step["load_core_busy"] > 0.95
        return step

    async def _handoff(self) -> dict[float, float]:
        if self.server is None or self.server.kind != "tracker":
            return {}
        total: dict[float, float] = {}
        for h in self.server.handles:
            samples = await asyncio.to_thread(scrape, f"{h.url}/metrics")
            for b, v in bucket_counts(samples, "ws_message_delivery_duration_seconds").items():
                total[b] = total.get(b, 0.0) + v
        return total

    async def ramp(
        self, rates: list[float], nominal: float | None, vehicles: list[Any] | None = None
    ) -> dict[str, Any]:
        """Steps of increasing rate until one fails (p99 ≥ 100 ms, drops or disconnects).
        A step that fails on latency alone is repeated once (noisy neighbours)."""
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        todo = sorted(rates)
        if not self.ctx.quick:
            # Past the list while steps keep passing: ×1.5 per step, up to 3× the last rate.
            cap = todo[-1] * 3
            extra = todo[-1] * 1.5
            while extra <= cap:
                todo.append(round(extra, 1))
                extra *= 1.5
        for rate in todo:
            step = await self.step(rate, self.ctx.step_s, vehicles, label=f"ramp {rate:g}/s")
            self._log(step)
            if not step["pass"] and step["dropped"] == 0 and step["disconnects"] == 0:
                steps.append({**step, "superseded": True})
                step = await self.step(rate, self.ctx.step_s, vehicles, label=f"ramp {rate:g}/s")
                step["retry"] = True
                self._log(step)
            steps.append(step)
            if step["pass"]:
                best = step
            else:
                break
        nominal_step = None
        if nominal is not None:
            nominal_step = next(
                (s for s in steps if s["target_rate"] == nominal and not s.get("superseded")),
                None,
            )
            if nominal_step is None:
                if (
                    not steps[-1]["pass"]
                    and steps[-1]["dropped"] > steps[-1]["expected_updates"] / 4
                ):
                    # Give the server a moment to drain a heavy overload before measuring.
                    await asyncio.sleep(3.0)
                nominal_step = await self.step(nominal, self.ctx.step_s, vehicles, "nominal")
                self._log(nominal_step)
        return {"steps": steps, "sustainable": best, "nominal": nominal_step}

    async def steps(self, rates: list[float], nominal: float) -> dict[str, Any]:
        """One step per rate, in the order given, none repeated (the ramp's step records).
        Not a ramp, so no sustainable rate; the nominal is the step at `nominal`, if run."""
        steps = []
        for rate in rates:
            step = await self.step(rate, self.ctx.step_s, label=f"step {rate:g}/s")
            self._log(step)
            steps.append(step)
        at_nominal = [s for s in steps if s["target_rate"] == nominal]
        return {
            "steps": steps,
            "sustainable": None,
            "nominal": at_nominal[-1] if at_nominal else None,
            "ramp": False,
        }

    def _log(self, s: dict[str, Any]) -> None:
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

        progress(
            f"  {self.kind} {s['label']}: {f(s['rate_fixes_per_s'])} fixes/s → "
            f"{f(s['updates_per_s'])} upd/s, {f(s['frames_per_s'])} frames/s, "
            f"p50/p95/p99 {f(s['p50_ms'])}/{f(s['p95_ms'])}/{f(s['p99_ms'])} ms, "
            f"hand-off p50/p99 {f(s['handoff_p50_ms'])}/{f(s['handoff_p99_ms'])} ms, "
            f"dropped {s['dropped']}, server CPU {s['server_cpu_util']:.0%}, "
            f"{f(s['updates_per_cpu_s'])} upd/CPU-s, loadgen {s['loadgen_cpu_util']:.0%}, "
            f"cores busy {s['server_core_busy']:.0%}/{s['load_core_busy']:.0%}"
            f" → {'PASS' if s['pass'] else 'FAIL'}"
        )

    async def profile(self, rate: float, seconds: float, out: Path) -> dict[str, Any] | None:
        """py-spy record of the (first) server process while producing at `rate`."""
        if not self.ctx.py_spy or self.server is None or self.producer is None:
            return None
        rec = asyncio.create_task(py_spy_record(self.ctx, self.server.pids[0], seconds, out))
        await self.producer.run(rate, seconds + 1.0)
        return await rec


def top_frames(raw_path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """Self time per function from a py-spy `--format raw` (collapsed stacks) file."""
    if not raw_path.exists():
        return []
    self_time: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            k = int(n)
        except ValueError:
            continue
        total += k
        leaf = stack.split(";")[-1]
        self_time[leaf] += k
    return [(name, round(100.0 * k / total, 1)) for name, k in self_time.most_common(limit)]


def inclusive_frames(raw_path: Path, needles: list[str]) -> dict[str, float]:
    """Share of samples whose stack contains each needle (inclusive time)."""
    if not raw_path.exists():
        return {}
    hits: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            k = int(n)
        except ValueError:
            continue
        total += k
        for needle in needles:
            if needle in stack:
                hits[needle] += k
    return {n: round(100.0 * hits[n] / total, 1) for n in needles} if total else {}


# ------------------------------------------------------------------------------ S1


async def s1_idle(ctx: Ctx, kind: str, connections: int, extra: int) -> dict[str, Any]:
    import resource

    # The server inherits our RLIMIT_NOFILE: stay a little under it.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    extra = max(0, min(extra, limit - 300 - connections))
    fleet = BenchFleet.build(200, 2)
    progress(f"S1 {kind}: {connections} idle connections (+{extra} more if they fit)")
    async with Run(ctx, kind, fleet) as run:
        assert run.server is not None and run.lg is not None
        await asyncio.sleep(1.0)
        rss0 = run.server.watch.rss()
        rng = random.Random(11)
        specs = []
        companies = fleet.companies()
        for i in range(connections + extra):
            c = companies[i % len(companies)]
            vid = rng.choice(fleet.by_company[c])
            specs.append(
                make_spec(
                    run.server, 0, sim_id("idle", i), c, {"type": "byIds", "ids": [vid]}, [vid]
                )
            )
        prof_connect = None
        if ctx.profile and ctx.py_spy and kind == "tracker":
            out = ctx.out_dir / f"{ctx.stamp}-profile-S1-connect-tracker.svg"
            prof_connect = asyncio.create_task(
                py_spy_record(ctx, run.server.pids[0], 10.0, out), name="py-spy connect"
            )
        conn = await run.connect(specs[:connections])
        if prof_connect is not None:
            prof = await prof_connect
            if prof is not None:
                conn["profile"] = {**prof, "rate": "connection setup"}
        progress(
            f"  {kind}: {conn['ok']} connected ({conn['failed']} failed) at "
            f"{conn['rate_per_s']} conn/s, {conn['per_server_cpu_s']} conn/server-CPU-s; "
            f"server {conn['server_cpu_util']:.0%}, loadgen {conn['loadgen_cpu_util']:.0%}, "
            f"cores busy {conn['server_core_busy']:.0%}/{conn['load_core_busy']:.0%}"
        )
        await asyncio.sleep(2.0)
        rss1 = run.server.watch.rss()
        # Idle CPU over a quiet window (no fixes produced).
        idle_s = 4.0 if ctx.quick else 10.0
        cpu0 = run.server.watch.cpu()
        t0 = time.monotonic()
        prof_idle = None
        if ctx.profile and ctx.py_spy and kind == "tracker":
            out = ctx.out_dir / f"{ctx.stamp}-profile-S1-idle-tracker.svg"
            prof_idle = asyncio.create_task(py_spy_record(ctx, run.server.pids[0], idle_s, out))
        await asyncio.sleep(idle_s)
        idle_cpu = (run.server.watch.cpu() - cpu0) / (time.monotonic() - t0)
        if prof_idle is not None:
            prof = await prof_idle
            if prof is not None:
                conn["idle_profile"] = {**prof, "rate": "idle"}
        held = run.server.connections()
        per_conn_kib = (rss1 - rss0) / 1024 / max(1, conn["ok"])
        result: dict[str, Any] = {
            "connections": conn["ok"],
            "failed": conn["failed"],
            "errors": conn["errors"],
            "server_reports_connections": held,
            "rss_before_mb": round(rss0 / 2**20, 1),
            "rss_after_mb": round(rss1 / 2**20, 1),
            "rss_per_conn_kib": round(per_conn_kib, 2),
            "setup_rate_per_s": conn["rate_per_s"],
            "setup_per_server_cpu_s": conn["per_server_cpu_s"],
            "setup_p50_ms": conn["setup_p50_ms"],
            "setup_p99_ms": conn["setup_p99_ms"],
            "idle_cpu_util": round(idle_cpu, 4),
            "profile": conn.get("profile"),
            "idle_profile": conn.get("idle_profile"),
        }
        progress(
            f"  {kind}: RSS {result['rss_before_mb']} → {result['rss_after_mb']} MB = "
            f"{per_conn_kib:.1f} KiB/conn; idle CPU {idle_cpu:.1%}"
        )
        if extra:
            more = await run.connect(specs[connections:])
            await asyncio.sleep(1.0)
            total = conn["ok"] + more["ok"]
            result["max_connections"] = {
                "attempted": connections + extra,
                "held": total,
                "server_reports": run.server.connections(),
                "failed": more["failed"],
                "errors": more["errors"],
                "rss_mb": round(run.server.watch.rss() / 2**20, 1),
                "rss_per_conn_kib": round(
                    (run.server.watch.rss() - rss0) / 1024 / max(1, total), 2
                ),
            }
            progress(
                f"  {kind}: held {total} of {connections + extra} connections "
                f"({result['max_connections']['rss_per_conn_kib']} KiB/conn)"
            )
    return result


# ------------------------------------------------------------------------------ S2 / S3


async def ramp_scenario(
    ctx: Ctx,
    name: str,
    kind: str,
    fleet: BenchFleet,
    specs_for: Any,
    rates: list[float],
    nominal: float | None,
    instances: int = 1,
    profile_at: float | None = None,
) -> dict[str, Any]:
    async with Run(ctx, kind, fleet, instances) as run:
        assert run.server is not None
        specs = specs_for(run.server)
        progress(f"{name} {kind}: connecting {len(specs)} clients")
        conn = await run.connect(specs)
        progress(
            f"  {kind}: {conn['ok']} connected ({conn['failed']} failed) in {conn['elapsed_s']} s"
            f" = {conn['rate_per_s']} conn/s; server RSS {conn['rss_after_mb']} MB"
        )
        if conn["failed"]:
            progress(f"  connection errors: {conn['errors']}")
        warm_rate = max(min(rates), 1.0)
        if not await run.warmup(warm_rate):
            progress(f"  {kind}: no deliveries during warm-up; measuring anyway")
        result: dict[str, Any] = {"connect": conn, "connections": conn["ok"]}
        if ctx.rates and nominal is not None:
            result.update(await run.steps([round(nominal * m, 1) for m in ctx.rates], nominal))
        else:
            result.update(await run.ramp(rates, nominal))
        if ctx.profile and ctx.py_spy and profile_at:
            out = ctx.out_dir / f"{ctx.stamp}-profile-{name}-{kind}.svg"
            progress(f"  {kind}: py-spy record for 15 s at {profile_at:g} fixes/s → {out}")
            await asyncio.sleep(2.0)
            prof = await run.profile(profile_at, 15.0, out)
            if prof is not None:
                result["profile"] = {**prof, "rate": profile_at}
        if run.server is not None:
            result["server_rss_mb"] = round(run.server.watch.rss() / 2**20, 1)
    return result


_WRAPPERS = frozenset(
    {
        "Service._execute_task",
        "App._task.<locals>._wrapped",
        "App.timer.<locals>._inner.<locals>.around_timer",
        "Agent._execute_actor",
    }
)


def loop_callbacks(raw_path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """Share of samples per event-loop callback of the main thread (the frame just below
    `Handle._run`): which task or protocol callback the loop spends its time in."""
    if not raw_path.exists():
        return []
    per: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            k = int(n)
        except ValueError:
            continue
        total += k
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if "Handle._run" in frames:
            i = frames.index("Handle._run") + 1
            # Faust wraps timers and tasks: name the timer/task itself, not the wrapper.
            while i < len(frames) and frames[i] in _WRAPPERS:
                i += 1
            name = " > ".join(frames[i : i + 2]) or "Handle._run"
        elif frames and frames[0].startswith("Thread."):
            name = "(other thread: Faust consumer thread)"
        else:
            name = f"(event loop) {frames[-1]}"
        per[name] += k
    return [(name, round(100.0 * k / total, 1)) for name, k in per.most_common(limit)]


PROFILE_NEEDLES = [
    "Flusher._run",
    "Session.flush",
    "_write_loop",
    "send_frame",
    "Hub.deliver",
    "_deliver_position",
    "push_position",
    "positions (tracker_ws/agents/positions.py",
    "Publisher._run",
    "_listen",
    "parse_delivery",
    "encode_position_batch",
    "Outbox.take",
    "Hub.sweep",
    "Session._ping",
    "ProducerBuffer",
    "Logger.debug",
    "faust/transport/consumer.py",
    "aiokafka/consumer",
    "aiokafka/producer",
    "EpollSelector.select",
]


def s2_rates(n: int, quick: bool) -> list[float]:
    mult = [0.1, 0.5, 1.0] if quick else [0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0]
    return [round(n * m, 1) for m in mult]


async def s2_fleet(
    ctx: Ctx, kind: str, vehicles: int, companies: int, dispatchers: int, mobiles: int
) -> dict[str, Any]:
    fleet = BenchFleet.build(vehicles, companies)
    progress(
        f"S2 {kind}: {vehicles} vehicles / {companies} companies, {dispatchers} dispatchers "
        f"`all` + {mobiles} mobiles `byIds`"
    )
    res = await ramp_scenario(
        ctx,
        "S2",
        kind,
        fleet,
        lambda server: fleet_specs(server, fleet, dispatchers, mobiles),
        s2_rates(vehicles, ctx.quick),
        float(vehicles),
        profile_at=float(vehicles) if kind == "tracker" else None,
    )
    res["shape"] = {
        "vehicles": vehicles,
        "companies": companies,
        "dispatchers": dispatchers,
        "mobiles": mobiles,
    }
    return res


def hot_specs(server: Server, fleet: BenchFleet, connections: int) -> list[ConnSpec]:
    """S3: everyone watches the same vehicles (half `all` of the company, half `byIds` of all
    its vehicles, so both index paths are hot)."""
    (company,) = fleet.companies()
    ids = fleet.by_company[company]
    specs = []
    for i in range(connections):
        flt = {"type": "all"} if i % 2 == 0 else {"type": "byIds", "ids": ids}
        specs.append(
            make_spec(server, i % len(server.ws_urls), sim_id("hot", i), company, flt, ids)
        )
    return specs


async def s3_hot(ctx: Ctx, kind: str, vehicles: int, connections: int) -> dict[str, Any]:
    fleet = BenchFleet.build(vehicles, 1)
    progress(f"S3 {kind}: {connections} connections on the same {vehicles} vehicles")
    # Every fix fans out to every connection: start at 1 fix/s in total.
    mult = [0.02, 0.1, 0.5] if ctx.quick else [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]
    rates = [round(vehicles * m, 1) for m in mult]
    res = await ramp_scenario(
        ctx,
        "S3",
        kind,
        fleet,
        lambda server: hot_specs(server, fleet, connections),
        rates,
        float(vehicles),
        profile_at=rates[2] if kind == "tracker" else None,
    )
    res["shape"] = {"vehicles": vehicles, "connections": connections}
    return res


# ------------------------------------------------------------------------------ S4


async def s4_two(
    ctx: Ctx, vehicles: int, companies: int, dispatchers: int, mobiles: int
) -> dict[str, Any]:
    fleet = BenchFleet.build(vehicles, companies)
    progress("S4: S2 shape over two tracker instances (same app id) through Redis")
    async with Run(ctx, "tracker", fleet, instances=2) as run:
        assert run.server is not None
        specs = fleet_specs(run.server, fleet, dispatchers, mobiles)
        conn = await run.connect(specs)
        progress(f"  connected {conn['ok']} ({conn['failed']} failed) at {conn['rate_per_s']}/s")
        await run.warmup(max(1.0, vehicles * 0.1))
        check = await run.step(vehicles * 0.1, min(ctx.step_s, 5.0), label="routing check")
        run._log(check)
        got = check["updates"] / max(1, check["expected_updates"])
        per_group = {
            g: round(v["received"] / max(1, v["expected"]), 3) for g, v in check["groups"].items()
        }
        result: dict[str, Any] = {
            "connect": conn,
            "connections": conn["ok"],
            "routing_check": check,
            "delivered_fraction": round(got, 4),
            "delivered_fraction_by_instance": per_group,
            "shape": {
                "vehicles": vehicles,
                "companies": companies,
                "dispatchers": dispatchers,
                "mobiles": mobiles,
                "instances": 2,
            },
        }
        if got < 0.99:
            result["supported"] = False
            result["note"] = (
                f"not supported yet: only {got:.1%} of the expected updates arrived "
                f"(per instance {per_group}); workers of the same TRACKER_WS_APP_ID do not route "
                "to each other yet, so an instance only sees fixes of the partitions it owns"
            )
            progress(f"  S4: {result['note']}")
            return result
        result["supported"] = True
        # Quick runs: the check and the 1 fix/s step only.
        rates = [vehicles * 0.1] if ctx.quick else s2_rates(vehicles, ctx.quick)
        result.update(await run.ramp(rates, float(vehicles)))
    return result


# ------------------------------------------------------------------------------ S5


async def s5_ingest(
    ctx: Ctx, vehicles: int, events: int, window_s: float, workers: int = 1
) -> dict[str, Any]:
    """S5 with one worker and the raw consumer; with `workers` > 1, the same backlog again
    on that many workers of one consumer group (same CPU), for the CPU-normalised scaling:
    workers × (events per CPU-s with N) ÷ (events per CPU-s with one)."""
    result = await s5_backlog(ctx, vehicles, events, window_s, 1, raw=True)
    if workers > 1:
        many = await s5_backlog(ctx, vehicles, events, window_s, workers, raw=False)
        one_cpu = result.get("worker_events_per_cpu_s")
        n_cpu = many.get("worker_events_per_cpu_s")
        many["scaling_cpu_normalised"] = (
            round(workers * n_cpu / one_cpu, 2) if one_cpu and n_cpu else None
        )
        many["scaling_wall"] = (
            round(many["worker_events_per_s"] / result["worker_events_per_s"], 2)
            if result.get("worker_events_per_s")
            else None
        )
        progress(
            f"  S5 scaling, {workers} workers vs one: ×{many['scaling_cpu_normalised']} "
            f"CPU-normalised, ×{many['scaling_wall']} wall clock (same CPU)"
        )
        result["multi"] = many
    return result


async def s5_backlog(
    ctx: Ctx, vehicles: int, events: int, window_s: float, workers: int, *, raw: bool
) -> dict[str, Any]:
    """A backlog of `events` fixes is produced at full speed (far faster than the workers
    drain it); the workers' ok-counters are sampled for at most `window_s` seconds and their
    slope is the ingest rate. Then (`raw`), with the worker stopped, a raw aiokafka consumer
    on the same CPU reads the same topic from the beginning."""
    fleet = BenchFleet.build(vehicles, 20)
    what = "one worker" if workers == 1 else f"{workers} workers"
    progress(f"S5: ingest backlog of {events} fixes on {what}")
    async with Run(ctx, "tracker", fleet, instances=workers) as run:
        assert run.server is not None and run.producer is not None
        # One dispatcher per company: every fix is routed and delivered somewhere.
        specs = [
            make_spec(run.server, 0, sim_id("ingest", i), c, {"type": "all"}, fleet.by_company[c])
            for i, c in enumerate(fleet.companies())
        ]
        await run.connect(specs)
        urls = [w.url for w in run.stack.workers]
        worker = run.stack.workers[0]

        def ok_total() -> float:
            return sum(stream_ok(url) for url in urls)

        if not await run.warmup(200.0):
            progress("  S5: warm-up saw no deliveries")
        await run.quiesce()
        ok0 = await asyncio.to_thread(ok_total)
        t_start = time.monotonic()
        samples: list[tuple[float, float, float]] = [(t_start, ok0, run.server.watch.cpu())]
        produce = asyncio.create_task(run.producer.blast(events))
        # The profile covers the measuring window itself (from 1 s in), not what is left after.
        profiling = None
        if ctx.profile and ctx.py_spy and workers == 1:
            out = ctx.out_dir / f"{ctx.stamp}-profile-S5-tracker.svg"
            seconds = max(2.0, min(8.0, window_s - 2.0))
            progress(f"  worker: py-spy record for {seconds:g} s while the backlog drains → {out}")
            profiling = asyncio.create_task(
                _later(1.0, py_spy_record(ctx, worker.process.pid, seconds, out))
            )
        done = False
        while time.monotonic() - t_start < window_s:
            await asyncio.sleep(0.5)
            ok = await asyncio.to_thread(ok_total)
            samples.append((time.monotonic(), ok, run.server.watch.cpu()))
            if ok - ok0 >= events:
                done = True
                break
        produce_s = await produce
        processed = samples[-1][1] - ok0
        if done:  # drained inside the window: the middle 80 % of the backlog
            lo = next((x for x in samples if x[1] - ok0 >= 0.1 * processed), samples[0])
            hi = next((x for x in samples if x[1] - ok0 >= 0.9 * processed), samples[-1])
            if hi is lo:  # drained between two samples (quick sizes): from the start instead
                lo = samples[0]
        else:  # still draining: from 1 s after the start to the end of the window
            lo = next((x for x in samples if x[0] - t_start >= 1.0), samples[0])
            hi = samples[-1]
        rate = (hi[1] - lo[1]) / max(1e-6, hi[0] - lo[0])
        cpu_rate = (hi[1] - lo[1]) / max(1e-6, hi[2] - lo[2])
        cpu_util = (hi[2] - lo[2]) / max(1e-6, hi[0] - lo[0])
        progress(
            f"  {what}: {processed:.0f} of {events} events in {hi[0] - t_start:.1f} s; "
            f"steady {rate:.0f} events/s at {cpu_util:.0%} CPU ({cpu_rate:.0f} per CPU-s, "
            f"{1e6 / cpu_rate if cpu_rate else 0:.0f} µs CPU per event); "
            f"producer took {produce_s:.1f} s"
        )
        profile = await profiling if profiling is not None else None
        out_: dict[str, Any] = {
            "workers": workers,
            "events": events,
            "window_s": window_s,
            "processed_ok": int(processed),
            "drained": done,
            "producer_s": round(produce_s, 2),
            "producer_rate": round(events / produce_s, 1) if produce_s else None,
            "worker_events_per_s": round(rate, 1),
            "worker_events_per_cpu_s": round(cpu_rate, 1),
            "worker_cpu_us_per_event": round(1e6 / cpu_rate, 1) if cpu_rate else None,
            "worker_cpu_util": round(cpu_util, 3),
            "samples": [(round(t - t_start, 2), v - ok0) for t, v, _ in samples],
            "profile": profile,
        }
        if not raw:
            return out_
        await asyncio.to_thread(worker.stop)  # free the server CPU for the raw consumer
        raw_ = await raw_consumer(ctx, run.stack.bootstrap, run.producer.total_sent)
        progress(
            f"  raw aiokafka consumer: {raw_.get('events_per_s')} events/s "
            f"({raw_.get('events_per_cpu_s')} per CPU-s)"
        )
        eps = raw_.get("events_per_s")
        out_["raw"] = raw_
        out_["ratio_to_raw"] = round(rate / eps, 4) if eps else None
        return out_


async def _later(delay: float, coro: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await coro


async def py_spy_record(ctx: Ctx, pid: int, seconds: float, out: Path) -> dict[str, Any] | None:
    """py-spy flame graph (SVG) and collapsed stacks (.txt) of `pid` for `seconds`."""
    if not ctx.py_spy:
        return None
    raw = out.with_suffix(".txt")
    base = [ctx.py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    base += ["--rate", "200", "--nonblocking"]
    procs = [
        await asyncio.create_subprocess_exec(
            *c, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for c in ([*base, "-o", str(out)], [*base, "--format", "raw", "-o", str(raw)])
    ]
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), seconds + 30)
        except TimeoutError:
            p.kill()
            await p.wait()
    exists = await asyncio.to_thread(raw.exists)
    return {
        "svg": str(out),
        "raw": str(raw) if exists else None,
        "top_self": top_frames(raw) if exists else [],
        "inclusive": inclusive_frames(raw, PROFILE_NEEDLES) if exists else {},
        "callbacks": loop_callbacks(raw) if exists else [],
    }


async def raw_consumer(ctx: Ctx, bootstrap: str, count: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.baselines", "raw-consumer", "--broker", bootstrap]
    cmd += ["--count", str(count), "--port", "0"]
    if ctx.server_cpus:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(ctx.server_cpus))), *cmd]
    try:
        proc = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        return {"error": "raw consumer timed out"}
    try:
        data: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
        return data
    except (IndexError, orjson.JSONDecodeError):
        return {"error": (proc.stderr or proc.stdout)[-500:]}


def s2_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Medians and headline numbers used by the report."""
    out: dict[str, Any] = {}
    for kind, res in results.items():
        best = res.get("sustainable") or {}
        out[kind] = {
            "sustainable_rate": best.get("rate_fixes_per_s"),
            "sustainable_updates_per_s": best.get("updates_per_s"),
            "frames_per_cpu_s": median(
                [s["frames_per_cpu_s"] for s in res.get("steps", []) if s.get("frames_per_cpu_s")]
            ),
        }
    return out
