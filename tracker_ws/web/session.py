"""One WebSocket connection: authentication, the inbound protocol and the writer task.

Nothing else ever writes to the socket: producers push into the connection's Outbox and
set `_wake`; the writer task drains it (ARCHITECTURE §4). aiohttp's send waits for slow
peers, so a slow peer only ever blocks its own writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import WSMsgType, web

from tracker_ws.auth import extract_token
from tracker_ws.bus.base import ConnectionEntry
from tracker_ws.domain import envelope
from tracker_ws.domain.batching import Outbox
from tracker_ws.domain.errors import (
    AuthError,
    InvalidMessage,
    RateLimited,
    SubscriptionDenied,
    TrackerError,
    UnsupportedFrame,
)
from tracker_ws.domain.models import (
    Ack,
    ConnectionInfo,
    GetState,
    Ping,
    Sensors,
    Subscribe,
    Subscription,
    SubscriptionFilter,
    SubscriptionType,
    Unsubscribe,
    UserContext,
    VehicleStatus,
)
from tracker_ws.domain.permissions import Permissions
from tracker_ws.domain.protocol import (
    encode_batch_fragment,
    encode_connected,
    encode_error,
    encode_pong,
    encode_position_batch,
    encode_subscribed,
    encode_unsubscribed,
    now_ms,
    parse_client_message,
)
from tracker_ws.domain.ratelimit import AbuseTracker, TokenBucket
from tracker_ws.domain.subscriptions import SubscriptionSet

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOKEN_EXPIRED = 4002
CLOSE_SLOW_CONSUMER = 4009
CLOSE_KICKED = 4010

PLATFORMS = frozenset({"web", "mobile", "desktop"})


class Session:
    """Connection state. Slots keep the per-connection footprint small."""

    __slots__ = (
        "_closing",
        "_expiry",
        "_wake",
        "_writer",
        "abuse",
        "acked_event_id",
        "bucket",
        "conn_id",
        "connected_at",
        "info",
        "last_event_id",
        "last_seen",
        "outbox",
        "perms",
        "rt",
        "subs",
        "user",
        "ws",
    )

    def __init__(
        self, rt: Runtime, user: UserContext, ws: web.WebSocketResponse, info: ConnectionInfo
    ) -> None:
        s = rt.settings
        self.rt = rt
        self.conn_id = str(uuid.uuid4())
        self.user = user
        self.perms = Permissions(user)
        self.subs = SubscriptionSet(user.company_id, user.user_id)
        self.ws = ws
        self.info = info
        self.outbox = Outbox(s.queue_limit, s.flush_window_ms / 1000)
        self.bucket = TokenBucket(s.rate_per_second, s.rate_burst)
        self.abuse = AbuseTracker()
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self.last_event_id = 0
        self.acked_event_id = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closing = False

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------ outbound
    def push(self, frame: bytes) -> None:
        if not self.outbox.push(frame):
            self.rt.metrics.slow_consumers.labels(self.rt.metrics.instance).inc()
            self.close_soon(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._wake.set()

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None:
        self.outbox.push_position(vehicle_id, event_id, single, fragment)
        if event_id > self.last_event_id:
            self.last_event_id = event_id
        self._wake.set()

    def push_event(self, event_id: int, frame: bytes) -> None:
        """A replayable event (alert, geo event, notification): in order, never coalesced."""
        if event_id > self.last_event_id:
            self.last_event_id = event_id
        self.push(frame)

    def error(self, err: TrackerError, **extra: object) -> None:
        self.rt.metrics.error(err.code)
        self.push(encode_error(err.code, err.message, **cast(dict[str, Any], extra)))

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sent = self.rt.metrics.sent_position
        try:
            while True:
                await self._wake.wait()
                delay = self.outbox.delay(loop.time())
                if delay > 0:
                    # The flush window: coalesce positions that arrive meanwhile.
                    await asyncio.sleep(delay)
                frames = self.outbox.take(loop.time())
                if not self.outbox.has_work:
                    self._wake.clear()
                for frame in frames:
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
                sent.inc(len(frames))
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader sees the close and cleans up.
            log.debug("writer of %s stopped: %s", self.conn_id, exc)
            self.close_soon(CLOSE_GOING_AWAY, "write failed")

    def ping_soon(self) -> None:
        """A protocol ping; the peer's pong (or anything else it sends) proves it alive."""
        if not self._closing and not self.ws.closed:
            asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.ping()

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())

    # ------------------------------------------------------------ lifecycle
    async def run(self, last_event_id: int | None) -> None:
        rt = self.rt
        loop = asyncio.get_running_loop()
        rt.hub.register(self)
        entry = ConnectionEntry(
            self.conn_id,
            self.user.user_id,
            rt.settings.instance_id,
            int(self.connected_at * 1000),
            int(self.connected_at * 1000),
        )
        with contextlib.suppress(Exception):  # Redis away: the connection still works
            await rt.bus.register_connection(entry)
        if self.user.expires_at:
            delay = max(0.0, self.user.expires_at - time.time())
            self._expiry = loop.call_later(
                delay, self.close_soon, CLOSE_TOKEN_EXPIRED, "token expired"
            )
        self._writer = loop.create_task(self._write_loop(), name=f"writer-{self.conn_id}")
        recovered: bool | None = None
        reason: str | None = None
        if last_event_id:
            # Exact recovery arrives with the recovery work; until then say so honestly.
            recovered, reason = False, "no_state"
        self.push(
            encode_connected(
                self.conn_id,
                server_time_ms=now_ms(),
                recovered=recovered,
                reason=reason,
                last_event_id=last_event_id,
            )
        )
        try:
            await self._read_loop()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            rt.hub.unregister(self)
            with contextlib.suppress(Exception):
                await rt.bus.unregister_connection(self.conn_id, self.user.user_id)
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._writer

    async def _read_loop(self) -> None:
        ws = self.ws
        metrics = self.rt.metrics
        while True:
            msg = await ws.receive()
            self.last_seen = time.monotonic()
            if msg.type is WSMsgType.TEXT:
                await self.handle_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                self.error(UnsupportedFrame("binary frames are not supported; send JSON text"))
            elif msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                continue
            elif msg.type is WSMsgType.ERROR:
                exc = ws.exception()
                metrics.error("PROTOCOL_ERROR")
                log.debug("connection %s error: %s", self.conn_id, exc)
                break
            else:  # CLOSE, CLOSING, CLOSED
                break

    # ------------------------------------------------------------ inbound protocol
    async def handle_text(self, data: str | bytes) -> None:
        rt = self.rt
        rt.hub.inbound.add()
        retry = self.bucket.try_take(time.monotonic())
        if retry > 0:
            rt.metrics.messages_received.labels(rt.metrics.instance, "rate_limited").inc()
            if self.abuse.record_rejection(time.monotonic()):
                rt.metrics.error("ABUSE")
                self.close_soon(CLOSE_POLICY, "too many messages")
                return
            limited = RateLimited(f"too many messages; retry in {retry:.2f} s", retry)
            self.error(limited, retryAfter=round(retry, 3))
            return
        started = time.perf_counter()
        try:
            message = parse_client_message(data)
        except InvalidMessage as exc:
            rt.metrics.messages_received.labels(rt.metrics.instance, "invalid").inc()
            self.error(exc)
            return
        kind = type(message).__name__.lower()
        rt.metrics.messages_received.labels(rt.metrics.instance, kind).inc()
        try:
            if isinstance(message, Ping):
                self.push(encode_pong())
            elif isinstance(message, Subscribe):
                self.on_subscribe(message)
            elif isinstance(message, Unsubscribe):
                keys = self.subs.remove(message.subscription_type, message.filter)
                rt.hub.unsubscribe(self, keys)
                self.push(encode_unsubscribed(message.subscription_type, len(keys)))
            elif isinstance(message, GetState):
                await self.on_get_state(message)
            elif isinstance(message, Ack):
                self.acked_event_id = max(self.acked_event_id, message.event_id)
        except TrackerError as exc:
            self.error(exc)
        rt.metrics.processing.labels(kind).observe(time.perf_counter() - started)

    def on_subscribe(self, msg: Subscribe) -> None:
        registry = self.rt.registry
        stype = msg.subscription_type
        decision_filter: SubscriptionFilter | None
        denied: tuple[str, ...]
        if stype is SubscriptionType.NOTIFICATIONS or stype is SubscriptionType.SYSTEM_ALERTS:
            # Only ever the user's own notifications / alerts meant for everyone or the company.
            decision_filter, count, denied = msg.filter, 1, ()
        else:
            decision = self.perms.authorize_vehicles(msg.filter, registry, self.rt.geozones)
            decision_filter, count, denied = decision.filter, decision.count, decision.denied
            if denied:
                self.error(
                    SubscriptionDenied(
                        f"{decision.reason}: {', '.join(denied)}",
                        denied,
                    ),
                    denied=list(denied),
                    subscriptionType=stype.value,
                )
        if decision_filter is None:
            return
        keys = self.subs.add(Subscription(stype, decision_filter))
        self.rt.hub.subscribe(self, keys)
        self.push(encode_subscribed(stype, count))

    async def on_get_state(self, msg: GetState) -> None:
        registry = self.rt.registry
        if msg.vehicle_ids is None:
            wanted = self.perms.visible_vehicles(registry)
            denied: list[str] = []
        else:
            wanted, denied = [], []
            for vid in sorted(msg.vehicle_ids):
                v = registry.get(vid)
                if v is not None and self.perms.can_see(vid, v.company_id, v.group_ids):
                    wanted.append(vid)
                else:
                    denied.append(vid)
        if denied:
            self.error(
                SubscriptionDenied(f"no access to vehicles: {', '.join(denied)}", tuple(denied)),
                denied=denied,
            )
        latest = await self.rt.bus.last_positions(wanted)
        offline_ms = self.rt.settings.offline_after_s * 1000
        now = now_ms()
        fragments = []
        for vid in wanted:
            found = latest.get(vid)
            if found is None:
                continue
            env = envelope.decode(found[1])
            status = str(env["s"])
            if now - int(env.get("ts", now)) > offline_ms:
                status = VehicleStatus.OFFLINE.value
            vehicle = registry.get(vid)
            sensors = env.get("x")
            fragments.append(
                encode_batch_fragment(
                    vid,
                    vehicle.name if vehicle else str(env.get("n", "")),
                    orjson.dumps(env["p"]),
                    status,
                    Sensors(**sensors) if isinstance(sensors, dict) else None,
                )
            )
        # eventId 0: a state snapshot is not a point in the event stream.
        self.push(encode_position_batch(0, fragments))


