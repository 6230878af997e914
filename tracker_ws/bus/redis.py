"""Redis backend (redis.asyncio). Lua scripts live in bus/lua/ and are loaded once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker_ws.bus.base import (
    DEDUPE_TTL_S,
    HISTORY_CAP,
    HISTORY_TTL_S,
    STATE_SEEN_TTL_S,
    Bus,
    ConnectionEntry,
    DeliveryHandler,
    Outgoing,
    merge_history,
)
from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws.domain.repeats import RepeatLimiter

log = logging.getLogger(__name__)

EVENT_ID_KEY = "ws:event_id"
LAST_POSITIONS_KEY = "ws:last_positions"
LAST_FIX_KEY = "ws:last_fix_ms"
INSTANCES_KEY = "ws:instances"
INPUT_PREFIX = "events:"
INPUT_PATTERN = INPUT_PREFIX + "*"
_RECONNECT_MIN_S = 0.05
_RECONNECT_MAX_S = 2.0
_HANDLER_LOG_EVERY_S = 10.0
_POOL_WAIT_S = 10.0


@contextlib.asynccontextmanager
async def _session_read(gate: asyncio.Semaphore, what: str) -> AsyncIterator[None]:
    """A read on a client's behalf: queued behind `gate`; any Redis failure becomes
    BackendUnavailable, which the session turns into an answer instead of a dropped socket."""
    async with gate:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def load_lua(name: str) -> str:
    return resources.files("tracker_ws.bus").joinpath("lua", name).read_text(encoding="utf-8")


def parse_delivery(data: bytes) -> list[tuple[int, bytes]]:
    """Inverse of publish.lua's message format: lines of "<eventId> <payload>\n"."""
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the text after the final newline
    # A record's payload is JSON (never a newline in it, never an empty line).
    return [(int(ident), payload) for ident, payload in (line.split(b" ", 1) for line in lines)]


def pack_batch(items: Sequence[Outgoing]) -> bytes:
    """publish.lua's batch argument: the items in one string (see the script's header).
    A single argument: redis-py's command packing costs per argument, and ~8 per item made
    it the larger part of a publish."""
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        vehicle = item.vehicle_id or ""
        dedupe = item.dedupe_id or ""
        targets = item.targets
        history = item.history
        fix = "-" if item.fix_ms is None else item.fix_ms
        payload = item.payload
        if len(targets) == 1 and not history:  # a position: the common case
            target = targets[0]
            text = f"{vehicle}{dedupe}{target}"
            if text.isascii():  # str lengths are byte lengths
                append(
                    f"1 0 {fix} {len(vehicle)} {len(dedupe)} {len(payload)} {len(target)}\n"
                    f"{text}".encode()
                )
                append(payload)
                continue
        strings = [s.encode() for s in (vehicle, dedupe, *targets, *history)]
        lengths = "".join([f" {len(s)}" for s in strings[2:]])
        append(
            f"{len(targets)} {len(history)} {fix} {len(strings[0])} {len(strings[1])}"
            f" {len(payload)}{lengths}\n".encode()
        )
        parts.extend(strings)
        append(payload)
    return b"".join(parts)


