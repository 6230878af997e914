"""The local stack in one namespace: processes, the embedded broker, a Redis server, worker
processes, and the two production helpers the stack uses (topic creation, the port check)."""

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
