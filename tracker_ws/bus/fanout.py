"""Fan-out: global eventIds, delivery to the instances that want an event, last positions.

`publish` is the heart of ordering (ARCHITECTURE §3): in one atomic step it takes the next
global eventIds for a batch, sends each instance the records it needs on its own delivery
channel, appends replayable events to their history streams (read back through `Store`) and
mirrors last positions. Because the step is atomic and channels are FIFO, every instance
receives events in strictly increasing eventId order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

from tracker_ws.bus.base import DeliveryHandler, Outgoing

# (event type from the channel name, raw JSON)
InputHandler = Callable[[str, bytes], None]


class Fanout(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._input_handler: InputHandler | None = None

    @abstractmethod
    async def start(self, on_deliver: DeliveryHandler) -> None:
        """Connect and start receiving this instance's deliveries (and, on Redis, the
        control messages and input channels that share the subscription)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        """Assign increasing eventIds to `items` and deliver them; returns the ids, 0 for an
        item dropped as a duplicate (its dedupe id was already published) or as a stale fix
        (`fix_ms` not newer than the vehicle's last one)."""

    @abstractmethod
    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """vehicleId → (eventId, payload) of the newest mirrored position."""

    def on_input(self, handler: InputHandler) -> None:
        """Events other services publish on Redis channels `events:{type}` (Redis only).
        Set before `start`."""
        self._input_handler = handler

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers right now."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the delivery subscription is currently live."""

    @property
    def listener_state(self) -> str:
        """For /health: "ok", or why deliveries are not being received right now."""
        return "ok" if self.connected else "disconnected"
