"""domain/wsframe.py: a real aiohttp client reads the frames we write straight to a server
connection's transport, at each length encoding (7-bit, 16-bit, 64-bit), and interleaved
with aiohttp's own frames."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from tracker_ws.domain.wsframe import text_frame

SIZES = [0, 1, 125, 126, 65_535, 65_536, 200_000]


def payload(size: int) -> bytes:
    return b"x" * size


async def test_aiohttp_reads_what_we_frame() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        for size in SIZES:
            request.transport.write(text_frame(payload(size)))
        await ws.send_str("aiohttp's own")
        request.transport.write(text_frame(b'{"last":true}'))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/", max_msg_size=0)
        got = [await asyncio.wait_for(ws.receive(), 5) for _ in range(len(SIZES) + 2)]
        await ws.close()
    assert all(m.type is WSMsgType.TEXT for m in got)
    assert [len(m.data) for m in got[: len(SIZES)]] == SIZES
    assert got[len(SIZES)].data == "aiohttp's own"
    assert got[-1].data == '{"last":true}'
