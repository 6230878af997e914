"""Redis backend (redis.asyncio). Lua scripts live in bus/lua/ and are loaded once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker_ws.bus.base import Bus, DeliveryHandler, Outgoing

log = logging.getLogger(__name__)

EVENT_ID_KEY = "ws:event_id"
LAST_POSITIONS_KEY = "ws:last_positions"
_RECONNECT_MAX_S = 2.0


def load_lua(name: str) -> str:
    return resources.files("tracker_ws.bus").joinpath("lua", name).read_text(encoding="utf-8")


def parse_delivery(data: bytes) -> list[tuple[int, bytes]]:
    """Inverse of publish.lua's message format."""
    out = []
    for line in data.split(b"\n"):
        if line:
            sp = line.index(b" ")
            out.append((int(line[:sp]), line[sp + 1 :]))
    return out


class RedisBus(Bus):
    def __init__(self, url: str, instance_id: str) -> None:
        super().__init__(instance_id)
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self._publish = self.client.register_script(load_lua("publish.lua"))
        self._listener: asyncio.Task[None] | None = None
        self._connected = False
        self.channel = f"ws:deliver:{instance_id}"

    async def start(self, on_deliver: DeliveryHandler) -> None:
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(on_deliver, ready), name="bus-listen")
        # Wait for the first subscription so nothing published after start() is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=10)

    async def _listen(self, on_deliver: DeliveryHandler, ready: asyncio.Event) -> None:
        backoff = 0.05
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._connected = True
                ready.set()
                backoff = 0.05
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg["type"] == "message":
                        on_deliver(parse_delivery(msg["data"]))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self._connected:
                    log.warning("Redis delivery subscription lost: %s; reconnecting", exc)
                self._connected = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Reconnect backoff: nothing to await but time while Redis is away.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        self._connected = False
        await self.client.aclose()

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        if not items:
            return []
        args: list[Any] = [len(items)]
        for item in items:
            args.append(len(item.targets))
            args.extend(item.targets)
            args.append(item.vehicle_id or "")
            args.append(item.payload)
        first = int(await self._publish(keys=[EVENT_ID_KEY, LAST_POSITIONS_KEY], args=args))
        return list(range(first, first + len(items)))

    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        ids = list(vehicle_ids)
        if not ids:
            return {}
        values = cast(list[bytes | None], await self.client.hmget(LAST_POSITIONS_KEY, ids))
        out: dict[str, tuple[int, bytes]] = {}
        for vid, raw in zip(ids, values, strict=True):
            if raw:
                sp = raw.index(b" ")
                out[vid] = (int(raw[:sp]), raw[sp + 1 :])
        return out

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), timeout=1.0))
        except (RedisError, OSError, TimeoutError):
            return False

    @property
    def connected(self) -> bool:
        return self._connected
