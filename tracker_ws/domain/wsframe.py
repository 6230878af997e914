"""A server's WebSocket text frame (RFC 6455 §5.2): FIN, opcode 1, unmasked, no extension.

Built once per distinct message and written as the same bytes to every connection that
receives it (web/flusher.py); the connections negotiate no extension (`compress=False`), so
an uncompressed frame is the only kind they expect.
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81
# A protocol ping with no payload (FIN, opcode 9): the same two bytes for every connection.
PING_FRAME = bytes((0x89, 0))
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


class FramedOnce:
    """The frames of one flush pass: each distinct message framed once, and every connection
    given it gets the same bytes object; counts the writes of each (the sent-messages metric
    by message type, without a per-write label lookup)."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: dict[bytes, _Written] = {}

    def frame(self, payload: bytes, writes: int = 1) -> bytes:
        """The frame of `payload`, counted as written `writes` times (0: count later, with
        `count`)."""
        written = self._frames.get(payload)
        if written is None:
            written = self._frames[payload] = _Written(text_frame(payload))
        written.count += writes
        return written.frame

    def count(self, payload: bytes, writes: int) -> None:
        """`writes` more writes of a payload framed in this pass."""
        self._frames[payload].count += writes

    def counts(self) -> dict[bytes, int]:
        """Writes per message (the payload) in this pass."""
        return {payload: w.count for payload, w in self._frames.items()}


class _Written:
    __slots__ = ("count", "frame")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.count = 0


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 1 << 16:
        return _LEN16.pack(_TEXT_FIN, 126, n) + payload
    return _LEN64.pack(_TEXT_FIN, 127, n) + payload
