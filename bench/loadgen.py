"""Multi-process WebSocket load generator (picows + uvloop).

The parent (`LoadGen`) spawns worker processes pinned to the load CPUs; each process holds
thousands of connections, authenticates (token in the URL, or the Socket.IO CONNECT payload),
subscribes once, then counts frames, position updates and bytes and records the latency of
every position update: receipt time minus the fix timestamp carried in
`position.timestamp` (the producer writes its own clock there; same machine, same clock).

The per-frame path stays in C where it can: `bytes.count` for updates and one compiled
regex over the frame for the timestamps (a `position` object ends with its `timestamp`, so the
pattern `"timestamp":"…Z"}` matches fix times and never the frame header's server time).

Commands travel over a multiprocessing pipe; histograms and counters travel back the same way.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import gc
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.common import HIST_BINS, Hist, hist_index, pin_self, raise_nofile

PROTO_TRACKER = "tracker"  # tracker_ws and the picows broadcaster baseline
PROTO_SOCKETIO = "socketio"  # python-socketio (Engine.IO v4, WebSocket transport only)


@dataclass(frozen=True, slots=True)
class ConnSpec:
    url: str  # WebSocket URL (tracker: includes ?token=)
    token: str
    subscribe: bytes  # the frame sent once the server said hello
    vehicles: tuple[str, ...]  # the vehicles whose fixes this connection should get
    group: int = 0  # which server instance (S4)


# ----------------------------------------------------------------------------- child side

_TS_RE = re.compile(rb'"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d\d\d)Z"\}')
_findall = _TS_RE.findall


class Stats:
    """Counters of one load-generator process (reset at each measurement step)."""

    __slots__ = (
        "bytes",
        "close_codes",
        "disconnects",
        "errors",
        "frames",
        "hist",
        "lat_max",
        "lat_n",
        "lat_sum",
        "measure",
        "other",
        "pframes",
        "sec_cache",
        "updates",
    )

    def __init__(self) -> None:
        self.sec_cache: dict[bytes, int] = {}
        self.measure = True
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.updates = 0
        self.pframes = 0
        self.other = 0
        self.hist = [0] * HIST_BINS
        self.lat_sum = 0.0
        self.lat_max = 0.0
        self.lat_n = 0
        self.disconnects = 0
        self.close_codes: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()

    def observe(self, data: bytes) -> None:
        """Latency of every fix timestamp in a position/positionBatch frame."""
        now = time.time() * 1000.0
        cache = self.sec_cache
        hist = self.hist
        total = 0.0
        worst = self.lat_max
        n = 0
        for sec, ms in _findall(data):
            base = cache.get(sec)
            if base is None:
                if len(cache) > 100_000:
                    cache.clear()
                base = cache[sec] = (
                    calendar.timegm(time.strptime(sec.decode(), "%Y-%m-%dT%H:%M:%S")) * 1000
                )
            lat = now - base - int(ms)
            if lat < 100.0:
                i = int(lat * 10.0) if lat > 0 else 0
            elif lat < 1000.0:
                i = 1000 + int(lat - 100.0)
            elif lat < 10000.0:
                i = 1900 + int((lat - 1000.0) * 0.1)
            else:
                i = 2800
            hist[i] += 1
            total += lat
            if lat > worst:
                worst = lat
            n += 1
        self.lat_sum += total
        self.lat_max = worst
        self.lat_n += n


def _make_listener_classes() -> tuple[type, type]:
    """Defined lazily so the parent never needs picows' C extension."""
    from picows import WSListener, WSMsgType

    TEXT = WSMsgType.TEXT
    CLOSE = WSMsgType.CLOSE

    class TrackerClient(WSListener):  # type: ignore[misc]
        """tracker_ws protocol: wait for `connected`, send the subscribe, wait `subscribed`."""

        __slots__ = ("closed", "measure", "ready", "st", "sub", "token", "transport", "updates")

        def __init__(
            self,
            st: Stats,
            sub: bytes,
            token: str,
            ready: asyncio.Future[None],
            measure: bool = True,
        ) -> None:
            self.st = st
            self.measure = measure
            self.sub = sub
            self.token = token
            self.ready: asyncio.Future[None] | None = ready
            self.transport: Any = None
            self.updates = 0
            self.closed = False

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            mt = frame.msg_type
            if mt is TEXT:
                data = frame.get_payload_as_bytes()
                st = self.st
                st.frames += 1
                st.bytes += len(data)
                if data.startswith(b'{"type":"position'):
                    self.updates += data.count(b'"vehicleId"')
                    st.pframes += 1
                    if self.measure and st.measure:
                        st.observe(data)
                    return
                self._control(transport, data)
            elif mt is CLOSE:
                self.st.close_codes[int(frame.get_close_code())] += 1

        def _control(self, transport: Any, data: bytes) -> None:
            ready = self.ready
            if ready is None:
                self.st.other += 1
                return
            if data.startswith(b'{"type":"connected"'):
                transport.send(TEXT, self.sub)
            elif data.startswith(b'{"type":"subscribed"'):
                self.ready = None
                if not ready.done():
                    ready.set_result(None)
            elif data.startswith(b'{"type":"error"'):
                self.ready = None
                if not ready.done():
                    ready.set_exception(RuntimeError(data[:200].decode(errors="replace")))

        def on_ws_disconnected(self, transport: Any) -> None:
            self.closed = True
            self.st.disconnects += 1
            ready = self.ready
            if ready is not None and not ready.done():
                ready.set_exception(ConnectionError("closed during handshake"))

    class SocketIOClient(TrackerClient):
        """Engine.IO v4 / Socket.IO v5 over a raw WebSocket: `0{…}` open → `40{auth}` →
        `40{sid}` → `42["subscribe",…]` → `42["subscribed",…]`; answers pings `2` with `3`."""

        __slots__ = ()

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            mt = frame.msg_type
            if mt is TEXT:
                data = frame.get_payload_as_bytes()
                st = self.st
                st.frames += 1
                st.bytes += len(data)
                if data.startswith(b'42["position"'):
                    self.updates += data.count(b'"vehicleId"')
                    st.pframes += 1
                    if self.measure and st.measure:
                        st.observe(data)
                    return
                if data == b"2":
                    transport.send(TEXT, b"3")
                    return
                self._control(transport, data)
            elif mt is CLOSE:
                self.st.close_codes[int(frame.get_close_code())] += 1

        def _control(self, transport: Any, data: bytes) -> None:
            ready = self.ready
            if ready is None:
                self.st.other += 1
                return
            if data.startswith(b"0{"):
                transport.send(TEXT, b'40{"token":"' + self.token.encode() + b'"}')
            elif data.startswith(b"40"):
                transport.send(TEXT, self.sub)
            elif data.startswith(b'42["subscribed"'):
                self.ready = None
                if not ready.done():
                    ready.set_result(None)
            elif data.startswith((b"44", b'42["error"')):
                self.ready = None
                if not ready.done():
                    ready.set_exception(RuntimeError(data[:200].decode(errors="replace")))

    return TrackerClient, SocketIOClient


