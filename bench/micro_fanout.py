"""Micro-benchmark of a position stream's fan-out: the Python cost per member of one flush.

    python -m bench.micro_fanout                       # this tree
    python -m bench.micro_fanout --tracker-src PATH    # another tree (before/after runs)

`PositionStream.flush` of one position frame to N shared members that are real `Session`
objects (built without a connection: only what the flush reads is set) whose transports are
C built-ins that do nothing, so the figure is what the stream and session code cost on top
of the kernel's send (bench S3: one send is 8–10 µs on the bench machine, see
bench/results). Figures are ns per member, median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any


class NullTransport:
    """A transport whose calls are C built-ins returning at once: open, empty, writes dropped."""

    is_closing = staticmethod(bool)  # bool() -> False
    get_write_buffer_size = staticmethod(int)  # int() -> 0
    write = staticmethod(len)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.micro_fanout", description=__doc__)
    p.add_argument("--tracker-src", default="", help="import tracker_ws from this tree")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=60)
    return p.parse_args()


def _member(session_cls: Any, transport: NullTransport) -> Any:
    from aiohttp import web

    s = session_cls.__new__(session_cls)
    slots = set(session_cls.__slots__)
    # The attribute names of the tree measured (before: private, after: public).
    for name in ("transport", "_transport"):
        if name in slots:
            setattr(s, name, transport)
    for name in ("high_water", "_high_water"):
        if name in slots:
            setattr(s, name, 1 << 16)
    s.ws = web.WebSocketResponse()  # not prepared: `closed` is False
    s.last_event_id = 0
    s.shared = True
    return s


def main() -> None:
    args = _args()
    if args.tracker_src:
        sys.path.insert(0, os.path.abspath(args.tracker_src))
    import tracker_ws
    from tracker_ws.domain.protocol import encode_position_batch
    from tracker_ws.domain.wsframe import FramedOnce
    from tracker_ws.web.session import Session
    from tracker_ws.web.streams import PositionStream

    transport = NullTransport()
    stream = PositionStream(("c1", frozenset({"company:c1"}), 0), None, None, 0.05)
    members = [_member(Session, transport) for _ in range(args.members)]
    stream.shared.update(members)
    for m in members:
        m.stream = stream
    fragment = b'{"vehicleId":"v1","lat":55.75,"lng":37.61}'
    per_member: list[float] = []
    now = 1000.0
    for i in range(args.repeats + 5):
        event_id = i + 1
        stream.outbox.push_position(
            "v1", event_id, encode_position_batch(event_id, [fragment]), fragment
        )
        now += 1.0
        t0 = time.perf_counter_ns()
        written = stream.flush(now, {}, FramedOnce())
        took = time.perf_counter_ns() - t0
        assert written == args.members, (written, args.members)
        if i >= 5:  # warm-up
            per_member.append(took / args.members)
    assert all(m.last_event_id == args.repeats + 5 for m in members)
    print(
        f"tracker_ws from {os.path.dirname(os.path.dirname(tracker_ws.__file__))}: "
        f"{args.members} members, {args.repeats} flushes: "
        f"median {statistics.median(per_member):.0f} ns per member "
        f"(min {min(per_member):.0f}, max {max(per_member):.0f})"
    )


if __name__ == "__main__":
    main()
