"""The connection registry (seed §4) and instance liveness.

Registry: `ws:conn:user:{userId}` maps connId → "{instanceId}:{connectedAt}:{lastSeen}", and
each instance keeps the list of its own connections so a survivor can remove them when it
dies. Liveness: a key with a TTL per instance and the set of instances ever announced; one
whose key expired is "dead" until a survivor cleaned it up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from tracker_ws.bus.base import ConnectionEntry


class Presence(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    # ------------------------------------------------------------ connection registry
    @abstractmethod
    async def register_connections(self, entries: Sequence[ConnectionEntry]) -> None: ...

    async def register_connection(self, entry: ConnectionEntry) -> None:
        await self.register_connections([entry])

    @abstractmethod
    async def apply_writes(
        self, registers: Sequence[ConnectionEntry], unregisters: Sequence[tuple[str, str]]
    ) -> None:
        """Registrations and (connId, userId) removals in one round trip (bus/writeback.py)."""

    async def unregister_connection(self, conn_id: str, user_id: str) -> None:
        await self.apply_writes([], [(conn_id, user_id)])

    @abstractmethod
    async def touch_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        """Refresh lastSeen of many connections in one round trip."""

    @abstractmethod
    async def user_connections(self, user_id: str) -> list[ConnectionEntry]: ...

    # ------------------------------------------------------------ instance liveness
    @abstractmethod
    async def is_registered(self) -> bool:
        """Whether the cluster still lists this instance (false after Redis lost its data,
        or after survivors took this instance for dead)."""

    @abstractmethod
    async def heartbeat(self, ttl_s: float) -> None:
        """Announce this instance alive for `ttl_s` seconds."""

    @abstractmethod
    async def instances(self) -> tuple[list[str], list[str]]:
        """(live, dead) instance ids, sorted; dead ones still have registry entries to clean."""

    @abstractmethod
    async def cleanup_instance(self, instance_id: str) -> int:
        """Remove a dead instance's registry entries; returns how many connections it had.
        Returns -1 when another instance is already cleaning it up."""

    @abstractmethod
    async def deregister_instance(self) -> None:
        """Graceful leave: this instance's registry entries and liveness go now."""