class _Child:
    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.st = Stats()
        self.specs: list[ConnSpec] = []
        self.clients: list[Any] = []
        self.base: list[int] = []
        self.setup_ms: list[float] = []
        self.tracker_cls, self.sio_cls = _make_listener_classes()
        self.stop = asyncio.Event()

    async def connect(
        self, specs: list[ConnSpec], proto: str, concurrency: int, timeout: float, sample: float
    ) -> dict[str, Any]:
        from picows import ws_connect

        loop = asyncio.get_running_loop()
        cls = self.sio_cls if proto == "socketio" else self.tracker_cls
        sem = asyncio.Semaphore(concurrency)
        ok = failed = 0
        errors: Counter[str] = Counter()
        setup = [0] * HIST_BINS
        st = self.st
        last_report = time.monotonic()
        first = time.monotonic()
        done = 0

        # Latency is recorded on a deterministic share of the connections (all by default).
        every = max(1, round(1 / sample)) if sample > 0 else 0
        offset = len(self.clients)

        async def one(k: int, spec: ConnSpec) -> None:
            nonlocal ok, failed, done, last_report
            measure = bool(every) and (offset + k) % every == 0
            async with sem:
                ready: asyncio.Future[None] = loop.create_future()
                t0 = time.perf_counter()
                transport = None
                try:
                    async with asyncio.timeout(timeout):
                        transport, client = await ws_connect(
                            lambda: cls(st, spec.subscribe, spec.token, ready, measure),
                            spec.url,
                            websocket_handshake_timeout=timeout,
                            read_buffer_init_size=4096,
                            enable_auto_pong=True,
                        )
                        await ready
                    setup[hist_index((time.perf_counter() - t0) * 1000)] += 1
                    self.specs.append(spec)
                    self.clients.append(client)
                    self.base.append(0)
                    ok += 1
                except Exception as exc:
                    failed += 1
                    errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    if transport is not None:
                        with contextlib.suppress(Exception):
                            transport.disconnect()
                done += 1
                now = time.monotonic()
                if now - last_report > 5.0:
                    last_report = now
                    print(
                        f"  loadgen[{self.index}]: {done}/{len(specs)} connections"
                        f" ({failed} failed)",
                        file=sys.stderr,
                        flush=True,
                    )

        await asyncio.gather(*(one(k, s) for k, s in enumerate(specs)))
        elapsed = time.monotonic() - first
        gc.collect()
        gc.freeze()  # thousands of long-lived listener objects: keep them out of GC scans
        return {
            "ok": ok,
            "failed": failed,
            "errors": dict(errors.most_common(5)),
            "elapsed": elapsed,
            "setup_hist": setup,
        }

    def reset(self) -> dict[str, Any]:
        self.st.reset()
        self.base = [c.updates for c in self.clients]
        return {"cpu": _cpu()}

    def stats(self, sent: dict[str, int] | None) -> dict[str, Any]:
        st = self.st
        out: dict[str, Any] = {
            "frames": st.frames,
            "pframes": st.pframes,
            "bytes": st.bytes,
            "updates": sum(c.updates for c in self.clients) - sum(self.base),
            "hist": {i: n for i, n in enumerate(st.hist) if n},
            "lat_sum": st.lat_sum,
            "lat_max": st.lat_max,
            "lat_n": st.lat_n,
            "other": st.other,
            "disconnects": st.disconnects,
            "close_codes": dict(st.close_codes),
            "open": sum(1 for c in self.clients if not c.closed),
            "cpu": _cpu(),
        }
        if sent is not None:
            exp_total = rec_total = short = excess = missing = short_conns = 0
            groups: dict[int, list[int]] = {}
            for spec, client, base in zip(self.specs, self.clients, self.base, strict=True):
                exp = 0
                for v in spec.vehicles:
                    exp += sent.get(v, 0)
                rec = client.updates - base
                exp_total += exp
                rec_total += rec
                if rec < exp:
                    short += exp - rec
                    short_conns += 1
                    if rec == 0:
                        missing += 1
                elif rec > exp:
                    excess += rec - exp
                g = groups.setdefault(spec.group, [0, 0])
                g[0] += exp
                g[1] += rec
            out.update(
                expected=exp_total,
                received=rec_total,
                short=short,
                short_conns=short_conns,
                missing_conns=missing,
                excess=excess,
                groups=groups,
            )
        return out

    async def close(self) -> None:
        for c in self.clients:
            t = c.transport
            if t is not None and not c.closed:
                with contextlib.suppress(Exception):
                    t.disconnect(graceful=False)
        await asyncio.sleep(0.2)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[Any] = asyncio.Queue()

        def reader() -> None:
            # A blocking reader thread: large pickles arrive in several reads, which a
            # non-blocking add_reader callback would tear apart.
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = ("close",)
                loop.call_soon_threadsafe(commands.put_nowait, msg)
                if msg[0] == "close":
                    return

        threading.Thread(target=reader, name="commands", daemon=True).start()
        while True:
            cmd = await commands.get()
            name = cmd[0]
            try:
                if name == "connect":
                    reply: Any = await self.connect(*cmd[1:])
                elif name == "reset":
                    reply = self.reset()
                elif name == "stats":
                    reply = self.stats(cmd[1])
                elif name == "measure":
                    self.st.measure = bool(cmd[1])
                    reply = True
                elif name == "close":
                    await self.close()
                    with contextlib.suppress(Exception):
                        self.conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {name!r}")
                self.conn.send(("ok", reply))
            except Exception as exc:
                self.conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _child_main(conn: Connection, index: int, cpus: set[int] | None) -> None:
    pin_self(cpus)
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    child = _Child(conn, index)
    # Bounded: the parent always ends with "close"; a lost parent closes the pipe (EOF).
    asyncio.run(child.serve())


