"""Settings from the environment (ARCHITECTURE §6). One frozen object, read once at start."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from tracker_ws.domain.errors import ConfigError

# The documented development secret. Never use it in production: set TRACKER_WS_JWT_SECRET
# or TRACKER_WS_JWT_PUBLIC_KEY.
DEV_JWT_SECRET = "tracker-ws-development-secret-change-me"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _default_instance_id() -> str:
    return f"ws-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "memory://"
    port: int = 8090
    host: str = "0.0.0.0"
    instance_id: str = field(default_factory=_default_instance_id)
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None  # PEM; when set, RS256/ES256 tokens are verified with it
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    partitions: int = 12  # gps-events partitions (seed §5)
    app_id: str = "websocket-service-broadcast"  # the consumer group (seed §5)
    # Delivery engine
    flush_window_ms: int = 50
    queue_limit: int = 1000  # outbound frames per connection before degrading
    max_frame_bytes: int = 64 * 1024
    rate_per_second: float = 10.0
    rate_burst: int = 20
    heartbeat_timeout_s: float = 75.0
    server_ping_interval_s: float = 30.0
    # Vehicle status thresholds (domain/status.py)
    offline_after_s: float = 600.0
    # Recovery and shutdown
    state_ttl_s: float = 300.0  # seed §4: ws:state TTL, the reconnect window
    drain_rate: float = 500.0  # connections closed per second on shutdown
    drain_timeout_s: float = 10.0  # time to flush queues on shutdown
    data_dir: str = ".dev/faust"
    fetch_max_wait_ms: int = 50  # consumer long-poll (transport.py)
    stall_after_s: float = 20.0  # input partition with waiting records and no progress
    # issue 10: reconnect storm / getState herd
    redis_max_connections: int = 100  # Redis pool size; callers beyond it wait for a connection
    redis_read_concurrency: int = 16  # concurrent recovery/getState reads (the rest queue)
    # issue 10: broadcast fan-out
    max_broadcast_targets: int = 1000  # targetCompanyIds of one alert or broadcast

    @property
    def uses_redis(self) -> bool:
        return self.redis_url.startswith(("redis://", "rediss://", "unix://"))

    @classmethod
    def from_env(cls) -> Settings:
        public_key = os.environ.get("TRACKER_WS_JWT_PUBLIC_KEY") or None
        if public_key and os.path.isfile(public_key):
            with open(public_key, encoding="utf-8") as fh:
                public_key = fh.read()
        algorithms: tuple[str, ...] = ("HS256",)
        if public_key:
            algorithms = ("RS256", "ES256")
        redis_url = os.environ.get("TRACKER_WS_REDIS_URL", "memory://")
        if not redis_url.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ConfigError(
                "TRACKER_WS_REDIS_URL must be redis://…, rediss://… or memory://, "
                f"got {redis_url!r}"
            )
        broker = os.environ.get("TRACKER_WS_KAFKA_BROKER", "kafka://127.0.0.1:9092")
        if not broker.startswith("kafka://"):
            raise ConfigError(f"TRACKER_WS_KAFKA_BROKER must be kafka://host:port, got {broker!r}")
        return cls(
            kafka_broker=broker,
            redis_url=redis_url,
            port=_env_int("TRACKER_WS_PORT", 8090),
            host=os.environ.get("TRACKER_WS_HOST", "0.0.0.0"),
            instance_id=os.environ.get("TRACKER_WS_INSTANCE_ID") or _default_instance_id(),
            jwt_secret=os.environ.get("TRACKER_WS_JWT_SECRET") or DEV_JWT_SECRET,
            jwt_public_key=public_key,
            jwt_algorithms=algorithms,
            partitions=_env_int("TRACKER_WS_PARTITIONS", 12),
            app_id=os.environ.get("TRACKER_WS_APP_ID", "websocket-service-broadcast"),
            flush_window_ms=_env_int("TRACKER_WS_FLUSH_WINDOW_MS", 50),
            queue_limit=_env_int("TRACKER_WS_QUEUE_LIMIT", 1000),
            max_frame_bytes=_env_int("TRACKER_WS_MAX_FRAME_BYTES", 64 * 1024),
            rate_per_second=_env_float("TRACKER_WS_RATE_PER_SECOND", 10.0),
            rate_burst=_env_int("TRACKER_WS_RATE_BURST", 20),
            heartbeat_timeout_s=_env_float("TRACKER_WS_HEARTBEAT_TIMEOUT", 75.0),
            server_ping_interval_s=_env_float("TRACKER_WS_PING_INTERVAL", 30.0),
            offline_after_s=_env_float("TRACKER_WS_OFFLINE_AFTER", 600.0),
            state_ttl_s=_env_float("TRACKER_WS_STATE_TTL", 300.0),
            drain_rate=_env_float("TRACKER_WS_DRAIN_RATE", 500.0),
            drain_timeout_s=_env_float("TRACKER_WS_DRAIN_TIMEOUT", 10.0),
            data_dir=os.environ.get("TRACKER_WS_DATA_DIR", ".dev/faust"),
            fetch_max_wait_ms=_env_int("TRACKER_WS_FETCH_MAX_WAIT_MS", 50),
            stall_after_s=_env_float("TRACKER_WS_STALL_AFTER_S", 20.0),
            # issue 10: reconnect storm / getState herd
            redis_max_connections=_env_int("TRACKER_WS_REDIS_MAX_CONNECTIONS", 100),
            redis_read_concurrency=_env_int("TRACKER_WS_REDIS_READ_CONCURRENCY", 16),
            # issue 10: broadcast fan-out
            max_broadcast_targets=_env_int("TRACKER_WS_MAX_BROADCAST_TARGETS", 1000),
        )
