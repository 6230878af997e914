"""The bus contract both backends pass (tests/integration/test_bus_contract.py).

`publish` is the heart of ordering (ARCHITECTURE §3): in one atomic step it takes the next
global eventIds for a batch, sends each instance the records it needs on its own delivery
channel, and mirrors last positions. Because the step is atomic and channels are FIFO, every
instance receives events in strictly increasing eventId order.

The bus also carries the cluster's bookkeeping: the connection registry (seed §4), instance
liveness, and a small request/reply mechanism over per-instance control channels, so that an
admin action on any instance reaches a connection on any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

log = logging.getLogger(__name__)

ALL_INSTANCES = "*"
DEDUPE_TTL_S = 3600
HISTORY_CAP = 10_000  # entries per history stream
HISTORY_TTL_S = 3600  # an idle stream (and its floor) goes after this long

# Called with [(eventId, payload), …] in increasing eventId order.
DeliveryHandler = Callable[[list[tuple[int, bytes]]], None]
# (command, args) -> reply (None: nothing to say back)
CommandHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


# Not frozen: one is built per GPS fix, and a frozen dataclass's __init__ costs three times as
# much (an object.__setattr__ call per field). Nothing changes one after it is built.
@dataclass(slots=True)
class Outgoing:
    targets: Sequence[str]  # instance ids with subscribers for this event; ALL_INSTANCES: all
    payload: bytes  # JSON, no newline (orjson never emits one)
    vehicle_id: str | None = None  # set: mirror as this vehicle's last position
    dedupe_id: str | None = None  # set: published at most once per DEDUPE_TTL_S
    history: Sequence[str] = ()  # replayable: append to these history streams
    fix_ms: int | None = None  # positions: dropped unless newer than the vehicle's last fix


@dataclass(frozen=True, slots=True)
class ConnectionEntry:
    """One `ws:conn:user:{userId}` field: "{instanceId}:{connectedAt}:{lastSeen}" (epoch ms)."""

    conn_id: str
    user_id: str
    instance_id: str
    connected_at_ms: int
    last_seen_ms: int

    def value(self) -> str:
        return f"{self.instance_id}:{self.connected_at_ms}:{self.last_seen_ms}"

    @classmethod
    def parse(cls, conn_id: str, user_id: str, value: str) -> ConnectionEntry:
        # The instance id may itself contain ':'; the two timestamps never do.
        instance, connected, seen = value.rsplit(":", 2)
        return cls(conn_id, user_id, instance, int(connected), int(seen))


class Bus(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._command_handler: CommandHandler | None = None
        self._pending: dict[str, tuple[set[str], dict[str, dict[str, Any]], asyncio.Event]] = {}

    # ------------------------------------------------------------ events
    @abstractmethod
    async def start(self, on_deliver: DeliveryHandler) -> None:
        """Connect and start receiving this instance's deliveries and control messages."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        """Assign increasing eventIds to `items` and deliver them; returns the ids, 0 for an
        item dropped as a duplicate (its dedupe id was already published)."""

    @abstractmethod
    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """vehicleId → (eventId, payload) of the newest mirrored position."""

    def on_input(self, handler: Callable[[str, bytes], None]) -> None:
        """Events other services publish on Redis channels `events:{type}` (Redis only)."""
        self._input_handler: Callable[[str, bytes], None] | None = handler

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

    # ------------------------------------------------------------ recovery
    @abstractmethod
    async def read_history(
        self, streams: Sequence[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """Replayable events with eventId > `after_id` from `streams`, merged in eventId order
        (at most `limit`), and whether any of those streams was trimmed past `after_id`."""

    @abstractmethod
    async def save_state(self, key: str, state: bytes, ttl_s: float) -> None:
        """`ws:state:{key}` for `ttl_s`, plus a longer-lived mark that it existed."""

    @abstractmethod
    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        """(state or None, whether a state was saved within the last day)."""

    # ------------------------------------------------------------ connection registry
    @abstractmethod
    async def register_connections(self, entries: Sequence[ConnectionEntry]) -> None: ...

    @abstractmethod
    async def apply_writes(
        self,
        registers: Sequence[ConnectionEntry],
        unregisters: Sequence[tuple[str, str]],
        states: Mapping[str, bytes],
        state_ttl_s: float,
    ) -> None:
        """Connection registrations, (connId, userId) removals and saved states, in one round
        trip (see bus/writeback.py)."""

    async def register_connection(self, entry: ConnectionEntry) -> None:
        await self.register_connections([entry])

    @abstractmethod
    async def unregister_connection(self, conn_id: str, user_id: str) -> None: ...

    @abstractmethod
    async def touch_connections(
        self, entries: Sequence[tuple[ConnectionEntry, str]], state_ttl_s: float
    ) -> None:
        """Refresh lastSeen of many connections, and the TTL of their saved states (the
        second item: the state key), in one round trip."""

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
        """(live, dead) instance ids; dead ones still have registry entries to clean."""

    @abstractmethod
    async def cleanup_instance(self, instance_id: str) -> int:
        """Remove a dead instance's registry entries; returns how many connections it had.
        Returns -1 when another instance is already cleaning it up."""

    @abstractmethod
    async def deregister_instance(self) -> None:
        """Graceful leave: this instance's registry entries and liveness go now."""

    # ------------------------------------------------------------ control channel
    def on_command(self, handler: CommandHandler) -> None:
        self._command_handler = handler

    @abstractmethod
    async def _send_control(self, target: str, data: bytes) -> None: ...

    @abstractmethod
    async def _send_reply(self, target: str, data: bytes) -> None: ...

    def new_request(self, targets: Iterable[str]) -> str:
        req = uuid.uuid4().hex
        self._pending[req] = (set(targets), {}, asyncio.Event())
        return req

    async def gather_replies(self, req: str, timeout: float) -> dict[str, dict[str, Any]]:
        """Replies to `req` by instance id, waiting until all targets answered or `timeout`."""
        targets, replies, done = self._pending[req]
        if not targets:
            done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        self._pending.pop(req, None)
        return replies

    async def reply(self, target: str, req: str, payload: dict[str, Any]) -> None:
        data = orjson.dumps({"req": req, "from": self.instance_id, "reply": payload})
        await self._send_reply(target, data)

    async def call(
        self, targets: Iterable[str], command: str, args: dict[str, Any], timeout: float = 2.0
    ) -> dict[str, dict[str, Any]]:
        """Run `command` on each target instance; their replies by instance id (missing:
        did not answer within `timeout`)."""
        targets = list(targets)
        req = self.new_request(targets)
        data = orjson.dumps({"cmd": command, "args": args, "req": req, "from": self.instance_id})
        for target in targets:
            try:
                await self._send_control(target, data)
            except Exception as exc:
                log.warning("control message to %s failed: %s", target, exc)
        return await self.gather_replies(req, timeout)

    def _on_control(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
            command, args, req, sender = msg["cmd"], msg["args"], msg["req"], msg["from"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring malformed control message %r", data[:200])
            return
        asyncio.get_running_loop().create_task(self._run_command(command, args, req, sender))

    async def _run_command(self, command: str, args: dict[str, Any], req: str, sender: str) -> None:
        handler = self._command_handler
        result: dict[str, Any] | None = None
        try:
            if handler is not None:
                result = await handler(command, args)
        except Exception as exc:
            log.exception("control command %s failed", command)
            result = {"error": str(exc)}
        with contextlib.suppress(Exception):
            await self.reply(sender, req, result or {})

    def _on_reply(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
            req, sender, payload = msg["req"], msg["from"], msg["reply"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        pending = self._pending.get(req)
        if pending is None:
            return  # late reply after the timeout
        targets, replies, done = pending
        replies[sender] = payload
        if targets <= replies.keys():
            done.set()


def merge_history(chunks: Iterable[list[tuple[int, bytes]]], limit: int) -> list[tuple[int, bytes]]:
    """Merge per-stream entries into one eventId-ordered list without repeats."""
    seen: dict[int, bytes] = {}
    for chunk in chunks:
        for event_id, payload in chunk:
            seen.setdefault(event_id, payload)
    return sorted(seen.items())[:limit]


STATE_SEEN_TTL_S = 86400
