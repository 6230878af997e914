"""The WebSocket response of a session: aiohttp's, telling the session before its close frame.

aiohttp sends the close frame from `close()`, whether we call it or `receive()` does (the
peer's close frame, a protocol error, the end of the stream). Nothing may be written after
it (RFC 6455 §5.5.1), and the Flusher and the position streams write frames straight to the
transport; so the session stops writing first, and a write needs no `ws.closed` check (a
property call per frame on the fan-out path).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import WSCloseCode, web


class Writer(Protocol):
    def stop_writing(self) -> None:
        """The close frame is about to be sent: write nothing more."""
        ...


class SessionSocket(web.WebSocketResponse):
    # The session itself, not a bound method of it: one reference, no object per connection
    # (S1 memory).
    writer: Writer | None = None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if self.writer is not None:
            self.writer.stop_writing()
        return await super().close(code=code, message=message, drain=drain)
