"""A test WebSocket client: waits for conditions, never sleeps blindly."""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

Msg = dict[str, Any]


class WsClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self._session = session
        self.received: list[Msg] = []  # every text message, in order
        self._cursor = 0
        self.closed_code: int | None = None
        # The code in the peer's close frame (RFC 6455 §7.1.5). aiohttp's close_code turns
        # 1006 when the peer drops TCP before our close reply is written.
        self.close_frame_code: int | None = None

    @classmethod
    async def connect(
        cls,
        base_ws_url: str,
        token: str | None,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        protocols: tuple[str, ...] = (),
        ssl: ssl_.SSLContext | None = None,
    ) -> WsClient:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl) if ssl else None)
        url = base_ws_url + ("?token=" + token if token else "?")
        if query:
            url += "&" + query
        try:
            ws = await session.ws_connect(url, headers=headers, protocols=protocols, autoping=True)
        except BaseException:
            await session.close()
            raise
        client = cls(ws, session)
        hello = await client.next_of("connected")
        assert hello["eventId"] == 0
        return client

    async def send(self, msg: Msg | str | bytes) -> None:
        if isinstance(msg, dict):
            await self.ws.send_str(orjson.dumps(msg).decode())
        elif isinstance(msg, bytes):
            await self.ws.send_bytes(msg)
        else:
            await self.ws.send_str(msg)

    async def _read_one(self, timeout: float) -> Msg | None:
        # aiohttp's receive(timeout=) restarts its timer after every ping it answers itself,
        # so on a connection the server keeps pinging it would never time out: bound the call.
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            data: Msg = orjson.loads(msg.data)
            self.received.append(data)
            return data
        if msg.type is aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
            self.close_frame_code = msg.data
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            self.closed_code = self.ws.close_code
            return None
        if msg.type is aiohttp.WSMsgType.ERROR:
            self.closed_code = self.ws.close_code
            return None
        return {}

    async def wait_for(
        self, pred: Callable[[Msg], bool], timeout: float = 10.0, what: str = ""
    ) -> Msg:
        """The next message (after the cursor) matching `pred`; skips and keeps the others."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.received):
                m = self.received[self._cursor]
                self._cursor += 1
                if pred(m):
                    return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what or pred}; got {self.received[-5:]}"
                )
            try:
                got = await self._read_one(remaining)
            except TimeoutError:
                continue
            if got is None:
                raise AssertionError(
                    f"connection closed ({self.closed_code}) while waiting for {what or pred}"
                )

    async def next_of(self, mtype: str, timeout: float = 10.0) -> Msg:
        return await self.wait_for(lambda m: m.get("type") == mtype, timeout, mtype)

    async def request(self, msg: Msg, reply_type: str, timeout: float = 10.0) -> Msg:
        await self.send(msg)
        return await self.next_of(reply_type, timeout)

    async def subscribe(self, stype: str, flt: Msg, timeout: float = 10.0) -> Msg:
        await self.send({"type": "subscribe", "subscriptionType": stype, "filter": flt})
        return await self.wait_for(
            lambda m: m.get("type") in ("subscribed", "error"), timeout, "subscribed/error"
        )

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        while self.closed_code is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("connection did not close")
            try:
                await self._read_one(remaining)
            except TimeoutError:
                continue
        return self.closed_code

    def positions(self) -> list[tuple[int, str, Msg]]:
        """(eventId or batch eventId, vehicleId, position) of every position received so far."""
        out = []
        for m in self.received:
            if m.get("type") == "position":
                out.append((m["eventId"], m["vehicleId"], m["position"]))
            elif m.get("type") == "positionBatch" and m["eventId"]:
                out.extend((m["eventId"], p["vehicleId"], p["position"]) for p in m["positions"])
        return out

    def vehicles_seen(self) -> set[str]:
        return {v for _, v, _ in self.positions()}

    async def wait_event_id_at_least(self, event_id: int, timeout: float = 10.0) -> None:
        """Every instance receives events in eventId order, so once this client saw an id
        ≥ `event_id`, anything it was owed up to there has arrived: an exact negative check."""
        await self.wait_for(
            lambda m: m.get("eventId", 0) >= event_id, timeout, f"eventId >= {event_id}"
        )

    async def close(self) -> None:
        await self.ws.close()
        await self._session.close()


async def gather_close(*clients: WsClient) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# --------------------------------------------------------------------------------------------
# A client that reconnects like the seed §8 JS client (recovery and rolling-restart tests)

REPLAYABLE_TYPES = frozenset({"notification", "geoEvent", "systemAlert"})


def is_replayable(msg: Msg) -> bool:
    """Geo events, notifications (incl. maintenance) and alerts with a real eventId: the
    events a reconnect must replay (a drain alert carries eventId 0 and is not one)."""
    return msg.get("type") in REPLAYABLE_TYPES and int(msg.get("eventId") or 0) > 0


class ConnectFailed(Exception):
    """Refused (HTTP error, connection refused) or closed before `connected` arrived."""

    def __init__(self, why: str, close_code: int | None = None) -> None:
        super().__init__(why)
        self.close_code = close_code


class Connection:
    """One WebSocket connection of a SeedLikeClient and everything it received."""

    def __init__(self, url: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.url = url
        self.ws = ws
        self.messages: list[tuple[float, Msg]] = []  # (monotonic arrival, message)
        self.hello: Msg | None = None
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.done = asyncio.Event()  # the reader has seen the end of the connection
        self._hello_or_done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return not self.done.is_set()

    def abort(self) -> None:
        """A network cut: drop the TCP connection, no close frame."""
        self.ws._writer.transport.abort()  # aiohttp has no public handle on the transport


class SeedLikeClient:
    """Behaves like the seed's TrackerWebSocket across reconnects: remembers max(eventId) of
    everything it received, connects with `lastEventId=` that, and re-sends all its subscribe
    messages on every open. Every connection keeps what it received with arrival times; one
    reader task per connection. `pause()` stops reading (a slow consumer), `resume()` goes on.
    """

    def __init__(
        self,
        token: str,
        subscriptions: list[tuple[str, Msg]],
        *,
        name: str = "",
        query: str = "",
    ) -> None:
        self.token = token
        self.subscriptions = subscriptions
        self.name = name
        self.query = query
        self.connections: list[Connection] = []
        self.last_event_id = 0
        self._reading = asyncio.Event()
        self._reading.set()
        self._changed = asyncio.Event()  # set on every message and every connection end
        self._session: aiohttp.ClientSession | None = None

    @property
    def conn(self) -> Connection:
        return self.connections[-1]

    def messages(self) -> list[Msg]:
        """Every message of every connection, in arrival order."""
        return [m for c in self.connections for _, m in c.messages]

    def markers(self) -> list[str]:
        """Markers (tests.support.fleet.marker_of) of the replayable events received."""
        from tests.support.fleet import marker_of

        return [mk for mk in map(marker_of, self.messages()) if mk is not None]

    def last_positions(self) -> dict[str, float]:
        """vehicleId -> lat of the last position received (live or a snapshot batch)."""
        out: dict[str, float] = {}
        for m in self.messages():
            if m.get("type") == "position":
                out[m["vehicleId"]] = m["position"]["lat"]
            elif m.get("type") == "positionBatch":
                for p in m["positions"]:
                    out[p["vehicleId"]] = p["position"]["lat"]
        return out

    def replies(self, mtype: str = "subscribed") -> int:
        """How many `mtype` messages the current connection got."""
        return sum(m.get("type") == mtype for _, m in self.conn.messages)

    async def open(self, ws_url: str, timeout: float = 10.0) -> Msg:
        """Connect (with lastEventId once it saw one), wait for `connected`, send the
        subscribes; returns `connected`. Raises ConnectFailed."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{ws_url}?token={self.token}"
        if self.last_event_id:
            url += f"&lastEventId={self.last_event_id}"
        if self.query:
            url += "&" + self.query
        try:
            async with asyncio.timeout(timeout):
                ws = await self._session.ws_connect(url, autoping=True)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        conn = Connection(url, ws)
        self.connections.append(conn)
        conn.task = asyncio.get_running_loop().create_task(self._read(conn))
        try:
            async with asyncio.timeout(timeout):
                await conn._hello_or_done.wait()
        except TimeoutError:
            conn.abort()
            raise ConnectFailed("no `connected` message") from None
        if conn.hello is None:
            raise ConnectFailed(f"closed ({conn.close_code}) before `connected`", conn.close_code)
        for stype, flt in self.subscriptions:
            await self.send({"type": "subscribe", "subscriptionType": stype, "filter": flt})
        return conn.hello

    async def send(self, msg: Msg) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.conn.ws.send_str(orjson.dumps(msg).decode())

    async def _read(self, conn: Connection) -> None:
        ws = conn.ws
        try:
            while True:
                await self._reading.wait()
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    data: Msg = orjson.loads(msg.data)
                    conn.messages.append((time.monotonic(), data))
                    self.last_event_id = max(self.last_event_id, int(data.get("eventId") or 0))
                    if data.get("type") == "connected" and conn.hello is None:
                        conn.hello = data
                        conn._hello_or_done.set()
                    self._changed.set()
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            conn.close_code = ws.close_code if ws.close_code is not None else 1006
            conn.closed_at = time.monotonic()
            conn.done.set()
            conn._hello_or_done.set()
            self._changed.set()

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    async def wait_closed(self, timeout: float = 15.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.conn.done.wait()
        return self.conn.close_code

    async def wait_for(
        self, pred: Callable[[], bool], timeout: float = 10.0, what: str = ""
    ) -> None:
        """Until `pred()` holds; re-checked whenever a message arrives or a connection ends."""
        deadline = time.monotonic() + timeout
        while not pred():
            self._changed.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._changed.wait()
            except TimeoutError:
                if pred():
                    return
                raise AssertionError(
                    f"{self.name}: timed out after {timeout:g}s waiting for {what or pred}"
                ) from None

    async def close(self) -> None:
        """A clean close by the client (1000); the reader sees it end."""
        if self.connections and self.conn.open:
            with contextlib.suppress(Exception):
                await self.conn.ws.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.conn.done.wait()

    async def shutdown(self) -> None:
        await self.close()
        for c in self.connections:
            if c.task is not None and not c.task.done():
                c.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.task
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------------------------
# A WebSocket upgrade request read as plain HTTP (refusals before the upgrade)


async def upgrade_response(
    base_url: str, target: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Msg | None]:
    """(status, JSON body or None) of `GET target` with WebSocket upgrade headers, on a raw
    socket: `target` goes on the request line byte for byte (no client-side URL quoting), and
    a 101 is reported as such instead of being taken over by a WebSocket client."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(timeout):
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            raw = await reader.readexactly(length) if status != 101 and length else b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return status, (orjson.loads(raw) if raw else None)
