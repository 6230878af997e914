"""Cross-instance fan-out and shared state: one interface, a memory and a Redis backend."""

from __future__ import annotations

from tracker_ws.bus.base import Bus, DeliveryHandler, Outgoing
from tracker_ws.config import Settings


def make_bus(settings: Settings) -> Bus:
    """The backend named by TRACKER_WS_REDIS_URL."""
    if settings.uses_redis:
        from tracker_ws.bus.redis import RedisBus

        return RedisBus(
            settings.redis_url,
            settings.instance_id,
            max_connections=settings.redis_max_connections,
            read_concurrency=settings.redis_read_concurrency,
        )
    from tracker_ws.bus.memory import MemoryBus

    return MemoryBus(settings.instance_id)


__all__ = ["Bus", "DeliveryHandler", "Outgoing", "make_bus"]
