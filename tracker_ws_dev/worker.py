"""tracker-ws worker processes for the dev stack, multi-instance tests and benchmarks."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracker_ws_dev.processes import ManagedProcess, Server, free_port, start_server

# tracker-ws worker processes (dev mode, multi-instance tests, benchmarks)


def health_status(base_url: str, timeout: float = 1.0) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, JSON body) of GET /health, or None when nothing answers."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return None


class Worker(Server):
    """`python -m tracker_ws worker` on a fixed port; ready when /health says healthy."""

    kind = "worker"
    default_timeout = 60.0

    def __init__(
        self,
        port: int,
        log_dir: Path,
        *,
        broker_url: str,
        redis_url: str,
        instance_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(port, log_dir, sys.executable)
        self.instance_id = instance_id or f"ws-{port}"
        self.log_path = self.log_dir / f"worker-{self.instance_id}.log"
        self.broker_url = broker_url
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        # Faust's views and stats listen apart (web/listeners.py): a free port of their own.
        self.internal_port = int(self.extra_env.get("TRACKER_WS_INTERNAL_PORT") or free_port())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _argv(self) -> list[str]:
        return [self.binary, "-m", "tracker_ws", "worker", "--loglevel", "info"]

    def _env(self) -> dict[str, str]:
        return {
            "TRACKER_WS_KAFKA_BROKER": self.broker_url,
            "TRACKER_WS_REDIS_URL": self.redis_url,
            "TRACKER_WS_PORT": str(self.port),
            "TRACKER_WS_HOST": "127.0.0.1",
            "TRACKER_WS_INSTANCE_ID": self.instance_id,
            "TRACKER_WS_DATA_DIR": str(self.log_dir / "faust-data"),
            # Development stacks (dev, tests, benchmarks) sign tokens with the documented secret.
            "TRACKER_WS_DEV_MODE": "1",
            "TRACKER_WS_INTERNAL_PORT": str(self.internal_port),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _probe(self, proc: ManagedProcess, timeout: float) -> bool:
        # Healthy, and ours: another instance answering on the port must not count.
        got = health_status(self.url, timeout=min(timeout, 1.0))
        ours = self._env()["TRACKER_WS_INSTANCE_ID"]  # as the child got it (extra env included)
        return got is not None and got[0] == 200 and got[1].get("instanceId") == ours

    def health(self) -> dict[str, Any]:
        got = health_status(self.url)
        return got[1] if got else {}


def start_worker(
    *,
    broker_url: str,
    redis_url: str,
    log_dir: Path,
    port: int | None = None,
    instance_id: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Worker:
    def factory(p: int) -> Worker:
        return Worker(
            p,
            log_dir,
            broker_url=broker_url,
            redis_url=redis_url,
            instance_id=instance_id,
            env=env,
        )

    return start_server(factory, port, timeout)
