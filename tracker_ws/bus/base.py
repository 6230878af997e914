"""What the bus interfaces share: the records, the registry entry, the limits.

The bus is four small interfaces (ARCHITECTURE §3), each with a memory and a Redis backend:
`fanout.Fanout` (publish and deliver), `store.Store` (history and saved states),
`presence.Presence` (connection registry and instance liveness) and `control.Control`
(request/reply between instances). `tracker_ws.bus.Bus` bundles one of each; code that needs one
part takes only that part. The contract they keep is tests/contract/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def merge_history(chunks: Iterable[list[tuple[int, bytes]]], limit: int) -> list[tuple[int, bytes]]:
    """Merge per-stream entries into one eventId-ordered list without repeats."""
    seen: dict[int, bytes] = {}
    for chunk in chunks:
        for event_id, payload in chunk:
            seen.setdefault(event_id, payload)
    return sorted(seen.items())[:limit]


STATE_SEEN_TTL_S = 86400
