"""Single-instance backends: the bus contract in process memory (TRACKER_WS_REDIS_URL=memory://).

The fan-out appends to history streams that the store reads: they share one `MemoryHistory`,
as the Redis parts share one client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tracker_ws.bus.base import (
    ALL_INSTANCES,
    DEDUPE_TTL_S,
    HISTORY_CAP,
    STATE_SEEN_TTL_S,
    ConnectionEntry,
    DeliveryHandler,
    Outgoing,
    merge_history,
)
from tracker_ws.bus.control import Control
from tracker_ws.bus.fanout import Fanout
from tracker_ws.bus.presence import Presence
from tracker_ws.bus.store import Store


@dataclass
class MemoryHistory:
    streams: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    floor: dict[str, int] = field(default_factory=dict)  # highest trimmed id per stream

    def append(self, stream: str, event_id: int, payload: bytes) -> None:
        entries = self.streams.setdefault(stream, [])
        entries.append((event_id, payload))
        if len(entries) > HISTORY_CAP:
            self.floor[stream] = entries[-HISTORY_CAP - 1][0]
            del entries[:-HISTORY_CAP]


class MemoryFanout(Fanout):
    def __init__(self, instance_id: str, history: MemoryHistory | None = None) -> None:
        super().__init__(instance_id)
        self.history = MemoryHistory() if history is None else history
        self._next_id = 1
        self._last: dict[str, tuple[int, bytes]] = {}
        self._handler: DeliveryHandler | None = None
        self._seen: dict[str, float] = {}
        self._last_fix: dict[str, int] = {}

    async def start(self, on_deliver: DeliveryHandler) -> None:
        self._handler = on_deliver

    async def close(self) -> None:
        self._handler = None

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        mine: list[tuple[int, bytes]] = []
        ids: list[int] = []
        now = time.monotonic()
        for item in items:
            if item.fix_ms is not None and item.vehicle_id is not None:
                if self._last_fix.get(item.vehicle_id, -1) >= item.fix_ms:
                    ids.append(0)
                    continue
                self._last_fix[item.vehicle_id] = item.fix_ms
            if item.dedupe_id is not None:
                seen = self._seen.get(item.dedupe_id)
                if seen is not None and now - seen < DEDUPE_TTL_S:
                    ids.append(0)
                    continue
                self._seen[item.dedupe_id] = now
            event_id = self._next_id
            self._next_id += 1
            ids.append(event_id)
            if item.vehicle_id is not None:
                self._last[item.vehicle_id] = (event_id, item.payload)
            for stream in item.history:
                self.history.append(stream, event_id, item.payload)
            if self.instance_id in item.targets or ALL_INSTANCES in item.targets:
                mine.append((event_id, item.payload))
        if mine and self._handler is not None:
            # Deliver on the next loop turn, like a pub/sub message would arrive.
            asyncio.get_running_loop().call_soon(self._handler, mine)
        return ids

    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        return {v: self._last[v] for v in vehicle_ids if v in self._last}

    async def ping(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return self._handler is not None


class MemoryStore(Store):
    def __init__(self, history: MemoryHistory | None = None) -> None:
        self.history = MemoryHistory() if history is None else history
        self._states: dict[str, tuple[bytes, float]] = {}  # key -> (state, expires at)
        self._states_seen: dict[str, float] = {}

    async def read_history(
        self, streams: Sequence[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        floor, entries = self.history.floor, self.history.streams
        trimmed = any(floor.get(s, 0) > after_id for s in streams)
        chunks = [[e for e in entries.get(s, []) if e[0] > after_id] for s in streams]
        return merge_history(chunks, limit), trimmed

    async def save_states(self, states: Mapping[str, bytes], ttl_s: float) -> None:
        now = time.monotonic()
        for key, state in states.items():
            self._states[key] = (state, now + ttl_s)
            self._states_seen[key] = now + STATE_SEEN_TTL_S

    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        now = time.monotonic()
        found = self._states.get(key)
        seen = self._states_seen.get(key, 0) > now
        if found is None or found[1] <= now:
            return None, seen
        return found[0], True

    async def refresh_states(self, keys: Sequence[str], ttl_s: float) -> None:
        now = time.monotonic()
        for key in keys:
            found = self._states.get(key)
            if found is not None and found[1] > now:
                self._states[key] = (found[0], now + ttl_s)


class MemoryPresence(Presence):
    """One instance: the registry is a dict and this instance is the only one alive."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self._users: dict[str, dict[str, ConnectionEntry]] = {}

    async def register_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        for entry in entries:
            self._users.setdefault(entry.user_id, {})[entry.conn_id] = entry

    async def apply_writes(
        self, registers: Sequence[ConnectionEntry], unregisters: Sequence[tuple[str, str]]
    ) -> None:
        await self.register_connections(registers)
        for conn_id, user_id in unregisters:
            conns = self._users.get(user_id)
            if conns is not None:
                conns.pop(conn_id, None)
                if not conns:
                    del self._users[user_id]

    async def touch_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        for entry in entries:
            conns = self._users.get(entry.user_id)
            if conns is not None and entry.conn_id in conns:
                conns[entry.conn_id] = entry

    async def user_connections(self, user_id: str) -> list[ConnectionEntry]:
        return list(self._users.get(user_id, {}).values())

    async def heartbeat(self, ttl_s: float) -> None:
        return None

    async def is_registered(self) -> bool:
        return True

    async def instances(self) -> tuple[list[str], list[str]]:
        return [self.instance_id], []

    async def cleanup_instance(self, instance_id: str) -> int:
        return 0

    async def deregister_instance(self) -> None:
        self._users.clear()


class MemoryControl(Control):
    """Only this instance exists: a request to itself is answered on the next loop turn."""

    async def _send_control(self, target: str, data: bytes) -> None:
        if target == self.instance_id:
            asyncio.get_running_loop().call_soon(self._on_control, data)

    async def _send_reply(self, target: str, data: bytes) -> None:
        if target == self.instance_id:
            asyncio.get_running_loop().call_soon(self._on_reply, data)
