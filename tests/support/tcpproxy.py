"""A small asyncio TCP proxy on 127.0.0.1 for fault tests: one address in front of several
instances, like a load balancer in front of a deploy.

New connections go to the current backend (`point_to` re-points; connections already open
stay where they are, as with a real balancer). With `failover`, a backend that refuses the
connection is skipped for the next one in the list. `cut_all` drops every proxied connection
abruptly (RST both ways, no WebSocket close frame): a network cut. Runs on the caller's event
loop; backends must be loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_CHUNK = 1 << 16


@dataclass(eq=False)  # identity hash: kept in a set
class ProxiedConnection:
    backend: tuple[str, int]
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN: the peer sees a reset, not an EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(
        self,
        backends: Sequence[tuple[str, int] | int],
        *,
        port: int = 0,
        failover: bool = False,
        connect_timeout: float = 2.0,
    ) -> None:
        self._backends: list[tuple[str, int]] = []
        self.set_backends(backends)
        self._current = 0
        self._requested_port = port
        self.failover = failover
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self.open: set[ProxiedConnection] = set()
        self.accepted: list[tuple[str, int] | None] = []  # backend of each accepted connection
        self.port = 0

    # ------------------------------------------------------------ configuration
    def set_backends(self, backends: Sequence[tuple[str, int] | int]) -> None:
        out = []
        for b in backends:
            host, port = ("127.0.0.1", b) if isinstance(b, int) else b
            if host not in LOOPBACK:
                raise ValueError(f"backend {host}:{port} is not a loopback address")
            out.append((host, int(port)))
        if not out:
            raise ValueError("at least one backend is needed")
        self._backends = out
        self._current = 0

    @property
    def backends(self) -> list[tuple[str, int]]:
        return list(self._backends)

    @property
    def current(self) -> tuple[str, int]:
        return self._backends[self._current]

    def point_to(self, backend: int | tuple[str, int]) -> None:
        """Send new connections to backend number `backend`, or to the (host, port) given."""
        if isinstance(backend, tuple):
            self._current = self._backends.index(backend)
        elif 0 <= backend < len(self._backends):
            self._current = backend
        else:
            self._current = self._backends.index(("127.0.0.1", backend))

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def cut_all(self) -> int:
        """Drop every open proxied connection at once (RST both ways); how many there were."""
        conns = list(self.open)
        for c in conns:
            _abort(c.client)
            _abort(c.upstream)
            for t in c.tasks:
                t.cancel()
        self.open.clear()
        return len(conns)

    # ------------------------------------------------------------ forwarding
    async def _connect(self) -> tuple[tuple[str, int], asyncio.StreamReader, asyncio.StreamWriter]:
        order = [self._current]
        if self.failover:
            n = len(self._backends)
            order += [(self._current + i) % n for i in range(1, n)]
        error: Exception | None = None
        for i in order:
            host, port = self._backends[i]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.connect_timeout
                )
                return (host, port), reader, writer
            except (OSError, TimeoutError) as exc:
                error = exc
        raise ConnectionError(f"no backend accepted the connection: {error}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            backend, up_reader, up_writer = await self._connect()
        except ConnectionError:
            self.accepted.append(None)
            _abort(writer)  # like a balancer with no healthy backend: the client sees a reset
            return
        self.accepted.append(backend)
        conn = ProxiedConnection(backend, writer, up_writer)
        self.open.add(conn)
        loop = asyncio.get_running_loop()
        conn.tasks = [
            loop.create_task(self._pump(reader, up_writer)),
            loop.create_task(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            if conn in self.open:
                self.open.discard(conn)
                for w in (writer, up_writer):
                    with contextlib.suppress(Exception):
                        w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(_CHUNK):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()  # half-close: pass the FIN on, keep the other direction
        except (ConnectionError, OSError):
            _abort(dst)
