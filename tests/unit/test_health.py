"""/health must not say healthy while the Redis delivery listener is dead (issue 10.4)."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from redis.exceptions import ResponseError

from tracker_ws.bus.redis import RedisFanout, RedisLink
from tracker_ws.config import Settings
from tracker_ws.runtime import Runtime
from tracker_ws.web.health import health
from tracker_ws.web.keys import RUNTIME


class DyingListenerLink(RedisLink):
    """The delivery listener ends with an error reply (what BUSY did to the listener before
    issue 10.4). Nothing here connects anywhere."""

    async def _listen(self, ready: asyncio.Event) -> None:
        ready.set()
        raise ResponseError("BUSY Redis is busy running a script")


class AnsweringFanout(RedisFanout):
    """Redis answers PING."""

    async def ping(self) -> bool:
        return True


@pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")  # the app's own key
async def test_health_reports_a_dead_listener() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", instance_id="ws-unit")
    link = DyingListenerLink(settings.redis_url)
    fanout = AnsweringFanout(link, settings.instance_id)
    rt = Runtime.create(settings)
    bus = dataclasses.replace(rt.bus, fanout=fanout, link=link)
    rt = dataclasses.replace(rt, bus=bus, ready=True, broker_ok=True)
    app = web.Application()
    app[RUNTIME] = rt
    try:
        await fanout.start(lambda records: None)
        resp = await health(make_mocked_request("GET", "/health", app=app))
    finally:
        await bus.close()
    assert resp.status == 503
    assert isinstance(resp, web.Response) and resp.body is not None
    body = orjson.loads(resp.body)  # type: ignore[arg-type]
    assert body["status"] == "degraded", body
    assert body["listener"].startswith("dead:") and "BUSY" in body["listener"], body
