"""Per-connection outbound buffer with position coalescing (ARCHITECTURE §4).

Frames that must arrive one by one (replies, geo events, notifications, alerts) queue in
order and are bounded. Positions are coalesced to the latest fix per vehicle: an idle
connection gets a position at once; positions arriving within the flush window after a
send are merged and go out together as one `positionBatch`. While a slow peer blocks the
writer, positions keep coalescing, so a slow consumer degrades to latest-per-vehicle
instead of growing a backlog.
"""

from __future__ import annotations

import math

from tracker_ws.domain.protocol import encode_position_batch

# vehicleId -> (eventId, single `position` frame or None, batch fragment)
Positions = dict[str, tuple[int, bytes | None, bytes]]

# Shared and never written to: an empty outbox holds these instead of a list and a dict of its
# own (S1 memory: 120 bytes per idle connection; most connections' positions are written by
# their stream, web/streams.py, so their own stay empty).
_NO_FRAMES: list[bytes] = []
_NO_POSITIONS: Positions = {}
_NEVER = float("-inf")


class Outbox:
    __slots__ = ("_frames", "_last_flush", "_positions", "limit", "window")

    def __init__(self, limit: int, window_s: float) -> None:
        # A list, not a deque: an empty deque is 760 bytes, per connection (S1 memory), and
        # frames only ever leave all together.
        self._frames = _NO_FRAMES
        self._positions = _NO_POSITIONS
        self._last_flush = _NEVER
        self.limit = limit
        self.window = window_s

    def push(self, frame: bytes, *, force: bool = False) -> bool:
        """Queue a frame; False when the queue is over its limit (the caller decides).
        `force`: queue regardless (a replay built before the writer starts).

        Positions already pending go out first, as a batch: the client must see eventIds in
        order, and a position that waited for the window is older than this frame."""
        frames = self._frames
        if not force and len(frames) >= self.limit:
            return False
        if frames is _NO_FRAMES:
            frames = self._frames = []
        if self._positions:
            frames.append(self._position_frame())
            self._positions = _NO_POSITIONS
        frames.append(frame)
        return True

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None:
        """Keep only the newest fix per vehicle. `single` None: send inside a batch only."""
        positions = self._positions
        if positions is _NO_POSITIONS:
            positions = self._positions = {}
        positions[vehicle_id] = (event_id, single, fragment)

    def pending_positions(self) -> Positions:
        """The coalesced positions not yet taken (vehicleId -> eventId, single, fragment), not
        to be modified; `take` replaces the dict, so a reference kept across it still holds
        what it took."""
        return self._positions

    @property
    def last_flush(self) -> float:
        return self._last_flush

    def adopt(self, positions: Positions, last_flush: float) -> None:
        """Take over another outbox's pending positions and its window (a connection leaving
        a shared position stream, web/streams.py): the newest fix per vehicle wins."""
        mine = self._positions
        if positions and mine is _NO_POSITIONS:
            mine = self._positions = {}
        for vid, item in positions.items():
            held = mine.get(vid)
            if held is None or held[0] < item[0]:
                mine[vid] = item
        if last_flush > self._last_flush:
            self._last_flush = last_flush

    @property
    def has_work(self) -> bool:
        return bool(self._frames or self._positions)

    def depth(self) -> int:
        return len(self._frames) + len(self._positions)

    def delay(self, now: float) -> float:
        """Seconds to wait before `take` should run (0: now, or nothing to wait for)."""
        due = self.due_at()
        return 0.0 if due == math.inf else max(0.0, due - now)

    def due_at(self) -> float:
        """When `take` should run: -inf for at once (a frame waits, or positions after an idle
        window), the end of the window for positions that came within it, inf for never."""
        if self._frames:
            return -math.inf
        if not self._positions:
            return math.inf
        return self._last_flush + self.window

    def take(self, now: float, shared: SharedBatches | None = None) -> list[bytes]:
        """Everything due now: queued frames in order, then the coalesced positions.

        `shared`: batches already built in this flush, by the eventIds they hold. Connections
        with the same subscriptions flushed together hold the same fixes, so their batch is
        built once and the same bytes go to each (an eventId names one fix, so equal ids mean
        equal bytes)."""
        out = self._frames
        if out is _NO_FRAMES:
            out = []
        else:
            self._frames = _NO_FRAMES
        if self._positions and now >= self._last_flush + self.window:
            out.append(self._position_frame(shared))
            self._positions = _NO_POSITIONS
            self._last_flush = now
        return out

    def _position_frame(self, shared: SharedBatches | None = None) -> bytes:
        if shared is None:
            return self._build_batch()
        key = tuple([i[0] for i in self._positions.values()])
        frame = shared.get(key)
        if frame is None:
            frame = shared[key] = self._build_batch()
        return frame

    def _build_batch(self) -> bytes:
        items = self._positions.values()
        if len(self._positions) == 1:
            event_id, single, fragment = next(iter(items))
            if single is not None:
                return single
            return encode_position_batch(event_id, [fragment])
        return encode_position_batch(max(i[0] for i in items), [i[2] for i in items])


# Position batches built during one flush, by the eventIds they hold in order.
SharedBatches = dict[tuple[int, ...], bytes]


# A live record held while a reconnect replays: (eventId, event frame or position parts).
Held = tuple[int, bytes | tuple[str, bytes | None, bytes]]


def release_after_replay(held: list[Held], replayed_through: int) -> list[Held]:
    """What of the live traffic held during a reconnect's replay still goes out after it, in
    arrival (eventId) order.

    A position whose eventId is not above the last replayed event (or the client's own
    lastEventId) is dropped: the script that published it ran before that event's, so the
    position mirror held it, or a newer fix, when the snapshot that follows the replay was
    read; sent now it would reach the client after a higher eventId. Events are all kept: the
    session drops the ones the replay already sent (push_event)."""
    return [
        (event_id, item)
        for event_id, item in held
        if not (isinstance(item, tuple) and event_id <= replayed_through)
    ]
