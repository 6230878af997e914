"""The bus contract both backends pass (tests/integration/test_bus_contract.py).

`publish` is the heart of ordering (ARCHITECTURE §3): in one atomic step it takes the next
global eventIds for a batch, sends each instance the records it needs on its own delivery
channel, and mirrors last positions. Because the step is atomic and channels are FIFO, every
instance receives events in strictly increasing eventId order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Called with [(eventId, payload), …] in increasing eventId order.
DeliveryHandler = Callable[[list[tuple[int, bytes]]], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    targets: Sequence[str]  # instance ids that have subscribers for this event
    payload: bytes  # JSON, no newline (orjson never emits one)
    vehicle_id: str | None = None  # set: mirror as this vehicle's last position


class Bus(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    @abstractmethod
    async def start(self, on_deliver: DeliveryHandler) -> None:
        """Connect and start receiving this instance's deliveries."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        """Assign consecutive eventIds to `items` and deliver them; returns the ids."""

    @abstractmethod
    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """vehicleId → (eventId, payload) of the newest mirrored position."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers right now."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the delivery subscription is currently live."""
