"""`python -m tracker_ws listen`: a terminal client that subscribes and prints what arrives."""

from __future__ import annotations

import sys
import time

import aiohttp
import orjson


def _line(msg: dict[str, object]) -> str:
    kind = msg.get("type")
    if kind == "position":
        pos = msg["position"]
        assert isinstance(pos, dict)
        return (
            f"position  #{msg['eventId']} {msg['vehicleId']} "
            f"{pos['lat']:.5f},{pos['lon']:.5f} {pos['speed']} km/h"
        )
    if kind == "positionBatch":
        positions = msg["positions"]
        assert isinstance(positions, list)
        names = ", ".join(f"{p['vehicleName']} ({p['status']})" for p in positions[:5])
        more = f" +{len(positions) - 5}" if len(positions) > 5 else ""
        return f"batch     #{msg['eventId']} {len(positions)} vehicles: {names}{more}"
    return orjson.dumps(msg).decode()


async def listen(
    port: int,
    token: str,
    vehicles: list[str] | None,
    host: str = "127.0.0.1",
    duration: float = 0.0,
) -> int:
    url = f"ws://{host}:{port}/ws?token={token}"
    flt: dict[str, object] = {"type": "byIds", "ids": vehicles} if vehicles else {"type": "all"}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url)
        except aiohttp.WSServerHandshakeError as exc:
            print(f"rejected: {await _refusal(session, url, exc)}", file=sys.stderr)
            return 1
        except aiohttp.ClientConnectionError as exc:
            print(f"cannot connect to {host}:{port}: {exc}", file=sys.stderr)
            return 1
        async with ws:
            return await _follow(ws, flt, started, duration)


async def _refusal(
    session: aiohttp.ClientSession, url: str, exc: aiohttp.WSServerHandshakeError
) -> str:
    """The server's JSON error for a refused upgrade. The handshake error carries no body,
    and the server checks the token before the upgrade, so a plain GET gets the same answer."""
    try:
        async with session.get(url) as resp:
            body = orjson.loads(await resp.read())
        return f"{resp.status} {body['code']}: {body['message']}"
    except (aiohttp.ClientError, orjson.JSONDecodeError, KeyError, TypeError):
        return f"{exc.status} {exc.message}"


async def _follow(
    ws: aiohttp.ClientWebSocketResponse, flt: dict[str, object], started: float, duration: float
) -> int:
    await ws.send_str(
        orjson.dumps({"type": "subscribe", "subscriptionType": "vehicles", "filter": flt}).decode()
    )
    while not duration or time.monotonic() - started < duration:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            print(f"closed: {ws.close_code} {msg.extra or ''}", file=sys.stderr)
            return 1
        print(_line(orjson.loads(msg.data)), flush=True)
    return 0
