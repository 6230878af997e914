"""Settings from the environment (ARCHITECTURE §6): one table of variables, one frozen object.

Every variable is declared once in `VARIABLES` with its type, default, bounds and meaning; the
parser, `python -m tracker_ws config` and the README table are all built from it. A bad value
raises ConfigError naming the variable; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tracker_ws.domain.errors import ConfigError

# The documented development secret. A worker accepts it only in development mode
# (TRACKER_WS_DEV_MODE=1, set by `python -m tracker_ws dev` and the test fixtures).
DEV_JWT_SECRET = "tracker-ws-development-secret-change-me"

_NAME = re.compile(r"^[A-Za-z0-9._:@-]+$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _default_instance_id() -> str:
    return f"ws-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Var:
    """One environment variable: how to read it, its default and what it means."""

    env: str
    field: str
    kind: str  # int | float | str | bool | url | name | pem
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    schemes: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()  # kind "choice": the values allowed
    shown_default: str | None = None  # for defaults computed at start (hostname, pid)

    def parse(self, raw: str) -> Any:
        """The value of `raw`, or ConfigError("<ENV> …") in one line."""
        try:
            value = _PARSERS[self.kind](self, raw)
        except ConfigError:
            raise
        except (ValueError, OverflowError) as exc:
            raise ConfigError(f"{self.env} {exc}, got {_shorten(raw)}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise ConfigError(f"{self.env} must be ≥ {_num(self.min)}, got {_shorten(raw)}")
            if self.max is not None and value > self.max:
                raise ConfigError(f"{self.env} must be ≤ {_num(self.max)}, got {_shorten(raw)}")
        return value

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "(unset)"
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        return _num(self.default) if isinstance(self.default, float) else str(self.default)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _shorten(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "…")


def _parse_int(var: Var, raw: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,18}", text):
        raise ValueError("must be an integer")
    return int(text)


def _parse_float(var: Var, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _parse_str(var: Var, raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


def _parse_name(var: Var, raw: str) -> str:
    if not _NAME.fullmatch(raw):
        raise ValueError("must be letters, digits and . _ : @ - only")
    return raw


def _parse_bool(var: Var, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


def _parse_choice(var: Var, raw: str) -> str:
    text = raw.strip().lower()
    if text not in var.choices:
        raise ValueError(f"must be one of {', '.join(var.choices)}")
    return text


def _parse_url(var: Var, raw: str) -> str:
    rest = raw.split("://", 1)[-1]
    if not raw.startswith(var.schemes) or (not rest and raw != "memory://"):
        wanted = ", ".join(f"{s}…" for s in var.schemes)
        raise ConfigError(f"{var.env} must be {wanted}, got {_shorten(raw)}")
    if raw.startswith(REDIS_CLUSTER_SCHEME):
        try:
            cluster_nodes(raw)
        except ValueError as exc:
            raise ConfigError(f"{var.env}: {exc}, got {_shorten(raw)}") from None
    return raw


REDIS_CLUSTER_SCHEME = "redis+cluster://"


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The seed nodes of `redis+cluster://host:port[,host:port…]`; ValueError saying what is
    wrong (the client finds the other nodes itself)."""
    rest = url.removeprefix(REDIS_CLUSTER_SCHEME)
    if not rest or any(c in rest for c in "/?#@"):
        raise ValueError(
            "a Redis Cluster URL is redis+cluster://host:port[,host:port…] (no database, "
            "path or options)"
        )
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:7000
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {part!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def _parse_pem(var: Var, raw: str) -> str:
    """PEM text, or a path to a file holding it."""
    text = raw
    if "-----BEGIN" not in raw:
        try:
            with open(raw, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{var.env}: cannot read {_shorten(raw)}: {reason}") from None
    if "-----BEGIN" not in text:
        raise ConfigError(f"{var.env}: not a PEM public key (no -----BEGIN line)")
    return text


_PARSERS: dict[str, Callable[[Var, str], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "str": _parse_str,
    "name": _parse_name,
    "bool": _parse_bool,
    "url": _parse_url,
    "choice": _parse_choice,
    "pem": _parse_pem,
}

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", REDIS_CLUSTER_SCHEME, "memory://")

# The one list of settings. Order is the order of `config` and the README table.
# fmt: off
VARIABLES: tuple[Var, ...] = (
    Var("TRACKER_WS_KAFKA_BROKER", "kafka_broker", "url", "kafka://127.0.0.1:9092",
        "the Kafka broker", schemes=("kafka://",)),
    Var("TRACKER_WS_REDIS_URL", "redis_url", "url", "memory://",
        "Redis for cross-instance delivery, history and state; "
        "`redis+cluster://host:port[,host:port…]` a Redis Cluster (7+); `memory://` runs one "
        "instance alone", schemes=_REDIS_SCHEMES),
    Var("TRACKER_WS_REDIS_MAX_CONNECTIONS", "redis_max_connections", "int", 100,
        "Redis connection pool size; callers beyond it wait for a free connection", min=4,
        max=100_000),
    Var("TRACKER_WS_REDIS_READ_CONCURRENCY", "redis_read_concurrency", "int", 16,
        "recovery and getState reads running at once (the rest queue; at most half the pool)",
        min=1, max=10_000),
    Var("TRACKER_WS_MAX_BROADCAST_TARGETS", "max_broadcast_targets", "int", 1000,
        "most targetCompanyIds one admin broadcast or system-alerts event may name (400 / "
        "counted skip above)", min=1, max=1_000_000),
    Var("TRACKER_WS_PORT", "port", "int", 8090,
        "public HTTP/WebSocket port", min=1, max=65535),
    Var("TRACKER_WS_HOST", "host", "str", "0.0.0.0",
        "address the public port binds to"),
    Var("TRACKER_WS_INSTANCE_ID", "instance_id", "name", None,
        "this instance's id (Redis channels, metrics)", shown_default="ws-<hostname>-<pid>"),
    Var("TRACKER_WS_DEV_MODE", "dev_mode", "bool", False,
        "development mode: accept the documented development JWT secret (set by `dev` and the"
        " test fixtures; never in production)"),
    Var("TRACKER_WS_JWT_SECRET", "jwt_secret", "str", DEV_JWT_SECRET,
        "HS256 secret; required outside development mode unless a public key is set",
        shown_default="(unset: the development secret, dev mode only)"),
    Var("TRACKER_WS_JWT_PUBLIC_KEY", "jwt_public_key", "pem", None,
        "PEM public key (text or file path): RS256/ES256 tokens instead of HS256"),
    Var("TRACKER_WS_PARTITIONS", "partitions", "int", 12,
        "partitions of gps-events and the co-partitioned topics", min=1, max=10000),
    Var("TRACKER_WS_APP_ID", "app_id", "name", "websocket-service-broadcast",
        "Kafka consumer group and Faust app id"),
    Var("TRACKER_WS_FLUSH_WINDOW_MS", "flush_window_ms", "int", 25,
        "positions arriving within this window are coalesced into one positionBatch",
        min=0, max=60000),
    Var("TRACKER_WS_QUEUE_LIMIT", "queue_limit", "int", 1000,
        "outbound frames per connection before positions degrade and 4009 closes", min=1),
    Var("TRACKER_WS_MAX_FRAME_BYTES", "max_frame_bytes", "int", 64 * 1024,
        "largest inbound frame accepted; larger closes 1009", min=256, max=16777216),
    Var("TRACKER_WS_MAX_SUBSCRIPTIONS", "max_subscriptions", "int", 1000,
        "routing keys one connection may subscribe (byIds counts each id); more is refused "
        "with SUBSCRIPTION_LIMIT", min=1, max=1_000_000),
    Var("TRACKER_WS_RATE_PER_SECOND", "rate_per_second", "float", 10.0,
        "inbound messages per second per connection (token bucket)", min=0.01),
    Var("TRACKER_WS_RATE_BURST", "rate_burst", "int", 20,
        "inbound burst per connection", min=1),
    Var("TRACKER_WS_HEARTBEAT_TIMEOUT", "heartbeat_timeout_s", "float", 75.0,
        "seconds of client silence before the connection is closed", min=1),
    Var("TRACKER_WS_PING_INTERVAL", "server_ping_interval_s", "float", 30.0,
        "seconds between server pings to a quiet client", min=0.1),
    Var("TRACKER_WS_OFFLINE_AFTER", "offline_after_s", "float", 600.0,
        "seconds without a fix before a vehicle is offline", min=1),
    Var("TRACKER_WS_STATE_TTL", "state_ttl_s", "float", 300.0,
        "seconds a disconnected client's state is kept for recovery", min=1),
    Var("TRACKER_WS_DRAIN_RATE", "drain_rate", "float", 500.0,
        "connections closed per second on shutdown", min=1),
    Var("TRACKER_WS_DRAIN_TIMEOUT", "drain_timeout_s", "float", 10.0,
        "seconds to flush queues on shutdown", min=0, max=3600),
    Var("TRACKER_WS_DATA_DIR", "data_dir", "str", ".dev/faust",
        "Faust's data directory"),
    Var("TRACKER_WS_FETCH_MAX_WAIT_MS", "fetch_max_wait_ms", "int", 20,
        "consumer fetch long-poll (`tracker_ws/kafka/transport.py`); the embedded broker holds "
        "a fetch for the whole wait, adding up to it to every delivery; Apache Kafka answers "
        "as soon as data arrives: raise it there (idle polling costs CPU: bench S1, one worker "
        "holding 10,000 idle connections, 14 % of a core at 10 ms, 5 % at 50 ms)",
        min=0, max=60000),
    Var("TRACKER_WS_TRUST_LOG_END", "trust_log_end", "bool", False,
        "the broker's log end offsets are right (Apache Kafka): table recovery skips reading "
        "changelogs' last batches until one is seen short (`tracker_ws/kafka/`)"),
    Var("TRACKER_WS_KAFKA_SESSION_TIMEOUT", "kafka_session_timeout_s", "float", 2.0,
        "seconds without a heartbeat before the broker drops an instance from the consumer group"
        " (kill -9 failover); a real Kafka refuses less than its group.min.session.timeout.ms "
        "(6 s unless lowered)", min=0.5, max=30),
    Var("TRACKER_WS_KAFKA_HEARTBEAT_INTERVAL", "kafka_heartbeat_interval_s", "float", 0.1,
        "seconds between consumer-group heartbeats (how soon a rebalance is noticed); below a "
        "third of the session timeout", min=0.05, max=600),
    Var("TRACKER_WS_KAFKA_REBALANCE_TIMEOUT", "kafka_rebalance_timeout_s", "float", 20.0,
        "seconds a real Kafka waits for every member to rejoin during a rebalance", min=1,
        max=300),
    Var("TRACKER_WS_KAFKA_REJOIN_STAGGER", "kafka_rejoin_stagger_s", "float", 0.15,
        "seconds a member that did not lead the last rebalance waits before rejoining, so the "
        "leader's assignment reaches the broker first (the embedded broker answers a follower "
        "that asks before it a second later); 0 for Apache Kafka (`tracker_ws/kafka/rejoin.py`)",
        min=0, max=0.9),
    Var("TRACKER_WS_STANDBY_REPLICAS", "standby_replicas", "int", 0,
        "standby copies of each table partition on other instances (Faust's "
        "table_standby_replicas); with the in-memory tables they do not shorten a failover "
        "(README, Failover)", min=0, max=10),
    Var("TRACKER_WS_UVLOOP", "uvloop", "bool", True,
        "run the worker on uvloop where it is installed (a dependency on Linux and macOS; "
        "`tracker_ws/eventloop.py`); 0 = asyncio's own loop"),
    Var("TRACKER_WS_LOG_FORMAT", "log_format", "choice", "text",
        "the worker's log lines: text, or json (one object per line: time, level, logger, "
        "message, instance, exception) for log collectors", choices=("text", "json")),
    Var("TRACKER_WS_GC_GEN0", "gc_gen0", "int", 50000,
        "allocations between two young-generation garbage collections in the worker "
        "(`tracker_ws/gctune.py`); 0 keeps Python's default (700)", min=0, max=10_000_000),
    Var("TRACKER_WS_STALL_AFTER_S", "stall_after_s", "float", 20.0,
        "seconds an input partition may hold waiting records without progress before it is "
        "logged and listed in `/health` as `stalledPartitions`", min=1),
    Var("TRACKER_WS_INTERNAL_HOST", "internal_host", "str", "127.0.0.1",
        "address of the internal listener (Faust's table/router views and stats)"),
    Var("TRACKER_WS_INTERNAL_PORT", "internal_port", "int", 8092,
        "port of the internal listener", min=1, max=65535),
    Var("TRACKER_WS_ADVERTISED_HOST", "advertised_host", "name", None,
        "host in the URL this instance advertises to the others (Faust's web_host)",
        shown_default="<hostname>"),
    Var("TRACKER_WS_REQUEST_TIMEOUT", "request_timeout_s", "float", 5.0,
        "seconds from accepting a connection to a complete request head (and body); later "
        "closes it", min=0.1, max=3600),
    Var("TRACKER_WS_KEEPALIVE_TIMEOUT", "keepalive_timeout_s", "float", 15.0,
        "seconds an idle HTTP keep-alive connection is kept open", min=0.1, max=3600),
    Var("TRACKER_WS_TLS_CERT", "tls_cert", "str", None,
        "PEM certificate (chain) file; with TRACKER_WS_TLS_KEY turns on the TLS (WSS) "
        "listener"),
    Var("TRACKER_WS_TLS_KEY", "tls_key", "str", None,
        "PEM private key file of the certificate"),
    Var("TRACKER_WS_TLS_PORT", "tls_port", "int", 8091,
        "port of the TLS (WSS) listener", min=1, max=65535),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "memory://"
    port: int = 8090
    host: str = "0.0.0.0"
    instance_id: str = field(default_factory=_default_instance_id)
    dev_mode: bool = False
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None  # PEM; when set, RS256/ES256 tokens are verified with it
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    partitions: int = 12  # gps-events partitions (seed §5)
    app_id: str = "websocket-service-broadcast"  # the consumer group (seed §5)
    # Delivery engine
    flush_window_ms: int = 25
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
    fetch_max_wait_ms: int = 20  # consumer long-poll (transport.py)
    stall_after_s: float = 20.0  # input partition with waiting records and no progress
    trust_log_end: bool = False  # skip reading changelogs' last batches (kafka/)
    # issue 11: consumer group (failover) and table standbys
    kafka_session_timeout_s: float = 2.0
    kafka_heartbeat_interval_s: float = 0.1
    kafka_rebalance_timeout_s: float = 20.0
    kafka_rejoin_stagger_s: float = 0.15
    standby_replicas: int = 0
    uvloop: bool = True  # the worker's event loop (eventloop.py)
    log_format: str = "text"  # text | json (logjson.py)
    gc_gen0: int = 50000  # young-generation GC threshold in the worker (gctune.py)
    # issue 10: web listeners (web/listeners.py)
    internal_host: str = "127.0.0.1"  # Faust's views and stats: loopback unless opened on purpose
    internal_port: int = 8092
    advertised_host: str = field(default_factory=socket.gethostname)  # Faust's web_host
    request_timeout_s: float = 5.0  # accept -> complete request head (and body)
    keepalive_timeout_s: float = 15.0  # idle HTTP connection between requests
    tls_cert: str | None = None  # PEM paths; both set -> WSS/HTTPS listener on tls_port
    tls_key: str | None = None
    tls_port: int = 8091
    # issue 10: subscription cap
    max_subscriptions: int = 1000  # routing keys per connection (byIds counts each id)
    # issue 10: reconnect storm / getState herd
    redis_max_connections: int = 100  # Redis pool size; callers beyond it wait for a connection
    redis_read_concurrency: int = 16  # concurrent recovery/getState reads (the rest queue)
    # issue 10: broadcast fan-out
    max_broadcast_targets: int = 1000  # targetCompanyIds of one alert or broadcast

    @property
    def uses_redis(self) -> bool:
        return self.redis_url.startswith(("redis://", "rediss://", "unix://", REDIS_CLUSTER_SCHEME))

    @property
    def uses_redis_cluster(self) -> bool:
        return self.redis_url.startswith(REDIS_CLUSTER_SCHEME)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.env)
            if raw is None or (raw == "" and var.kind != "bool"):
                continue  # unset (or empty): the field's default
            values[var.field] = var.parse(raw)
        if values.get("jwt_public_key"):
            values["jwt_algorithms"] = ("RS256", "ES256")
        settings = cls(**values)
        settings.check_group_timing()
        return settings

    def check_group_timing(self) -> None:
        """The heartbeat must fit several times into the session timeout, or one late
        heartbeat drops a healthy instance from the group (ConfigError naming both)."""
        if self.kafka_heartbeat_interval_s * 3 > self.kafka_session_timeout_s:
            raise ConfigError(
                f"TRACKER_WS_KAFKA_HEARTBEAT_INTERVAL ({_num(self.kafka_heartbeat_interval_s)}) "
                f"must be at most a third of TRACKER_WS_KAFKA_SESSION_TIMEOUT "
                f"({_num(self.kafka_session_timeout_s)})"
            )

    def auth_problem(self) -> str | None:
        """Why a worker must not start with these token settings, or None.

        Outside development mode the documented secret would let anyone who read the README
        forge tokens (admin ones included), so a real secret or a public key is required."""
        if self.jwt_public_key or self.dev_mode or self.jwt_secret != DEV_JWT_SECRET:
            return None
        return (
            "TRACKER_WS_JWT_SECRET is unset (or the documented development secret): set it, "
            "or TRACKER_WS_JWT_PUBLIC_KEY, before starting a worker "
            "(TRACKER_WS_DEV_MODE=1 allows the development secret on a developer machine)"
        )


def _check_table() -> None:
    """Every variable maps to a field and back; caught by the unit tests and at import."""
    names = {f.name for f in fields(Settings)} - {"jwt_algorithms"}
    declared = [v.field for v in VARIABLES]
    if sorted(declared) != sorted(names):
        raise RuntimeError(f"config table and Settings differ: {set(declared) ^ names}")


_check_table()


def describe_variables(markdown: bool = False) -> str:
    """Every variable with its default and meaning: `config` output and the README table."""
    if markdown:
        rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
        for v in VARIABLES:
            shown = v.default_text()
            shown = shown if shown.startswith("(") else f"`{shown}`"
            rows.append(f"| `{v.env}` | {shown} | {v.help} |")
        return "\n".join(rows)
    width = max(len(v.env) for v in VARIABLES)
    lines = []
    for v in VARIABLES:
        lines.append(f"{v.env:<{width}}  default {v.default_text()}")
        lines.append(f"{'':<{width}}  {v.help}")
    return "\n".join(lines)


def describe_values(settings: Settings) -> str:
    """The effective settings (secrets masked), one per line: `config --check`."""
    lines = []
    for v in VARIABLES:
        value = getattr(settings, v.field)
        if v.field in ("jwt_secret", "jwt_public_key") and value:
            value = "(development secret)" if value == DEV_JWT_SECRET else "(set)"
        lines.append(f"{v.env}={value if value is not None else ''}")
    return "\n".join(lines)
