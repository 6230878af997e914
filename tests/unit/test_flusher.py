"""web/flusher.py: one flush pass per instance. Items due at once go out in the same loop
iteration, in one pass; items within their window go out at the tick that follows it, all
together, sharing the batches they have in common; a stale schedule is skipped. Real event
loop, items that record what the Flusher asks of them."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from tracker_ws.domain.batching import Outbox, SharedBatches
from tracker_ws.domain.wsframe import FramedOnce, text_frame
from tracker_ws.web.flusher import IDLE, NOW, Flusher

WINDOW = 0.05
TICK = 0.005


class Item:
    """A connection's outbound side: an Outbox, flushed the way Session.flush does."""

    def __init__(self, flusher: Flusher, name: str) -> None:
        self.flusher = flusher
        self.name = name
        self.flush_slot = IDLE
        self.outbox = Outbox(100, WINDOW)
        self.written: list[tuple[float, bytes]] = []
        self.flushed = asyncio.Event()

    def push(self, frame: bytes) -> None:
        self.outbox.push(frame)
        self.flusher.schedule(self, -math.inf)

    def push_position(self, vid: str, event_id: int) -> None:
        self.outbox.push_position(vid, event_id, None, f'"{vid}@{event_id}"'.encode())
        if self.flush_slot == IDLE:
            self.flusher.schedule(self, self.outbox.due_at())

    def flush(self, now: float, shared: SharedBatches, framed: FramedOnce) -> int:
        frames = self.outbox.take(now, shared)
        for f in frames:
            self.written.append((now, framed.frame(f)))
        if self.outbox.has_work:
            self.flusher.schedule(self, self.outbox.due_at())
        self.flushed.set()
        return len(frames)


@pytest.fixture
def flusher() -> Flusher:
    sent: list[dict[bytes, int]] = []
    f = Flusher(TICK, sent.append)
    f.sent = sent  # type: ignore[attr-defined]
    return f


async def test_frames_due_at_once_go_out_in_one_pass(flusher: Flusher) -> None:
    items = [Item(flusher, f"c{i}") for i in range(50)]
    for item in items:
        item.push(b'{"type":"pong"}')
        item.push(b'{"type":"x"}')
        assert item.flush_slot == NOW
    assert flusher.runs == 0  # nothing written from inside the pushes
    await asyncio.wait_for(items[-1].flushed.wait(), 1)
    assert flusher.runs == 1
    # One report per pass: the writes of each message.
    assert flusher.sent == [{b'{"type":"pong"}': 50, b'{"type":"x"}': 50}]  # type: ignore[attr-defined]
    assert all(len(i.written) == 2 and i.flush_slot == IDLE for i in items)
    # Every connection got the very same bytes object for the same message: framed once.
    assert len({id(i.written[0][1]) for i in items}) == 1
    assert items[0].written[0][1] == text_frame(b'{"type":"pong"}')


async def test_positions_within_the_window_go_out_together_at_its_end(flusher: Flusher) -> None:
    loop = asyncio.get_running_loop()
    a, b, c = (Item(flusher, n) for n in "abc")
    for item in (a, b, c):
        item.push_position("v1", 1)  # idle: at once
    await asyncio.wait_for(c.flushed.wait(), 1)
    first = loop.time()
    for item in (a, b, c):
        item.flushed.clear()
    for event_id, vid in ((2, "v1"), (3, "v2"), (4, "v1")):
        for item in (a, b):
            item.push_position(vid, event_id)
    c.push_position("v2", 3)
    await asyncio.wait_for(asyncio.gather(a.flushed.wait(), b.flushed.wait(), c.flushed.wait()), 1)
    sent_at = {it.written[-1][0] for it in (a, b, c)}
    assert len(sent_at) == 1, "one pass for the three"
    assert sent_at.pop() >= first + WINDOW
    # The latest fix per vehicle, in one batch, the same bytes object for a and b.
    assert a.written[-1][1] is b.written[-1][1]
    assert b'"v1@4"' in a.written[-1][1] and b'"v2@3"' in a.written[-1][1]
    assert b'"v1@2"' not in a.written[-1][1]
    assert c.written[-1][1] != a.written[-1][1]
    assert [len(i.written) for i in (a, b, c)] == [2, 2, 2]


async def test_a_frame_overtakes_a_pending_tick_and_takes_the_positions_with_it(
    flusher: Flusher,
) -> None:
    a = Item(flusher, "a")
    a.push_position("v1", 1)
    await asyncio.wait_for(a.flushed.wait(), 1)
    a.flushed.clear()
    a.push_position("v1", 2)
    assert a.flush_slot > 0  # waiting for its tick
    a.push(b'{"type":"notification"}')
    assert a.flush_slot == NOW
    await asyncio.wait_for(a.flushed.wait(), 1)
    runs = flusher.runs
    # The positions went first, then the frame; the tick's entry is stale and skipped.
    assert [w for _, w in a.written[1:]][1] == text_frame(b'{"type":"notification"}')
    assert b'"v1@2"' in a.written[1][1]
    await asyncio.sleep(WINDOW + 2 * TICK)  # the stale tick passes (the thing under test)
    assert len(a.written) == 3
    assert flusher.runs <= runs + 1
    assert flusher.pending() == 0


async def test_an_item_that_reschedules_itself_is_flushed_again(flusher: Flusher) -> None:
    a = Item(flusher, "a")
    a.push_position("v1", 1)
    await asyncio.wait_for(a.flushed.wait(), 1)
    for n in range(2, 6):
        a.flushed.clear()
        a.push_position("v1", n)
        await asyncio.wait_for(a.flushed.wait(), 1)
    times = [t for t, _ in a.written]
    assert len(times) == 5
    assert all(b - a_ >= WINDOW for a_, b in itertools.pairwise(times))
