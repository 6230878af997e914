"""The processes of one benchmark run: broker, Redis, tracker workers, baseline servers.

Everything is started through `tracker_ws_dev` on free loopback ports, pinned (servers on
the server CPU, everything else on the load CPUs) and stopped by `Stack.close()`, which also
checks that no process group it started is left alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import ProcWatch, http_json, pin, progress
from bench.fleet import TOPIC_CONFIGS, TOPICS
from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.stack import ManagedProcess

# Runs `python -m tracker_ws` from a chosen source tree (default: this checkout). sys.path[0]
# would otherwise be the current directory, which wins over PYTHONPATH.
_SHIM = (
    "import sys; src = sys.argv.pop(1); uv = sys.argv.pop(1); src and sys.path.insert(0, src); "
    "uv == '1' and __import__('uvloop').install(); "
    "from tracker_ws.__main__ import main; sys.exit(main())"
)


class BenchWorker(devstack.Worker):
    """devstack's worker, optionally run from another source tree (`--tracker-src`)."""

    def __init__(self, *args: Any, src: str = "", uvloop: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.src = src
        self.uvloop = uvloop

    def _argv(self) -> list[str]:
        # `--loglevel info` as devstack and production run it. Not `warn`: at WARN and above
        # Faust's worker attaches its terminal spinner and sets the root logger to DEBUG, so
        # every aiokafka debug call builds a LogRecord (measured: 5–7 % of the worker's CPU).
        uv = "1" if self.uvloop else "0"
        return [self.binary, "-c", _SHIM, self.src, uv, "worker", "--loglevel", "info"]


class Baseline:
    """A baseline server process (bench/baselines.py) with a /health endpoint."""

    def __init__(self, kind: str, port: int, proc: ManagedProcess) -> None:
        self.kind = kind
        self.port = port
        self.process = proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        if self.kind == "socketio":
            return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self) -> dict[str, Any]:
        return http_json(f"{self.url}/health")

    def stop(self) -> None:
        self.process.terminate(timeout=10)


class Stack:
    def __init__(
        self,
        log_dir: Path,
        server_cpus: set[int] | None,
        load_cpus: set[int] | None,
        tracker_src: str = "",
        worker_uvloop: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.worker_uvloop = worker_uvloop
        self.server_cpus = server_cpus
        self.load_cpus = load_cpus
        self.tracker_src = tracker_src
        self.broker: devstack.Broker | None = None
        self.redis: devstack.RedisServer | None = None
        self.workers: list[BenchWorker] = []
        self.baselines: list[Baseline] = []
        self._groups: list[ManagedProcess] = []

    # ------------------------------------------------------------------ backends
    def start_backends(self) -> None:
        self.broker = devstack.start_broker(log_dir=self.log_dir)
        self._groups.append(self.broker.process)
        pin(self.broker.process.pid, self.load_cpus)
        self.redis = devstack.start_redis(log_dir=self.log_dir)
        self._groups.append(self.redis.process)
        pin(self.redis.process.pid, self.load_cpus)
        asyncio.run(devstack.create_topics(self.broker.url, TOPICS, configs=TOPIC_CONFIGS))

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def backend_pids(self) -> list[int]:
        return [p.process.pid for p in (self.broker, self.redis) if p is not None]

    # ------------------------------------------------------------------ servers
    def start_worker(
        self, env: Mapping[str, str] | None = None, instance_id: str | None = None
    ) -> BenchWorker:
        assert self.broker is not None and self.redis is not None
        last: Exception | None = None
        for _ in range(3):
            port = devstack.free_port()
            w = BenchWorker(
                port,
                self.log_dir,
                broker_url=self.broker.url,
                redis_url=self.redis.url,
                instance_id=instance_id,
                env=dict(env or {}),
                src=self.tracker_src,
                uvloop=self.worker_uvloop,
            )
            try:
                w.start(90.0)
            except BackendUnavailable as exc:
                last = exc
                with contextlib.suppress(Exception):
                    w.stop()
                continue
            self._groups.append(w.process)
            pin(w.process.pid, self.server_cpus)
            self.workers.append(w)
            return w
        raise RuntimeError(f"worker did not start: {last}")

    def start_baseline(self, kind: str, *, uvloop: bool) -> Baseline:
        assert self.broker is not None and self.redis is not None
        port = devstack.free_port()
        argv = [
            sys.executable,
            "-m",
            "bench.baselines",
            kind,
            "--port",
            str(port),
            "--broker",
            self.broker.bootstrap,
            "--redis",
            self.redis.url,
        ]
        if uvloop:
            argv.append("--uvloop")
        proc = ManagedProcess(
            argv,
            log_path=self.log_dir / f"baseline-{kind}-{port}.log",
            name=f"baseline-{kind}",
            env={"PYTHONUNBUFFERED": "1"},
        )
        self._groups.append(proc)
        pin(proc.pid, self.server_cpus)
        b = Baseline(kind, port, proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(proc.failure_message("baseline exited before ready"))
            if b.health().get("status") == "healthy":
                pin(proc.pid, self.server_cpus)  # threads started meanwhile (Kafka, Redis)
                self.baselines.append(b)
                return b
            time.sleep(0.2)
        proc.terminate()
        raise RuntimeError(proc.failure_message("baseline not healthy after 60 s"))

    # ------------------------------------------------------------------ teardown
    def close(self) -> list[str]:
        """Stop everything (servers first); returns the names of anything left alive."""
        for b in self.baselines:
            with contextlib.suppress(Exception):
                b.stop()
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(timeout=5)  # SIGTERM, then SIGKILL: a graceful Faust leave is slow
        for s in (self.redis, self.broker):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.stop()
        leftovers = [g.name for g in self._groups if g.group_alive()]
        for g in self._groups:
            if g.group_alive():
                with contextlib.suppress(Exception):
                    g.kill()
        if leftovers:
            progress(f"WARNING: had to kill leftover processes: {leftovers}")
        return leftovers

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server:
    """What a scenario needs of the system under test, whichever it is."""

    def __init__(self, kind: str, handles: list[Any]) -> None:
        self.kind = kind  # tracker | picows | socketio
        self.handles = handles
        self.watch = ProcWatch([h.process.pid for h in handles])

    @property
    def proto(self) -> str:
        return "socketio" if self.kind == "socketio" else "tracker"

    @property
    def ws_urls(self) -> list[str]:
        return [h.ws_url for h in self.handles]

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self.handles]

    def registry_size(self) -> int:
        sizes = [int(h.health().get("registryVehicles", 0) or 0) for h in self.handles]
        return min(sizes) if sizes else 0

    def wait_registry(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registry_size() >= n:
                return
            time.sleep(0.25)
        raise TimeoutError(f"{self.kind}: registry did not reach {n} vehicles in {timeout:g}s")

    def connections(self) -> int:
        return sum(int(h.health().get("connections", 0) or 0) for h in self.handles)
