"""One instance's web side, assembled from its Runtime: routes, control commands, delivery.

The Faust worker (app.py) calls `add_routes`, `connect_runtime` and `start_delivery` from its
hooks. `in_process_app` puts the same pieces on a plain aiohttp Application for the
in-process adapter tests (tests/support/inproc.py): one instance on the memory bus, without
Faust, Kafka or Redis, so a session, hub or recovery behaviour costs milliseconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tracker_ws.web import admin, control, health
from tracker_ws.web.keys import RUNTIME
from tracker_ws.web.session import ws_handler

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

STATIC_DIR = Path(__file__).parent / "static"


def add_routes(aio: web.Application, rt: Runtime) -> None:
    """The public routes of one instance (`/ws`, `/health`, `/metrics`, the admin API, the
    demo page) on `aio`, every handler reading `rt` from the application."""
    aio[RUNTIME] = rt
    r = aio.router
    r.add_get("/ws", ws_handler)
    r.add_get("/health", health.health)
    r.add_get("/metrics", health.metrics)
    admin.add_routes(aio)
    if STATIC_DIR.is_dir():
        r.add_get("/demo", _demo_page)
        r.add_static("/static/", STATIC_DIR)


def connect_runtime(rt: Runtime) -> None:
    """Answer control commands (stats, describe, kick) and report how many connections an
    event carrying a request id reached (admin broadcasts)."""
    rt.bus.control.on_command(control.make_handler(rt))

    def reply(target: str, req: str, payload: dict[str, Any]) -> None:
        asyncio.get_running_loop().create_task(rt.bus.control.reply(target, req, payload))

    rt.hub.reply = reply


async def start_delivery(rt: Runtime) -> None:
    """Receive this instance's deliveries into the hub; start the registry/state writer."""
    await rt.bus.fanout.start(rt.hub.deliver)
    rt.writeback.start()


async def _demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def in_process_app(rt: Runtime) -> web.Application:
    """One instance's handlers on a plain Application, started and stopped with it: for the
    adapter tests only. The runtime must use the memory bus (TRACKER_WS_REDIS_URL=memory://):
    nothing here would keep a Redis listener healthy. Its partition owners (the Faust agents)
    are not part of it: whoever runs it publishes on the bus what they would."""
    if rt.settings.uses_redis:
        raise ValueError("in_process_app needs TRACKER_WS_REDIS_URL=memory://")
    aio = web.Application()
    add_routes(aio, rt)
    connect_runtime(rt)

    async def start(_: web.Application) -> None:
        await start_delivery(rt)
        rt.ready = True

    async def stop(_: web.Application) -> None:
        await rt.writeback.stop()
        await rt.bus.close()

    aio.on_startup.append(start)
    aio.on_cleanup.append(stop)
    return aio
