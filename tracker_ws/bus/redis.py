"""Redis backends (redis.asyncio) of the four bus interfaces, for one Redis or a Redis Cluster.

The four parts share one `RedisLink`: one client and connection pool, the key names
(bus/keys.py: byte-identical to earlier versions on a single Redis, hash-tagged on a cluster),
the gate of client reads, and one pub/sub subscription that carries deliveries, control
messages and the `events:*` input channels. Lua scripts live in bus/lua/ and are loaded once.

On a cluster (`redis+cluster://`) deliveries use sharded pub/sub: publish.lua SPUBLISHes on
`{ws}:ws:deliver:{instance}`, in the slot of its keys, and the listener SSUBSCRIBEs to it on
the node that owns that slot; control, reply and input channels stay regular (cluster-wide)
pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from tracker_ws.bus.base import (
    DEDUPE_TTL_S,
    HISTORY_CAP,
    HISTORY_TTL_S,
    STATE_SEEN_TTL_S,
    ConnectionEntry,
    DeliveryHandler,
    Outgoing,
    merge_history,
)
from tracker_ws.bus.control import Control
from tracker_ws.bus.fanout import Fanout, InputHandler
from tracker_ws.bus.keys import KeySpace
from tracker_ws.bus.presence import Presence
from tracker_ws.bus.store import Store
from tracker_ws.config import REDIS_CLUSTER_SCHEME, cluster_nodes
from tracker_ws.domain.errors import BackendUnavailable, ConfigError
from tracker_ws.domain.repeats import RepeatLimiter

log = logging.getLogger(__name__)

INPUT_PREFIX = "events:"
INPUT_PATTERN = INPUT_PREFIX + "*"
_RECONNECT_MIN_S = 0.05
_RECONNECT_MAX_S = 2.0
_HANDLER_LOG_EVERY_S = 10.0
_POOL_WAIT_S = 10.0

Client = aioredis.Redis | RedisCluster
MessageHandler = Callable[[bytes], None]


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


def make_client(url: str, max_connections: int) -> Client:
    """One client for the whole instance. A full pool makes callers wait for a connection
    (single Redis: up to _POOL_WAIT_S) instead of failing: a reconnect storm queues, it drops
    nobody. redis-py's cluster client has no blocking pool (a node's full pool raises); the
    read gate keeps client reads to half of it."""
    if url.startswith(REDIS_CLUSTER_SCHEME):
        try:
            nodes = cluster_nodes(url)
        except ValueError as exc:
            raise ConfigError(f"TRACKER_WS_REDIS_URL: {exc}") from None
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            max_connections=max_connections,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=_POOL_WAIT_S,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


async def _first_failure(*coros: Awaitable[None]) -> None:
    """Run the readers together; the first to fail stops the others and raises."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RedisLink:
    """What the Redis parts of one instance share: the client and its pool, the key names,
    the gate of client reads, and the one pub/sub subscription (its handlers are registered
    by the parts before `start`)."""

    def __init__(self, url: str, *, max_connections: int = 100, read_concurrency: int = 16) -> None:
        self.url = url
        self.cluster = url.startswith(REDIS_CLUSTER_SCHEME)
        self.keys = KeySpace(cluster=self.cluster)
        self.client: Client = make_client(url, max_connections)
        # Recovery and getState reads (one set per client) take at most this many connections,
        # so the publisher, the delivery listener and the write-behind always find one.
        self.reads = asyncio.Semaphore(max(1, min(read_concurrency, max_connections // 2)))
        self._channels: dict[bytes, MessageHandler] = {}
        self._sharded: set[bytes] = set()
        self.input_handler: InputHandler | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connected = False
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._listener_error: str | None = None  # why the subscription is down
        self._backoff = _RECONNECT_MIN_S
        self.handler_errors = 0
        self._handler_log = RepeatLimiter(_HANDLER_LOG_EVERY_S)

    def on_channel(self, channel: str, handler: MessageHandler, *, sharded: bool = False) -> None:
        key = channel.encode()
        self._channels[key] = handler
        if sharded:
            self._sharded.add(key)

    async def start(self) -> None:
        if self._listener is not None:
            return
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(ready), name="bus-listen")
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

    async def _listen(self, ready: asyncio.Event) -> None:
        """Keep the subscription alive whatever Redis answers: a BUSY or any other error reply
        kills only the pub/sub connection, never this task."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await self._subscribe_and_read(pubsub, ready)
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
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _RECONNECT_MAX_S)

    async def _subscribe_and_read(self, pubsub: PubSub, ready: asyncio.Event) -> None:
        # One connection for deliveries, control and replies on a single Redis: Redis keeps
        # their messages in PUBLISH order. A cluster reads the sharded delivery channel on
        # the node that owns its slot, the rest on one node (regular pub/sub is cluster-wide).
        plain = [c for c in self._channels if c not in self._sharded]
        sharded = isinstance(pubsub, ClusterPubSub) and bool(self._sharded)
        pending = len(plain) + 1 + (len(self._sharded) if sharded else 0)

        async def read(get: Callable[..., Awaitable[dict[str, Any] | None]]) -> None:
            nonlocal pending
            while True:
                msg = await get(timeout=5.0)
                if msg is None:
                    continue
                if msg["type"] in ("subscribe", "psubscribe", "ssubscribe"):
                    # Live once Redis confirmed them all (an error reply may come instead).
                    pending -= 1
                    if pending == 0:
                        self._subscribed()
                        ready.set()
                    continue
                self._dispatch(msg)

        await pubsub.subscribe(*plain)
        await pubsub.psubscribe(INPUT_PATTERN)
        if isinstance(pubsub, ClusterPubSub) and sharded:
            await pubsub.ssubscribe(*self._sharded)
            await _first_failure(read(pubsub.get_message), read(pubsub.get_sharded_message))
        else:
            await read(pubsub.get_message)

    def _subscribed(self) -> None:
        self._connected = True
        self._backoff = _RECONNECT_MIN_S
        if self._outage_since is not None:
            log.info(
                "Redis delivery subscription restored after %.1f s",
                time.monotonic() - self._outage_since,
            )
        self._outage_since = None
        self._listener_error = None

    def _dispatch(self, msg: dict[str, Any]) -> None:
        """One pub/sub message to its handler. A handler that raises loses that message
        only: the subscription (and every other message) must keep flowing."""
        try:
            if msg["type"] == "pmessage":
                handler = self.input_handler
                if handler is not None:
                    handler(msg["channel"].decode()[len(INPUT_PREFIX) :], msg["data"])
            elif msg["type"] in ("message", "smessage"):
                self._channels[msg["channel"]](msg["data"])
        except Exception:
            self.handler_errors += 1
            if self._handler_log.admit("handler", time.monotonic()) is not None:
                log.exception(
                    "a pub/sub message on %r failed (%d so far); skipped",
                    msg.get("channel"),
                    self.handler_errors,
                )

    async def stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        self._connected = False

    async def close(self) -> None:
        await self.stop_listening()
        await self.client.aclose()

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

    def script(self, name: str) -> AsyncScript:
        return self.client.register_script(load_lua(name))


class RedisFanout(Fanout):
    def __init__(self, link: RedisLink, instance_id: str) -> None:
        super().__init__(instance_id)
        self.link = link
        self.client = link.client
        self.keys = link.keys
        self._publish = link.script("publish.lua")
        self.max_seen = 0  # highest eventId published or received: the counter's floor
        self.channel = link.keys.deliver(instance_id)
        self._fixed_keys = [
            self.keys.event_id,
            self.keys.last_positions,
            self.keys.last_fix,
            self.keys.instances,
        ]
        self._send = "SPUBLISH" if link.cluster else "PUBLISH"

    def on_input(self, handler: InputHandler) -> None:
        super().on_input(handler)
        self.link.input_handler = handler

    async def start(self, on_deliver: DeliveryHandler) -> None:
        def deliver(data: bytes) -> None:
            records = parse_delivery(data)
            if records:
                self.max_seen = max(self.max_seen, records[-1][0])
            on_deliver(records)

        self.link.on_channel(self.channel, deliver, sharded=self.link.cluster)
        await self.link.start()

    async def close(self) -> None:
        await self.link.stop_listening()

    async def publish(self, items: Sequence[Outgoing]) -> list[int]:
        if not items:
            return []
        keys = list(self._fixed_keys)
        ks = self.keys
        for item in items:  # publish.lua reads them in this order
            if item.dedupe_id is not None:
                keys.append(ks.dedupe(item.dedupe_id))
            for stream in item.history:
                keys += (ks.history(stream), ks.floor(stream))
        args: list[int | bytes | str] = [
            len(items),
            DEDUPE_TTL_S,
            HISTORY_CAP,
            HISTORY_TTL_S,
            self.max_seen,
            pack_batch(items),
            ks.deliver_prefix,
            self._send,
        ]
        reply = await self._publish(keys=keys, args=args)
        ids = [int(i) for i in reply.split()]  # publish.lua: the ids in one string
        self.max_seen = max(self.max_seen, *ids)
        return ids

    async def last_positions(self, vehicle_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        ids = list(vehicle_ids)
        if not ids:
            return {}
        async with _session_read(self.link.reads, "reading last positions"):
            values = cast(
                list[bytes | None], await self.client.hmget(self.keys.last_positions, ids)
            )
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
        return self.link.connected

    @property
    def listener_state(self) -> str:
        return self.link.listener_state


class RedisStore(Store):
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.client = link.client
        self.keys = link.keys

    async def read_history(
        self, streams: Sequence[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        ks = self.keys
        async with (
            _session_read(self.link.reads, "reading history"),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for stream in streams:
                pipe.get(ks.floor(stream))
                pipe.xrange(ks.history(stream), min=f"{after_id + 1}-0", max="+", count=limit)
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

    async def save_states(self, states: Mapping[str, bytes], ttl_s: float) -> None:
        if not states:
            return
        ttl_ms = int(ttl_s * 1000)
        # A state per connection that subscribes: the bare command, not `pipe.set()`, whose
        # option handling costs 5.5 µs a call in redis-py 8.2 against 0.9 µs (S1 connects).
        async with self.client.pipeline(transaction=False) as pipe:
            for key, state in states.items():
                pipe.execute_command("SET", self.keys.state(key), state, "PX", ttl_ms)
                pipe.execute_command("SET", self.keys.state_seen(key), "1", "EX", STATE_SEEN_TTL_S)
            await pipe.execute()

    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        async with (
            _session_read(self.link.reads, "loading the saved state"),
            self.client.pipeline(transaction=False) as pipe,
        ):
            pipe.get(self.keys.state(key))
            pipe.exists(self.keys.state_seen(key))
            state, seen = await pipe.execute()
        return state, bool(seen) or state is not None

    async def refresh_states(self, keys: Sequence[str], ttl_s: float) -> None:
        if not keys:
            return
        ttl_ms = int(ttl_s * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(self.keys.state(key), ttl_ms)
            await pipe.execute()


class RedisPresence(Presence):
    def __init__(self, link: RedisLink, instance_id: str) -> None:
        super().__init__(instance_id)
        self.link = link
        self.client = link.client
        self.keys = link.keys
        self._cleanup = link.script("cleanup.lua")
        self._touch = link.script("touch.lua")

    def _own_keys(self, instance_id: str) -> list[str]:
        """cleanup.lua's KEYS: one instance's keys, on one slot."""
        ks = self.keys
        return [
            ks.instance_connections(instance_id),
            ks.instance_conn_users(instance_id),
            ks.instance_alive(instance_id),
        ]

    async def register_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        await self.apply_writes(entries, [])

    async def apply_writes(
        self, registers: Sequence[ConnectionEntry], unregisters: Sequence[tuple[str, str]]
    ) -> None:
        if not registers and not unregisters:
            return
        ks = self.keys
        conns = ks.instance_connections(self.instance_id)
        users = ks.instance_conn_users(self.instance_id)
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in registers:
                pipe.hset(ks.user_connections(entry.user_id), entry.conn_id, entry.value())
                pipe.hset(users, entry.conn_id, entry.user_id)
            if registers:
                pipe.sadd(conns, *(e.conn_id for e in registers))
            for conn_id, user_id in unregisters:
                pipe.hdel(ks.user_connections(user_id), conn_id)
                pipe.hdel(users, conn_id)
            if unregisters:
                pipe.srem(conns, *(c for c, _ in unregisters))
            await pipe.execute()

    async def touch_connections(self, entries: Sequence[ConnectionEntry]) -> None:
        if not entries:
            return
        ks = self.keys
        if not self.link.cluster:
            # A script, not a pipeline: one reply to parse instead of one per connection.
            args: list[str] = []
            for entry in entries:
                args += (entry.conn_id, entry.value())
            await self._touch(keys=[ks.user_connections(e.user_id) for e in entries], args=args)
            return
        # The users' hashes are spread over the slots: a pipeline, split by node.
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hset(ks.user_connections(entry.user_id), entry.conn_id, entry.value())
            await pipe.execute()

    async def user_connections(self, user_id: str) -> list[ConnectionEntry]:
        raw = cast(
            dict[bytes, bytes], await self.client.hgetall(self.keys.user_connections(user_id))
        )
        out = []
        for conn_id, value in raw.items():
            with contextlib.suppress(ValueError):
                out.append(ConnectionEntry.parse(conn_id.decode(), user_id, value.decode()))
        return out

    async def heartbeat(self, ttl_s: float) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.instance_alive(self.instance_id), "1", px=int(ttl_s * 1000))
            pipe.sadd(self.keys.instances, self.instance_id)
            await pipe.execute()

    async def is_registered(self) -> bool:
        return bool(await self.client.sismember(self.keys.instances, self.instance_id))

    async def instances(self) -> tuple[list[str], list[str]]:
        raw = cast(set[bytes], await self.client.smembers(self.keys.instances))
        members = sorted(m.decode() for m in raw)
        if not members:
            return [], []
        async with self.client.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.exists(self.keys.instance_alive(m))
            alive = await pipe.execute()
        live = [m for m, a in zip(members, alive, strict=True) if a]
        dead = [m for m, a in zip(members, alive, strict=True) if not a]
        return live, dead

    async def cleanup_instance(self, instance_id: str) -> int:
        # One survivor does the work; the lock expires if it dies halfway.
        if not await self.client.set(
            self.keys.janitor(instance_id), self.instance_id, nx=True, ex=30
        ):
            return -1
        return await self._forget(instance_id)

    async def deregister_instance(self) -> None:
        await self._forget(self.instance_id)

    async def _forget(self, instance_id: str) -> int:
        """cleanup.lua, then the users' hashes (other slots on a cluster) and the membership,
        then the list it read: each step can be done again by the next survivor."""
        own = self._own_keys(instance_id)
        flat = cast(list[bytes], await self._cleanup(keys=own, args=[]))
        pairs = list(zip(flat[0::2], flat[1::2], strict=True))
        async with self.client.pipeline(transaction=False) as pipe:
            for conn_id, user_id in pairs:
                pipe.hdel(self.keys.user_connections(user_id.decode()), conn_id)
            pipe.srem(self.keys.instances, instance_id)
            await pipe.execute()
        await self.client.delete(self.keys.instance_conn_users(instance_id))
        return len(pairs)


class RedisControl(Control):
    def __init__(self, link: RedisLink, instance_id: str) -> None:
        super().__init__(instance_id)
        self.client = link.client
        self.keys = link.keys
        # Received on the link's one subscription, started with the fan-out's.
        link.on_channel(link.keys.control(instance_id), self._on_control)
        link.on_channel(link.keys.reply(instance_id), self._on_reply)

    async def _send_control(self, target: str, data: bytes) -> None:
        await self.client.publish(self.keys.control(target), data)

    async def _send_reply(self, target: str, data: bytes) -> None:
        await self.client.publish(self.keys.reply(target), data)
