"""A throw-away Redis Cluster on loopback for tests and `redis+cluster://` trials.

`start_redis_cluster()` starts N `redis-server --cluster-enabled yes` processes (free client
and cluster-bus ports, own data directories, no RDB, no AOF), gives each master an equal
range of the 16384 slots (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and returns once
every node reports `cluster_state:ok` and knows all the others. Replicas are not started:
the tests that use it fail workers over, not Redis nodes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws_dev.processes import ManagedProcess, free_port
from tracker_ws_dev.redis_server import redis_server_binary, throwaway_argv

SLOTS = 16384


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout
    )


class ClusterNodeServer:
    """One `redis-server --cluster-enabled yes` on 127.0.0.1."""

    def __init__(self, port: int, bus_port: int, log_dir: Path, binary: str) -> None:
        self.port = port
        self.bus_port = bus_port
        self.data_dir = log_dir / f"redis-cluster-{port}-data"
        self.log_path = log_dir / f"redis-cluster-{port}.log"
        self.binary = binary
        self._process: ManagedProcess | None = None

    def start(self) -> None:
        argv = throwaway_argv(
            self.binary,
            self.port,
            self.data_dir,
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
        )
        self._process = ManagedProcess(
            argv, log_path=self.log_path, name=f"redis-cluster:{self.port}"
        )

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError(f"cluster node on port {self.port} was never started")
        return self._process

    def answers(self) -> bool:
        client = _client(self.port)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 10) -> None:
        if self._process is not None:
            self._process.terminate(timeout)


class LocalRedisCluster:
    """N masters, no replicas; `url` is what TRACKER_WS_REDIS_URL takes."""

    def __init__(self, nodes: list[ClusterNodeServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def flushall(self) -> None:
        """Empty every master (between tests; the slots stay assigned)."""
        for node in self.nodes:
            client = _client(node.port, 5.0)
            try:
                client.flushall()
            finally:
                client.close()

    def _join(self) -> None:
        masters = len(self.nodes)
        for i, node in enumerate(self.nodes):
            first, last = i * SLOTS // masters, (i + 1) * SLOTS // masters - 1
            client = _client(node.port, 5.0)
            try:
                client.cluster("ADDSLOTSRANGE", first, last)
                if i > 0:  # the bus port too: it is not the default port + 10000
                    first_node = self.nodes[0]
                    client.cluster("MEET", "127.0.0.1", first_node.port, first_node.bus_port)
            finally:
                client.close()

    def healthy(self) -> bool:
        """Every node says cluster_state:ok and knows all the others."""
        for node in self.nodes:
            client = _client(node.port)
            try:
                info = client.cluster("INFO")
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
            if info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def wait_healthy(self, timeout: float) -> None:
        _poll(self.healthy, timeout, "cluster_state:ok on every node", self.nodes)

    def stop(self, timeout: float = 10) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalRedisCluster {self.url}>"


def _poll(
    ready: Callable[[], bool], timeout: float, what: str, nodes: list[ClusterNodeServer]
) -> None:
    """Poll `ready()` until true; a node that exits or the deadline fails with its log."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not ready():
        for node in nodes:
            if not node.process.alive():
                raise BackendUnavailable(node.process.failure_message(f"exited waiting for {what}"))
        if time.monotonic() >= deadline:
            raise BackendUnavailable(
                nodes[0].process.failure_message(f"no {what} after {timeout:g}s")
            )
        time.sleep(delay)  # polling a server: there is nothing to await
        delay = min(delay * 1.5, 0.2)


def start_redis_cluster(
    *, log_dir: Path, masters: int = 3, timeout: float = 30.0
) -> LocalRedisCluster:
    """Start `masters` cluster nodes on free ports, join them, wait for cluster_state:ok."""
    binary = redis_server_binary()
    log_dir.mkdir(parents=True, exist_ok=True)
    nodes = [ClusterNodeServer(free_port(), free_port(), log_dir, binary) for _ in range(masters)]
    cluster = LocalRedisCluster(nodes)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            _poll(node.answers, timeout, f"PING on port {node.port}", [node])
        cluster._join()
        cluster.wait_healthy(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
