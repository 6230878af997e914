"""web/wsresponse.SessionSocket on a real aiohttp server: the session is told to stop writing
before aiohttp sends its close frame, on every path that sends one — the peer's close frame,
a protocol error, and a close of our own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from tracker_ws.web.wsresponse import SessionSocket

# What the server did after the handshake: read until the peer's close, or close itself.
Then = Callable[[SessionSocket], Awaitable[None]]


async def _read_until_closed(ws: SessionSocket) -> None:
    while (await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
        pass


async def _close_ourselves(ws: SessionSocket) -> None:
    await ws.close(code=4001, message=b"token expired")


async def _run(
    then: Then, client_side: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]
) -> list[bool]:
    """`ws.closed` each time the hook ran: first False (before aiohttp marked the response
    closed and wrote its close frame); later calls of close() find it closed and send nothing."""
    seen: list[bool] = []
    done = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = SessionSocket(max_msg_size=64)

        class Writer:
            def stop_writing(self) -> None:
                seen.append(ws.closed)

        ws.writer = Writer()
        await ws.prepare(request)
        await then(ws)
        done.set_result(None)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws")
        await client_side(ws)
        await asyncio.wait_for(done, 5)
        await ws.close()
    return seen


async def test_the_peers_close_frame() -> None:
    async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.close()

    assert (await _run(_read_until_closed, close))[:1] == [False]


async def test_a_protocol_error() -> None:
    async def too_big(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str("x" * 100)  # over max_msg_size: aiohttp closes with 1009
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009

    assert (await _run(_read_until_closed, too_big))[:1] == [False]


async def test_a_close_of_our_own() -> None:
    async def expect_close(ws: aiohttp.ClientWebSocketResponse) -> None:
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 4001

    assert (await _run(_close_ourselves, expect_close))[:1] == [False]
