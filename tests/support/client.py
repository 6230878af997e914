"""A test WebSocket client: waits for conditions, never sleeps blindly."""

from __future__ import annotations

import asyncio
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
    ) -> WsClient:
        session = aiohttp.ClientSession()
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
