"""Everything one instance holds, wired once and passed to the adapters explicitly."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracker_ws.bus import Bus, make_bus
from tracker_ws.bus.writeback import WriteBack
from tracker_ws.config import Settings
from tracker_ws.domain.geozones import GeozoneState
from tracker_ws.domain.registry import VehicleRegistry
from tracker_ws.metrics import Metrics
from tracker_ws.web.expiry import Expiries
from tracker_ws.web.flusher import Flusher
from tracker_ws.web.hub import Hub
from tracker_ws.web.streams import PositionStreams

if TYPE_CHECKING:
    from tracker_ws.auth import TokenVerifier


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    registry: VehicleRegistry
    geozones: GeozoneState
    hub: Hub
    bus: Bus
    verifier: TokenVerifier
    writeback: WriteBack
    flusher: Flusher
    expiries: Expiries
    started_at: float = field(default_factory=time.time)
    ready: bool = False  # worker joined the group and caught up with the registry
    draining: bool = False
    broker_ok: bool = False
    # Instances whose liveness key expired: never routed to, pruned by the janitor.
    dead_instances: set[str] = field(default_factory=set)
    live_instances: set[str] = field(default_factory=set)
    # gps-events partitions this worker owns now (set by the app; shown in /health).
    assigned_partitions: Callable[[], list[int]] = lambda: []
    # This worker's part of the subscriptions table: "{key}#p{n}" -> instance ids.
    interest_snapshot: Callable[[], dict[str, list[str]]] = lambda: {}
    # Input partitions with records waiting and no progress (consumer_watch), "topic[n]".
    stalled_partitions: list[str] = field(default_factory=list)
    # The consumer's view of its input partitions (consumer_watch.snapshot), for admins.
    consumer_snapshot: Callable[[], Awaitable[dict[str, Any]]] | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        from tracker_ws.auth import TokenVerifier

        metrics = Metrics(settings.instance_id)
        registry = VehicleRegistry()
        geozones = GeozoneState()
        bus = make_bus(settings)
        flusher = Flusher(flush_tick_s(settings), metrics.count_sent)
        streams = PositionStreams(flusher, settings.flush_window_ms / 1000)
        rt = cls(
            settings=settings,
            metrics=metrics,
            registry=registry,
            geozones=geozones,
            hub=Hub(metrics, registry, geozones, streams),
            bus=bus,
            writeback=WriteBack(bus.presence, bus.store, settings.state_ttl_s),
            verifier=TokenVerifier.from_settings(settings),
            flusher=flusher,
            expiries=Expiries(),
        )
        metrics.watch_state(
            lambda: rt.broker_ok,
            lambda: rt.bus.fanout.connected,
            lambda: len(rt.stalled_partitions),
        )
        return rt


def flush_tick_s(settings: Settings) -> float:
    """The Flusher's tick: a tenth of the flush window (a batch waits at most that much
    longer than the window), at least a millisecond."""
    return max(0.001, settings.flush_window_ms / 10_000)
