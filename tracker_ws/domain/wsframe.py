"""A server's WebSocket text frame (RFC 6455 §5.2): FIN, opcode 1, unmasked, no extension.

Built once per distinct message and written as the same bytes to every connection that
receives it (web/flusher.py); the connections negotiate no extension (`compress=False`), so
an uncompressed frame is the only kind they expect.
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def framed_once(cache: dict[bytes, bytes], payload: bytes) -> bytes:
    """`payload`'s frame, built once per flush pass: every connection given the same message
    in one pass gets the same bytes object."""
    frame = cache.get(payload)
    if frame is None:
        frame = cache[payload] = text_frame(payload)
    return frame


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 1 << 16:
        return _LEN16.pack(_TEXT_FIN, 126, n) + payload
    return _LEN64.pack(_TEXT_FIN, 127, n) + payload