# ----------------------------------------------------------------------------- parent side


class LoadGenError(RuntimeError):
    pass


class LoadGen:
    """Parent-side handle of the load-generator processes."""

    def __init__(self, procs: int, cpus: set[int] | None) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(max(1, procs)):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(child, i, cpus), daemon=True)
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def _call(self, cmds: list[tuple[Any, ...]], timeout: float) -> list[Any]:
        for pipe, cmd in zip(self.pipes, cmds, strict=True):
            pipe.send(cmd)

        def recv(pipe: Connection) -> Any:
            if not pipe.poll(timeout):
                raise LoadGenError(f"load generator did not answer {cmds[0][0]} in {timeout}s")
            return pipe.recv()

        replies = await asyncio.gather(*(asyncio.to_thread(recv, p) for p in self.pipes))
        out = []
        for status, value in replies:
            if status != "ok":
                raise LoadGenError(value)
            out.append(value)
        return out

    async def connect(
        self,
        specs: list[ConnSpec],
        proto: str,
        *,
        concurrency: int = 64,
        timeout: float = 60.0,
        sample: float = 1.0,
    ) -> dict[str, Any]:
        n = len(self.pipes)
        parts = [specs[i::n] for i in range(n)]
        budget = timeout + len(specs) / 50.0 + 30.0  # generous bound for the whole batch
        t0 = time.monotonic()
        replies = await self._call(
            [("connect", part, proto, concurrency, timeout, sample) for part in parts], budget
        )
        wall = time.monotonic() - t0
        hist = Hist.empty()
        errors: Counter[str] = Counter()
        for r in replies:
            hist.merge(r["setup_hist"])
            errors.update(r["errors"])
        ok = sum(r["ok"] for r in replies)
        elapsed = max((r["elapsed"] for r in replies), default=wall)
        return {
            "ok": ok,
            "failed": sum(r["failed"] for r in replies),
            "errors": dict(errors.most_common(5)),
            "elapsed_s": round(elapsed, 3),
            "rate_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
            "setup_p50_ms": hist.percentile(50),
            "setup_p99_ms": hist.percentile(99),
        }

    async def reset(self) -> float:
        replies = await self._call([("reset",)] * len(self.pipes), 30.0)
        return float(sum(r["cpu"] for r in replies))

    async def measure(self, on: bool) -> None:
        await self._call([("measure", on)] * len(self.pipes), 30.0)

    async def stats(self, sent: dict[str, int] | None = None) -> dict[str, Any]:
        replies = await self._call([("stats", sent)] * len(self.pipes), 60.0)
        hist = Hist.empty()
        agg: dict[str, Any] = {
            k: 0
            for k in (
                "frames",
                "pframes",
                "bytes",
                "updates",
                "other",
                "disconnects",
                "open",
                "expected",
                "received",
                "short",
                "short_conns",
                "missing_conns",
                "excess",
            )
        }
        codes: Counter[int] = Counter()
        groups: dict[int, list[int]] = {}
        cpu = 0.0
        lat_sum = 0.0
        lat_max = 0.0
        for r in replies:
            for k in agg:
                agg[k] += r.get(k, 0)
            counts = [0] * HIST_BINS
            for i, n in r["hist"].items():
                counts[i] = n
            hist.merge(counts)
            lat_sum += r["lat_sum"]
            lat_max = max(lat_max, r["lat_max"])
            codes.update(r["close_codes"])
            cpu += r["cpu"]
            for g, (e, v) in r.get("groups", {}).items():
                acc = groups.setdefault(g, [0, 0])
                acc[0] += e
                acc[1] += v
        hist.total_ms = lat_sum
        hist.max_ms = lat_max
        agg["hist"] = hist
        agg["close_codes"] = dict(codes)
        agg["cpu"] = cpu
        agg["groups"] = groups
        return agg

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._call([("close",)] * len(self.pipes), 30.0)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()
