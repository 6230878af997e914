"""Cross-instance fan-out and shared state: four interfaces, a memory and a Redis backend each.

- `Fanout` (bus/fanout.py): global eventIds, delivery per instance, last positions;
- `Store` (bus/store.py): history streams and saved states, what recovery reads;
- `Presence` (bus/presence.py): the connection registry and instance liveness;
- `Control` (bus/control.py): request/reply between instances.

`Bus` bundles one of each for the runtime; code that needs one part takes only that part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tracker_ws.bus.base import DeliveryHandler, Outgoing
from tracker_ws.bus.control import Control
from tracker_ws.bus.fanout import Fanout
from tracker_ws.bus.presence import Presence
from tracker_ws.bus.store import Store
from tracker_ws.config import Settings


class Closeable(Protocol):
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Bus:
    fanout: Fanout
    store: Store
    presence: Presence
    control: Control
    # The Redis parts' shared client (bus/redis.py RedisLink); None in memory.
    link: Closeable | None = None

    async def close(self) -> None:
        await self.fanout.close()
        if self.link is not None:
            await self.link.close()


def memory_bus(instance_id: str) -> Bus:
    from tracker_ws.bus.memory import (
        MemoryControl,
        MemoryFanout,
        MemoryHistory,
        MemoryPresence,
        MemoryStore,
    )

    history = MemoryHistory()
    return Bus(
        fanout=MemoryFanout(instance_id, history),
        store=MemoryStore(history),
        presence=MemoryPresence(instance_id),
        control=MemoryControl(instance_id),
    )


def redis_bus(
    url: str, instance_id: str, *, max_connections: int = 100, read_concurrency: int = 16
) -> Bus:
    """The four Redis parts over one client (`redis://…`, `rediss://…`, `unix://…` or
    `redis+cluster://host:port[,host:port…]`)."""
    from tracker_ws.bus.redis import (
        RedisControl,
        RedisFanout,
        RedisLink,
        RedisPresence,
        RedisStore,
    )

    link = RedisLink(url, max_connections=max_connections, read_concurrency=read_concurrency)
    return Bus(
        fanout=RedisFanout(link, instance_id),
        store=RedisStore(link),
        presence=RedisPresence(link, instance_id),
        control=RedisControl(link, instance_id),
        link=link,
    )


def make_bus(settings: Settings) -> Bus:
    """The backend named by TRACKER_WS_REDIS_URL."""
    if settings.uses_redis:
        return redis_bus(
            settings.redis_url,
            settings.instance_id,
            max_connections=settings.redis_max_connections,
            read_concurrency=settings.redis_read_concurrency,
        )
    return memory_bus(settings.instance_id)


__all__ = [
    "Bus",
    "Control",
    "DeliveryHandler",
    "Fanout",
    "Outgoing",
    "Presence",
    "Store",
    "make_bus",
    "memory_bus",
    "redis_bus",
]
