"""web/streams.py with members that record what the stream asks of them, on a real Flusher:
who is shared and when, what a leaving member takes along, one frame per flush written to
every shared member, and the streams following the members' keys."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tracker_ws.domain.batching import Positions
from tracker_ws.domain.models import UserContext
from tracker_ws.domain.permissions import Permissions
from tracker_ws.web.flusher import Flusher
from tracker_ws.web.streams import PositionStream, PositionStreams

WINDOW = 0.02
# What asyncio.WriteTransport.write takes (the stream writes bytes).
Data = bytes | bytearray | memoryview


class Transport(asyncio.WriteTransport):
    """What the stream writes a shared member's frames to: records each write with the
    member's lastEventId after it; `writable` False stands for a peer over its high-water
    mark, `fail` for a connection that breaks mid-write."""

    def __init__(self, member: Member) -> None:
        super().__init__()
        self.member = member
        self.writable = True
        self.closing = False
        self.fail = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0 if self.writable else self.member.high_water + 1

    def write(self, data: Data) -> None:
        if self.fail:
            raise ConnectionResetError("peer reset")
        # A server text frame of a short batch: two header bytes, then the JSON.
        assert data[0] == 0x81 and data[1] < 126
        self.member.wire.append((data, orjson.loads(data[2:])["eventId"]))


class Member:
    def __init__(self, company: str = "c1", **narrow: Any) -> None:
        self.perms = Permissions(UserContext("u", company, **narrow))
        self.stream: PositionStream | None = None
        self.shared = False
        self.ready = True  # shareable
        self.high_water = 1000
        self.last_event_id = 0
        self.io = Transport(self)
        self.transport: asyncio.WriteTransport | None = self.io
        self.handed: list[int] = []  # eventIds handed one by one (private)
        self.wire: list[tuple[Data, int]] = []  # stream frames written (shared)
        self.left_with: list[list[int]] = []
        self.failed: list[Exception] = []

    @property
    def writable(self) -> bool:
        return self.io.writable

    @writable.setter
    def writable(self, value: bool) -> None:
        self.io.writable = value

    def push_position(self, vid: str, event_id: int, single: bytes | None, frag: bytes) -> None:
        self.handed.append(event_id)

    def shareable(self) -> bool:
        return self.ready

    def write_failed(self, exc: Exception) -> None:
        self.failed.append(exc)
        self.transport = None

    def leave_shared(self, positions: Positions, last_flush: float) -> None:
        self.left_with.append(sorted(p[0] for p in positions.values()))


@pytest.fixture
def streams() -> PositionStreams:
    return PositionStreams(Flusher(0.002, lambda _: None), WINDOW)


def fix(stream_set: PositionStreams, keys: list[str], vid: str, event_id: int) -> int:
    return sum(
        s.push_position(vid, event_id, None, b'{"v":"%s","e":%d}' % (vid.encode(), event_id))
        for s in stream_set.lookup(keys)
    )


async def flushed(stream: PositionStream) -> None:
    """Until the Flusher took the stream's positions (it has no completion hook to await);
    bounded, so a stream that is never flushed fails the test instead of hanging it."""
    async with asyncio.timeout(2):
        while stream.outbox.has_work:
            await asyncio.sleep(WINDOW / 4)


async def shared_pair(streams: PositionStreams) -> tuple[Member, Member, PositionStream]:
    """Two members of one stream, shared after its first flush (fix 1)."""
    a, b = Member(), Member()
    for m in (a, b):
        streams.update(m, added=["company:c1"])
    fix(streams, ["company:c1"], "v1", 1)
    stream = a.stream
    assert stream is not None
    await flushed(stream)
    assert stream.shared == {a, b}
    return a, b, stream


async def test_members_start_private_and_are_shared_after_a_flush(
    streams: PositionStreams,
) -> None:
    a, b = Member(), Member()
    streams.update(a, added=["company:c1"])
    streams.update(b, added=["company:c1"])
    assert len(streams) == 1 and a.stream is b.stream
    stream = a.stream
    assert stream is not None and stream.private == {a, b}
    assert fix(streams, ["company:c1"], "v1", 1) == 2
    assert a.handed == b.handed == [1]  # private: handed the fix
    await flushed(stream)
    assert stream.shared == {a, b} and a.shared and b.shared
    assert a.wire == b.wire == []  # they had that fix already: no repeat

    fix(streams, ["company:c1"], "v1", 2)
    fix(streams, ["company:c1"], "v2", 3)
    await flushed(stream)
    assert a.handed == b.handed == [1]
    assert len(a.wire) == 1 and a.wire == b.wire and a.wire[0][1] == 3
    assert a.wire[0][0] is b.wire[0][0]  # the same bytes object


async def test_a_member_that_detaches_takes_the_pending_positions(
    streams: PositionStreams,
) -> None:
    a, b, stream = await shared_pair(streams)
    fix(streams, ["company:c1"], "v1", 2)
    fix(streams, ["company:c1"], "v2", 3)
    stream.detach(a)  # a frame of its own to send
    assert a.left_with == [[2, 3]] and not a.shared and a in stream.private
    a.ready = False  # its own outbox still holds them
    fix(streams, ["company:c1"], "v1", 4)
    assert a.handed == [1, 4]
    await flushed(stream)
    assert [e for _, e in b.wire] == [4] and a.wire == []
    a.ready = True
    fix(streams, ["company:c1"], "v1", 5)
    await flushed(stream)
    assert a.handed == [1, 4, 5] and a.shared  # shared again after that frame
    fix(streams, ["company:c1"], "v1", 6)
    await flushed(stream)
    assert [e for _, e in a.wire] == [6] and [e for _, e in b.wire] == [4, 5, 6]


async def test_a_member_that_cannot_be_written_leaves_with_the_frame(
    streams: PositionStreams,
) -> None:
    a, b, stream = await shared_pair(streams)
    a.writable = False
    a.ready = False
    fix(streams, ["company:c1"], "v1", 2)
    await flushed(stream)
    assert a.left_with == [[2]] and a in stream.private and b.wire[-1][1] == 2


async def test_a_member_gone_or_breaking_mid_write_leaves_and_the_others_get_the_frame(
    streams: PositionStreams,
) -> None:
    a, b, stream = await shared_pair(streams)
    c = Member()
    streams.update(c, added=["company:c1"])
    fix(streams, ["company:c1"], "v1", 2)
    await flushed(stream)
    assert stream.shared == {a, b, c}
    for m in (a, b, c):
        m.ready = False  # their connections are going: they do not come back
    a.io.fail = True  # raises in write()
    b.io.closing = True  # the transport is closing
    fix(streams, ["company:c1"], "v1", 3)
    fix(streams, ["company:c1"], "v2", 4)
    await flushed(stream)
    assert [type(e) for e in a.failed] == [ConnectionResetError] and a.transport is None
    assert a.left_with == b.left_with == [[3, 4]] and not b.failed
    assert stream.private == {a, b} and stream.shared == {c}
    assert [e for _, e in c.wire] == [4] and c.last_event_id == 4  # the frame's top
    assert a.last_event_id == b.last_event_id == 2  # not written: theirs to send


async def test_streams_follow_keys_company_and_narrowed_permissions(
    streams: PositionStreams,
) -> None:
    a, b, c = Member(), Member(), Member("c2")
    narrowed = Member(vehicle_ids=frozenset({"v1"}))
    for m in (a, b, c, narrowed):
        streams.update(m, added=["vehicle:v1"])
    # Same keys: a and b together; another company and a narrowed user apart.
    assert a.stream is b.stream and len(streams) == 3
    assert narrowed.stream is not None and narrowed.stream.perms is narrowed.perms
    assert a.stream is not None and a.stream.perms is None
    streams.update(b, added=["vehicle:v2"])
    assert a.stream is not b.stream and len(streams) == 4
    streams.update(b, removed=["vehicle:v2"])
    assert a.stream is b.stream and len(streams) == 3  # b's stream of two keys is gone
    for m in (a, b, c, narrowed):
        streams.update(m, removed=["vehicle:v1"])
        assert m.stream is None
    assert len(streams) == 0 and not streams.lookup(["vehicle:v1"])


def test_without_a_flusher_every_member_is_handed_every_fix() -> None:
    streams = PositionStreams()
    a, b = Member(), Member()
    for m in (a, b):
        streams.update(m, added=["company:c1"])
    for i in range(3):
        fix(streams, ["company:c1"], "v1", i + 1)
    assert a.handed == b.handed == [1, 2, 3] and not a.shared
    stream = a.stream
    assert stream is not None and not stream.outbox.has_work