class RedisBus(Bus):
    def __init__(
        self, url: str, instance_id: str, *, max_connections: int = 100, read_concurrency: int = 16
    ) -> None:
        super().__init__(instance_id)
        self.url = url
        # A full pool makes callers wait for a connection (up to _POOL_WAIT_S) instead of
        # failing with MaxConnectionsError: a reconnect storm queues, it drops nobody.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=_POOL_WAIT_S,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
        self.client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        # Recovery and getState reads (one set per client) take at most this many connections,
        # so the publisher, the delivery listener and the write-behind always find one.
        self._reads = asyncio.Semaphore(max(1, min(read_concurrency, max_connections // 2)))
        self._publish = self.client.register_script(load_lua("publish.lua"))
        self._cleanup = self.client.register_script(load_lua("cleanup.lua"))
        self._touch = self.client.register_script(load_lua("touch.lua"))
        self._listener: asyncio.Task[None] | None = None
        self.max_seen = 0  # highest eventId published or received: the counter's floor
        self._connected = False
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._listener_error: str | None = None  # why the subscription is down
        self.handler_errors = 0
        self._handler_log = RepeatLimiter(_HANDLER_LOG_EVERY_S)
        self.channel = f"ws:deliver:{instance_id}"
        # One pub/sub connection for all three: Redis keeps their messages in PUBLISH order.
        self.control_channel = f"ws:control:{instance_id}"
        self.reply_channel = f"ws:reply:{instance_id}"
        self._deliver_b = self.channel.encode()
        self._control_b = self.control_channel.encode()

    async def start(self, on_deliver: DeliveryHandler) -> None:
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(on_deliver, ready), name="bus-listen")
        self._listener.add_done_callback(self._listener_done)
        # Wait for the first subscription so nothing published after start() is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=10)

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        self._connected = False
        if not task.cancelled() and task.exception() is not None:
            # Should never happen (_listen catches every Exception); if it does, say so:
            # /health reports the dead listener too.
            log.error("Redis delivery listener died", exc_info=task.exception())

    async def _listen(self, on_deliver: DeliveryHandler, ready: asyncio.Event) -> None:
        """Keep the delivery subscription alive whatever Redis answers: a BUSY or any other
        error reply kills only the pub/sub connection, never this task."""
        backoff = _RECONNECT_MIN_S
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel, self.control_channel, self.reply_channel)
                await pubsub.psubscribe(INPUT_PATTERN)
                # Live once Redis confirmed all four (an error reply may come instead).
                pending = 4
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    if msg["type"] in ("subscribe", "psubscribe"):
                        pending -= 1
                        if pending == 0:
                            self._subscribed()
                            ready.set()
                            backoff = _RECONNECT_MIN_S
                        continue
                    self._dispatch(msg, on_deliver)
            except Exception as exc:
                self._connected = False
                self._listener_error = f"{type(exc).__name__}: {exc}"
                if self._outage_since is None:  # one warning per outage
                    self._outage_since = time.monotonic()
                    log.warning(
                        "Redis delivery subscription lost: %s; resubscribing", self._listener_error
                    )
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Reconnect backoff: nothing to await but time while Redis is away or busy.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    def _subscribed(self) -> None:
        self._connected = True
        if self._outage_since is not None:
            log.info(
                "Redis delivery subscription restored after %.1f s",
                time.monotonic() - self._outage_since,
            )
        self._outage_since = None
        self._listener_error = None

    def _dispatch(self, msg: dict[str, Any], on_deliver: DeliveryHandler) -> None:
        """One pub/sub message to its handler. A handler that raises loses that message
        only: the subscription (and every other message) must keep flowing."""
        try:
            if msg["type"] == "pmessage":
                handler = getattr(self, "_input_handler", None)
                if handler is not None:
                    handler(msg["channel"].decode()[len(INPUT_PREFIX) :], msg["data"])
            elif msg["type"] == "message":
                channel = msg["channel"]
                if channel == self._deliver_b:
                    records = parse_delivery(msg["data"])
                    if records:
                        self.max_seen = max(self.max_seen, records[-1][0])
                    on_deliver(records)
                elif channel == self._control_b:
                    self._on_control(msg["data"])
                else:
                    self._on_reply(msg["data"])
        except Exception:
            self.handler_errors += 1
            if self._handler_log.admit("handler", time.monotonic()) is not None:
                log.exception(
                    "a pub/sub message on %r failed (%d so far); skipped",
                    msg.get("channel"),
                    self.handler_errors,
                )

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
        args: list[int | bytes] = [
            len(items),
            DEDUPE_TTL_S,
            HISTORY_CAP,
            HISTORY_TTL_S,
            self.max_seen,
            pack_batch(items),
        ]
        reply = await self._publish(
            keys=[EVENT_ID_KEY, LAST_POSITIONS_KEY, LAST_FIX_KEY, INSTANCES_KEY], args=args
        )
        ids = [int(i) for i in reply.split()]  # publish.lua: the ids in one string
        self.max_seen = max(self.max_seen, *ids)
        return ids

    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        ids = list(vehicle_ids)
        if not ids:
            return {}
        async with _session_read(self._reads, "reading last positions"):
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
        return self._connected and self._listener is not None and not self._listener.done()

    @property
    def listener_state(self) -> str:
        task = self._listener
        if task is None:
            return "not started"
        if task.done():
            exc = None if task.cancelled() else task.exception()
            return f"dead: {type(exc).__name__}: {exc}" if exc is not None else "dead: stopped"
        if self._connected:
            return "ok"
        return f"resubscribing: {self._listener_error or 'connecting'}"

    # ------------------------------------------------------------ recovery
    async def read_history(
        self, streams: Sequence[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        async with (
            _session_read(self._reads, "reading history"),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for stream in streams:
                pipe.get(f"{stream}:floor")
                pipe.xrange(stream, min=f"{after_id + 1}-0", max="+", count=limit)
            raw = await pipe.execute()
        trimmed = False
        chunks = []
        for floor, entries in zip(raw[0::2], raw[1::2], strict=True):
            if floor is not None and int(floor) > after_id:
                trimmed = True
            chunks.append(
                [(int(entry_id.split(b"-")[0]), fields[b"e"]) for entry_id, fields in entries]
            )
        return merge_history(chunks, limit), trimmed

    async def save_state(self, key: str, state: bytes, ttl_s: float) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"ws:state:{key}", state, px=int(ttl_s * 1000))
            pipe.set(f"ws:state:{key}:seen", "1", ex=STATE_SEEN_TTL_S)
            await pipe.execute()

    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        async with (
            _session_read(self._reads, "loading the saved state"),
            self.client.pipeline(transaction=False) as pipe,
        ):
            pipe.get(f"ws:state:{key}")
            pipe.exists(f"ws:state:{key}:seen")
            state, seen = await pipe.execute()
        return state, bool(seen) or state is not None

    async def apply_writes(
        self,
        registers: Sequence[ConnectionEntry],
        unregisters: Sequence[tuple[str, str]],
        states: Mapping[str, bytes],
        state_ttl_s: float,
    ) -> None:
        conns, users, _, _ = self._instance_keys(self.instance_id)
        ttl_ms = int(state_ttl_s * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in registers:
                pipe.hset(f"ws:conn:user:{entry.user_id}", entry.conn_id, entry.value())
                pipe.hset(users, entry.conn_id, entry.user_id)
            if registers:
                pipe.sadd(conns, *(e.conn_id for e in registers))
            for conn_id, user_id in unregisters:
                pipe.hdel(f"ws:conn:user:{user_id}", conn_id)
                pipe.hdel(users, conn_id)
            if unregisters:
                pipe.srem(conns, *(c for c, _ in unregisters))
            for key, state in states.items():
                pipe.set(f"ws:state:{key}", state, px=ttl_ms)
                pipe.set(f"ws:state:{key}:seen", "1", ex=STATE_SEEN_TTL_S)
            await pipe.execute()

    # ------------------------------------------------------------ connection registry
    def _instance_keys(self, instance_id: str) -> list[str]:
        return [
            f"ws:instance:{instance_id}:connections",
            f"ws:instance:{instance_id}:conn_users",
            INSTANCES_KEY,
            f"ws:instance:{instance_id}:alive",
        ]

    async def register_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        conns, users, _, _ = self._instance_keys(self.instance_id)
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hset(f"ws:conn:user:{entry.user_id}", entry.conn_id, entry.value())
                pipe.sadd(conns, entry.conn_id)
                pipe.hset(users, entry.conn_id, entry.user_id)
            await pipe.execute()

    async def unregister_connection(self, conn_id: str, user_id: str) -> None:
        conns, users, _, _ = self._instance_keys(self.instance_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hdel(f"ws:conn:user:{user_id}", conn_id)
            pipe.srem(conns, conn_id)
            pipe.hdel(users, conn_id)
            await pipe.execute()

    async def touch_connections(
        self, entries: Sequence[tuple[ConnectionEntry, str]], state_ttl_s: float
    ) -> None:
        if not entries:
            return
        # A script, not a pipeline: one reply to parse instead of two per connection.
        args: list[Any] = [int(state_ttl_s * 1000)]
        for entry, state_key in entries:
            args += [entry.user_id, entry.conn_id, entry.value(), state_key]
        await self._touch(args=args)

    async def user_connections(self, user_id: str) -> list[ConnectionEntry]:
        raw = cast(dict[bytes, bytes], await self.client.hgetall(f"ws:conn:user:{user_id}"))
        out = []
        for conn_id, value in raw.items():
            with contextlib.suppress(ValueError):
                out.append(ConnectionEntry.parse(conn_id.decode(), user_id, value.decode()))
        return out

    # ------------------------------------------------------------ liveness
    async def heartbeat(self, ttl_s: float) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"ws:instance:{self.instance_id}:alive", "1", px=int(ttl_s * 1000))
            pipe.sadd(INSTANCES_KEY, self.instance_id)
            await pipe.execute()

    async def is_registered(self) -> bool:
        return bool(await self.client.sismember(INSTANCES_KEY, self.instance_id))

    async def instances(self) -> tuple[list[str], list[str]]:
        raw = cast(set[bytes], await self.client.smembers(INSTANCES_KEY))
        members = sorted(m.decode() for m in raw)
        if not members:
            return [], []
        async with self.client.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.exists(f"ws:instance:{m}:alive")
            alive = await pipe.execute()
        live = [m for m, a in zip(members, alive, strict=True) if a]
        dead = [m for m, a in zip(members, alive, strict=True) if not a]
        return live, dead

    async def cleanup_instance(self, instance_id: str) -> int:
        # One survivor does the work; the lock expires if it dies halfway.
        if not await self.client.set(f"ws:janitor:{instance_id}", self.instance_id, nx=True, ex=30):
            return -1
        keys = self._instance_keys(instance_id)
        return int(await self._cleanup(keys=keys, args=[instance_id]))

    async def deregister_instance(self) -> None:
        keys = self._instance_keys(self.instance_id)
        await self._cleanup(keys=keys, args=[self.instance_id])

    # ------------------------------------------------------------ control channel
    async def _send_control(self, target: str, data: bytes) -> None:
        await self.client.publish(f"ws:control:{target}", data)

    async def _send_reply(self, target: str, data: bytes) -> None:
        await self.client.publish(f"ws:reply:{target}", data)