# ---------------------------------------------------------------- aiohttp handler


def _unauthorized(err: TrackerError) -> web.Response:
    return web.json_response({"code": err.code, "message": err.message}, status=err.http_status)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    rt: Runtime = request.app["tracker_runtime"]
    metrics = rt.metrics
    if rt.draining or not rt.ready:
        state = "shutting down" if rt.draining else "starting"
        return web.json_response(
            {"code": "UNAVAILABLE", "message": f"instance is {state}"}, status=503
        )
    token, subprotocol = extract_token(request.query, request.headers)
    try:
        if not token:
            raise AuthError(
                "missing token: pass ?token=, Authorization: Bearer or Sec-WebSocket-Protocol"
            )
        user = rt.verifier.verify(token)
    except AuthError as exc:
        metrics.connections_total.labels(metrics.instance, "rejected").inc()
        metrics.error(exc.code)
        return _unauthorized(exc)
    last_event_id: int | None = None
    raw_last = request.query.get("lastEventId")
    if raw_last:
        try:
            last_event_id = max(0, int(raw_last))
        except ValueError:
            return web.json_response(
                {"code": "INVALID_MESSAGE", "message": "lastEventId must be an integer"}, status=400
            )
    platform = request.query.get("platform") or user.platform
    info = ConnectionInfo(
        user_agent=request.headers.get("User-Agent", "")[:200],
        ip=request.remote or "",
        platform=platform if platform in PLATFORMS else "web",
        version=request.query.get("version"),
    )
    ws = web.WebSocketResponse(
        protocols=(subprotocol,) if subprotocol else (),
        autoping=False,
        max_msg_size=rt.settings.max_frame_bytes,
        compress=False,
    )
    await ws.prepare(request)
    session = Session(rt, user, ws, info)
    await session.run(last_event_id)
    return ws
