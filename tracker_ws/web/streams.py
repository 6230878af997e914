"""Position streams: connections that receive the same positions share one outbox.

Connections of one company holding the same subscription keys (and no narrowed permissions)
are entitled to exactly the same fixes. The Hub hands a fix to each *stream* once, not to
each connection; the stream coalesces fixes like a connection does (domain/batching.Outbox,
the same window) and, at its flush, builds the position frame once and writes the same
bytes to every member's transport. Per fix the cost is one dict store per stream; per
flush, one write per member.

A member is *shared* (written by its stream) only while it has nothing of its own to send:
live, no replay held, an empty outbox, its peer reading (Session.shareable). Otherwise it is
*private*: the stream hands it every fix (Session.push_position, the per-connection path of
ARCHITECTURE §4), so ordering, coalescing, the slow-consumer close and recovery behave
exactly as for a connection on its own.
- A shared member that must send a frame of its own (a reply, an event) leaves with the
  stream's pending positions, which go out first: eventIds stay in order.
- A shared member whose peer stops reading, or whose connection is going, leaves with the
  positions of the frame it was not written.
- A private member becomes shared at a stream flush, after the write: it was handed every
  fix of that frame already, so it neither misses nor repeats one.
New members start private. Narrowed users (a vehicle or group list in their token) get a
stream of their own, checked against their permissions per fix as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from tracker_ws.domain.batching import Outbox, Positions, SharedBatches
from tracker_ws.domain.index import SubscriptionIndex
from tracker_ws.domain.permissions import Permissions
from tracker_ws.domain.wsframe import FramedOnce
from tracker_ws.web.flusher import IDLE, Flusher, reading

# A stream's identity: (company, its keys, the narrowed member's id or 0).
StreamKey = tuple[str, frozenset[str], int]


class Member(Protocol):
    """A connection as a stream sees it (web/session.Session)."""

    perms: Permissions
    stream: PositionStream | None
    shared: bool
    # What a shared member's frames are written to: None once nothing may be written (the
    # connection is gone or closing); over `high_water` bytes buffered its peer is not
    # reading (flusher.reading, the rule the member's own writes follow too). The stream
    # writes to it directly, with no method call of the member per frame: 10,000 members of
    # one stream in S3 (bench.micro_fanout).
    transport: asyncio.WriteTransport | None
    high_water: int
    last_event_id: int

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None: ...

    def shareable(self) -> bool:
        """Nothing of its own to send and a peer that reads: the stream may write to it."""
        ...

    def write_failed(self, exc: Exception) -> None:
        """Writing to its transport raised: the connection is going."""
        ...

    def leave_shared(self, positions: Positions, last_flush: float) -> None:
        """Now private: queue `positions` (the stream's, not yet written to it)."""
        ...


class PositionStream:
    __slots__ = (
        "_flusher",
        "company",
        "flush_slot",
        "key",
        "keys",
        "outbox",
        "perms",
        "private",
        "shared",
    )

    def __init__(
        self,
        key: StreamKey,
        perms: Permissions | None,
        flusher: Flusher | None,
        window_s: float,
    ) -> None:
        self.key = key
        self.company, self.keys, _ = key
        # Set for a narrowed member's own stream: each fix is checked against it.
        self.perms = perms
        self.flush_slot = IDLE
        self.shared: set[Member] = set()
        self.private: set[Member] = set()
        self.outbox = Outbox(0, window_s)
        self._flusher = flusher

    def __len__(self) -> int:
        return len(self.shared) + len(self.private)

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> int:
        """Hand a fix to every member; the number of members."""
        for member in self.private:
            member.push_position(vehicle_id, event_id, single, fragment)
        flusher = self._flusher
        if flusher is not None:
            # Kept while no member is shared too: the flush is where private members join.
            self.outbox.push_position(vehicle_id, event_id, single, fragment)
            if self.flush_slot == IDLE:
                flusher.schedule(self, self.outbox.due_at())
        return len(self.shared) + len(self.private)

    def detach(self, member: Member) -> None:
        """A shared member leaves (a frame of its own to send, or it leaves the stream)
        with the positions not yet written to it."""
        self._to_private(member, self.outbox.pending_positions(), self.outbox.last_flush)

    def _to_private(self, member: Member, unwritten: Positions, last_flush: float) -> None:
        self.shared.discard(member)
        member.shared = False
        self.private.add(member)
        if unwritten:
            member.leave_shared(unwritten, last_flush)

    def flush(self, now: float, shared: SharedBatches, framed: FramedOnce) -> int:
        """The Flusher's call: one frame, the same bytes to every shared member."""
        outbox = self.outbox
        pending = outbox.pending_positions()
        if not pending:
            return 0
        last_flush = outbox.last_flush
        frames = outbox.take(now, shared if self.shared else None)
        if not frames:
            # Not due yet (scheduled before the window of the last flush was over).
            assert self._flusher is not None
            self._flusher.schedule(self, outbox.due_at())
            return 0
        written = 0
        shared_members = self.shared
        if shared_members:
            payload = frames[-1]
            top = max([item[0] for item in pending.values()])
            wire = framed.frame(payload, 0)
            missed: list[Member] = []
            for member in shared_members:
                transport = member.transport
                if not reading(transport, member.high_water):
                    # Gone, or its peer does not read: it leaves with this frame's positions.
                    missed.append(member)
                    continue
                try:
                    transport.write(wire)
                except (ConnectionError, RuntimeError) as exc:
                    member.write_failed(exc)
                    missed.append(member)
                    continue
                if top > member.last_event_id:
                    member.last_event_id = top
            written = len(shared_members) - len(missed)
            framed.count(payload, written)
            for member in missed:
                self._to_private(member, pending, last_flush)
        if self.private:
            joining = [m for m in self.private if m.shareable()]
            for member in joining:
                self.private.discard(member)
                self.shared.add(member)
                member.shared = True
        return written


class PositionStreams:
    """The instance's streams, indexed by routing key (the keys of their members).

    `flusher` None: streams only hand fixes to their members one by one (every member
    private), e.g. a Hub without connections that write (unit tests, bench.micro_*)."""

    __slots__ = ("_by_key", "_flusher", "_streams", "window")

    def __init__(self, flusher: Flusher | None = None, window_s: float = 0.05) -> None:
        self._by_key: SubscriptionIndex[PositionStream] = SubscriptionIndex()
        self._streams: dict[StreamKey, PositionStream] = {}
        self._flusher = flusher
        self.window = window_s  # one float for every connection's Outbox (S1 memory)

    def lookup(self, keys: Iterable[str]) -> set[PositionStream]:
        return self._by_key.lookup(keys)

    def __len__(self) -> int:
        return len(self._streams)

    def update(
        self, member: Member, added: Iterable[str] = (), removed: Iterable[str] = ()
    ) -> None:
        """The member's keys changed: move it to the stream of its new key set (none when it
        holds no key)."""
        old = member.stream
        keys = old.keys if old is not None else frozenset()
        new_keys = keys.union(added).difference(removed)
        if old is not None and new_keys == keys:
            return
        if old is not None:
            self._leave(member, old)
        if new_keys:
            self._join(member, new_keys)

    def _leave(self, member: Member, stream: PositionStream) -> None:
        if member.shared:
            stream.detach(member)
        stream.private.discard(member)
        member.stream = None
        if not stream:
            del self._streams[stream.key]
            self._by_key.remove(stream, stream.keys)

    def _join(self, member: Member, keys: frozenset[str]) -> None:
        perms = member.perms
        narrowed = perms.narrowed
        key: StreamKey = (perms.user.company_id, keys, id(member) if narrowed else 0)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = PositionStream(
                key, perms if narrowed else None, self._flusher, self.window
            )
            self._by_key.add(stream, keys)
        stream.private.add(member)
        member.stream = stream
        member.shared = False
