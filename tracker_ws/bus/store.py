"""History and saved states: what recovery reads (ARCHITECTURE §3).

History streams are written by `Fanout.publish` (in the same atomic step as the eventId) and
only read here. A saved state lives `ttl_s`; a longer-lived mark remembers that it existed, so
recovery can tell "expired" from "never saved".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence


class Store(ABC):
    @abstractmethod
    async def read_history(
        self, streams: Sequence[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """Replayable events with eventId > `after_id` from `streams`, merged in eventId order
        (at most `limit`), and whether any of those streams was trimmed past `after_id`."""

    @abstractmethod
    async def save_states(self, states: Mapping[str, bytes], ttl_s: float) -> None:
        """`ws:state:{key}` for `ttl_s` each, plus a day-long mark that it existed; one round
        trip (the write-behind's batch)."""

    async def save_state(self, key: str, state: bytes, ttl_s: float) -> None:
        await self.save_states({key: state}, ttl_s)

    @abstractmethod
    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        """(state or None, whether a state was saved within the last day)."""

    @abstractmethod
    async def refresh_states(self, keys: Sequence[str], ttl_s: float) -> None:
        """Give the saved states of live connections `ttl_s` again (missing ones stay
        missing)."""
