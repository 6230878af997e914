"""One WebSocket connection: authentication, the inbound protocol and its outbound queue.

Producers push into the connection's Outbox and schedule it with the instance's Flusher,
which writes every connection's due frames in one pass (web/flusher.py, ARCHITECTURE §4).
A peer that does not read is skipped while its transport is over its high-water mark, so it
never holds up anyone else; aiohttp writes only the connection's control frames (pong,
close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import WSMsgType, web

from tracker_ws.auth import LEEWAY_S, extract_token
from tracker_ws.bus.base import ConnectionEntry
from tracker_ws.domain import envelope, validate
from tracker_ws.domain.batching import (
    Held,
    Outbox,
    Positions,
    SharedBatches,
    release_after_replay,
)
from tracker_ws.domain.close import CloseCode
from tracker_ws.domain.errors import (
    AuthError,
    BackendUnavailable,
    InvalidMessage,
    RateLimited,
    SubscriptionDenied,
    SubscriptionLimit,
    SubscriptionRevoked,
    TrackerError,
    UnsupportedFrame,
)
from tracker_ws.domain.ids import connection_id
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
    encode_system_alert,
    encode_unsubscribed,
    now_ms,
    parse_client_message,
)
from tracker_ws.domain.ratelimit import AbuseTracker, TokenBucket
from tracker_ws.domain.subscriptions import SubscriptionSet
from tracker_ws.domain.wsframe import PING_FRAME, FramedOnce
from tracker_ws.web.admin import error_response
from tracker_ws.web.expiry import Entry
from tracker_ws.web.flusher import IDLE, reading
from tracker_ws.web.keys import RUNTIME
from tracker_ws.web.recovery import (
    UNAVAILABLE,
    Outcome,
    recover,
    replay,
    state_document,
    subscribed_vehicles,
)
from tracker_ws.web.streams import PositionStream
from tracker_ws.web.wsresponse import SessionSocket

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0

PLATFORMS = frozenset({"web", "mobile", "desktop"})
# Every frame a client sends costs a token: text, binary (answered UNSUPPORTED_FRAME) and
# protocol pings and pongs alike, or a flood of the cheap kinds would bypass the limit.
_DATA_FRAMES = frozenset({WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG})


class Session:
    """Connection state. Slots keep the per-connection footprint small."""

    __slots__ = (
        "_close_request",
        "_closing",
        "_drained",
        "_expiry",
        "_flusher",
        "_held",
        "_in_receive",
        "_live",
        "_reader_task",
        "abuse",
        "acked_event_id",
        "bucket",
        "conn_id",
        "connected_at",
        "flush_slot",
        "high_water",
        "info",
        "last_event_id",
        "last_replayable_id",
        "last_seen",
        "outbox",
        "perms",
        "replay",
        "rt",
        "shared",
        "state_key",
        "stream",
        "subs",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        rt: Runtime,
        user: UserContext,
        ws: web.WebSocketResponse,
        info: ConnectionInfo,
        device: str | None = None,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        s = rt.settings
        self.rt = rt
        self.conn_id = connection_id()
        self.user = user
        self.perms = Permissions(user)
        self.subs = SubscriptionSet(user.company_id, user.user_id)
        self.ws = ws
        self.info = info
        self.outbox = Outbox(s.queue_limit, rt.hub.streams.window)
        self.bucket = TokenBucket(s.rate_per_second, s.rate_burst)
        self.abuse: AbuseTracker | None = None  # from the first refused frame (S1 memory)
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self.last_event_id = 0
        self.acked_event_id = 0
        # seed §4 keys saved state by user; `?device=` lets one user's phone and browser
        # keep separate states.
        self.state_key = f"{user.user_id}:{device}" if device else user.user_id
        self.last_replayable_id = 0
        # Live events (frame) and positions (vehicleId, single, fragment) held during a replay.
        self._held: list[Held] | None = None
        self.replay: list[tuple[int, bytes]] | None = None
        # The Flusher's: IDLE, NOW or the tick it is due at.
        self.flush_slot = IDLE
        # The position stream of its subscriptions (web/streams.py) and whether the stream
        # writes its positions (shared) or hands them to this connection (private).
        self.stream: PositionStream | None = None
        self.shared = False
        self._flusher = rt.flusher
        # Written to by the Flusher and its stream once the connection is live (after a
        # reconnect's replay was queued); None: nothing may be written (the connection is
        # gone, or aiohttp is sending its close frame: SessionSocket.close).
        self.transport = cast(asyncio.WriteTransport | None, transport)
        self.high_water = (
            self.transport.get_write_buffer_limits()[1] if self.transport is not None else 0
        )
        self._live = False
        self._drained: asyncio.Future[None] | None = None  # drain_and_close waits on it
        self._expiry: Entry | None = None  # in rt.expiries while the token can expire
        self._closing = False
        self._close_request: tuple[int, str] | None = None
        self._in_receive = False
        self._reader_task: asyncio.Task[Any] | None = None

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------ outbound
    def push(self, frame: bytes) -> None:
        if self.shared:
            # Its stream's pending positions go out first, then this frame, from here.
            assert self.stream is not None
            self.stream.detach(self)
        # Until the connection is live (a reconnect's replay) the limit does not apply: a
        # client that missed more than the queue limit must still be able to catch up.
        if not self.outbox.push(frame, force=not self._live):
            # Replayable events no longer fit: close; state is saved on the way out and the
            # client recovers the rest from history when it reconnects.
            self.rt.metrics.slow_consumers.labels(self.rt.metrics.instance).inc()
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")
            return
        if self._live:
            self._flusher.schedule(self, -math.inf)

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None:
        if self._held is not None:
            # During a reconnect's replay: after the replay, in arrival (eventId) order.
            self._held.append((event_id, (vehicle_id, single, fragment)))
            return
        self.outbox.push_position(vehicle_id, event_id, single, fragment)
        if event_id > self.last_event_id:
            self.last_event_id = event_id
        if self._live and self.flush_slot == IDLE:
            self._flusher.schedule(self, self.outbox.due_at())

    def push_event(self, event_id: int, frame: bytes, *, replaying: bool = False) -> None:
        """A replayable event (alert, geo event, notification): in order, never coalesced,
        never twice (events reach an instance in eventId order, so a lower id is a repeat)."""
        if event_id <= self.last_replayable_id:
            return
        if self._held is not None and not replaying:
            self._held.append((event_id, frame))
            return
        self.last_replayable_id = event_id
        if event_id > self.last_event_id:
            self.last_event_id = event_id
        self.push(frame)

    def error(self, err: TrackerError, **extra: object) -> None:
        self.rt.metrics.error(err.code)
        self.push(encode_error(err.code, err.message, **cast(dict[str, Any], extra)))

    def flush(self, now: float, shared: SharedBatches, framed: FramedOnce) -> int:
        """The Flusher's call: write what is due (see flusher.py); the number of frames."""
        if not self._live:
            return 0
        transport = self._open_transport()
        if transport is None:
            return 0
        outbox = self.outbox
        if not reading(transport, self.high_water):
            # The peer does not read: look again next tick; positions keep coalescing.
            self._flusher.schedule(self, now + self._flusher.tick)
            return 0
        frames = outbox.take(now, shared)
        try:
            for frame in frames:
                transport.write(framed.frame(frame))
        except (ConnectionError, RuntimeError) as exc:
            self.write_failed(exc)
            return 0
        if outbox.has_work:
            self._flusher.schedule(self, outbox.due_at())
        elif self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        return len(frames)

    def _open_transport(self) -> asyncio.WriteTransport | None:
        """The transport while frames may be written to it; None once the connection is gone
        or aiohttp is sending its close frame (SessionSocket.close: nothing may follow it;
        the reader sees the close and cleans up)."""
        transport = self.transport
        if transport is not None and transport.is_closing():
            self.transport = transport = None
        return transport

    def stop_writing(self) -> None:
        """aiohttp is about to send the close frame (SessionSocket.close)."""
        self.transport = None

    def write_failed(self, exc: Exception) -> None:
        # The peer went away mid-write; the reader sees the close and cleans up.
        log.debug("writing to %s failed: %s", self.conn_id, exc)
        self.transport = None
        self.close_soon(CloseCode.GOING_AWAY, "write failed")

    # ------------------------------------------------------------ its position stream
    def _reading_transport(self) -> asyncio.WriteTransport | None:
        """The open transport while its peer keeps up (below the high-water mark)."""
        transport = self._open_transport()
        return transport if reading(transport, self.high_water) else None

    def shareable(self) -> bool:
        return (
            self._live
            and self._held is None
            and self.flush_slot == IDLE
            and not self.outbox.has_work
            and self._reading_transport() is not None
        )

    def leave_shared(self, positions: Positions, last_flush: float) -> None:
        self.outbox.adopt(positions, last_flush)
        for event_id, _single, _fragment in positions.values():
            if event_id > self.last_event_id:
                self.last_event_id = event_id
        if self._live and self.flush_slot == IDLE and self.outbox.has_work:
            self._flusher.schedule(self, self.outbox.due_at())

    def _go_live(self) -> None:
        """Start writing: what was queued meanwhile (connected, a replay) goes out first."""
        self._live = True
        if self.outbox.has_work:
            self._flusher.schedule(self, self.outbox.due_at())

    def ping(self) -> None:
        """A protocol ping; the peer's pong (or anything else it sends) proves it alive.

        Written here, not through aiohttp's `ws.ping()`: that is a task per connection, and a
        sweep that found 10,000 quiet connections stalled the loop for 0.3 s. Frames go to
        the transport whole and synchronously (here, in the Flusher, in aiohttp's writer), so
        a control frame between two of them is well-formed. A peer over its high-water mark
        is not reading its pings either; the heartbeat timeout closes it."""
        transport = self._reading_transport()
        if transport is None:
            return
        try:
            transport.write(PING_FRAME)
        except (ConnectionError, RuntimeError) as exc:
            self.write_failed(exc)

    async def drain_and_close(self, code: int, reason: str, timeout: float) -> None:
        """Graceful close: tell the client, flush what is queued (up to `timeout`), close."""
        self.push(encode_system_alert(0, "info", reason))
        if self.outbox.has_work and self.transport is not None:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained, timeout)
        self.close_soon(code, reason)

    def save_state(self) -> None:
        """Queue `ws:state` for writing (the write-behind keeps the newest per key)."""
        self.rt.writeback.save_state(self.state_key, state_document(self))

    def restore(self, sub: Subscription) -> list[str]:
        """Re-subscribe a saved subscription with today's permissions and today's cap; returns
        what was lost (a part over the cap is lost whole, named by its ids)."""
        allowed, _count, denied = self.authorize(sub)
        if allowed is not None:
            try:
                keys = self.subs.add(
                    Subscription(sub.type, allowed), self.rt.settings.max_subscriptions
                )
            except SubscriptionLimit:
                return [
                    *denied,
                    *(sorted(allowed.ids) if allowed.ids else [allowed.target or sub.type.value]),
                ]
            self.rt.hub.subscribe(self, keys)
        return list(denied)

    def on_token_expired(self) -> None:
        self.close_soon(CloseCode.TOKEN_EXPIRED, "token expired")

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the reading task to close: closing from another task while it waits in
        receive() would make aiohttp drop the TCP connection without the closing handshake,
        and the client would see 1006 instead of `code`."""
        if self._closing:
            return
        self._closing = True
        self._close_request = (code, reason)
        if self._in_receive and self._reader_task is not None:
            self._reader_task.cancel()

    async def _close(self, code: int, reason: str) -> None:
        if code == CloseCode.SLOW_CONSUMER:
            self._live = False  # a peer that does not read: nothing more is written
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(
                    code=code, message=reason.encode(), drain=code != CloseCode.SLOW_CONSUMER
                ),
                CLOSE_TIMEOUT_S,
            )

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
        rt.writeback.register(entry)
        if self.user.expires_at:
            # The same leeway the verifier allowed at connect time (clock skew).
            delay = max(0.0, self.user.expires_at + LEEWAY_S - time.time())
            self._expiry = rt.expiries.add(loop.time() + delay, self)
        try:
            await self._start(last_event_id)
            self._go_live()
            await self._read_loop()
        finally:
            self._live = False
            self.transport = None
            self.save_state()
            if self._expiry is not None:
                rt.expiries.cancel(self._expiry)
            rt.hub.unregister(self)
            rt.writeback.unregister(self.conn_id, self.user.user_id)

    async def _start(self, last_event_id: int | None) -> None:
        """`connected`, then (on a reconnect) the restored subscriptions, the replay, the
        current positions and the live events held meanwhile — before the writer starts."""
        outcome: Outcome | None = None
        if last_event_id:
            self._held = []
            try:
                outcome = await recover(self, last_event_id)
            except BackendUnavailable as exc:
                # An answer, not a dropped socket: the client falls back to getState. Counted
                # in ws_recoveries_total{outcome="unavailable"}; a storm would flood the log.
                log.debug("recovery of %s failed: %s", self.conn_id, exc.message)
                outcome = Outcome(False, UNAVAILABLE)
        self.push(
            encode_connected(
                self.conn_id,
                server_time_ms=now_ms(),
                recovered=outcome.recovered if outcome else None,
                restored_subscriptions=outcome.restored if outcome else None,
                reason=outcome.reason if outcome else None,
                last_event_id=last_event_id,
            )
        )
        if outcome is None:
            return
        if outcome.revoked:
            self.error(
                SubscriptionRevoked(f"no longer permitted: {', '.join(outcome.revoked)}"),
                revoked=outcome.revoked,
            )
        if outcome.recovered and last_event_id:
            self.last_replayable_id = last_event_id
            outcome.replayed = replay(self)
        if outcome.restored:
            vehicles = subscribed_vehicles(self)
            if vehicles:
                try:
                    self.push(await self.position_snapshot(vehicles))
                except BackendUnavailable as exc:
                    self.error(exc)
        held, self._held = self._held or [], None
        for event_id, item in release_after_replay(held, self.last_replayable_id):
            if isinstance(item, tuple):
                self.push_position(item[0], event_id, item[1], item[2])
            else:
                self.push_event(event_id, item)
        self.rt.metrics.recoveries.labels(
            self.rt.metrics.instance, outcome.reason or "recovered"
        ).inc()

    async def _read_loop(self) -> None:
        ws = self.ws
        metrics = self.rt.metrics
        self._reader_task = asyncio.current_task()
        while True:
            if self._close_request is not None:
                await self._close(*self._close_request)
                break
            self._in_receive = True
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                if self._close_request is None or self._reader_task is None:
                    raise  # a real cancellation (shutdown)
                self._reader_task.uncancel()  # our own wake-up from close_soon
                continue
            finally:
                self._in_receive = False
            self.last_seen = time.monotonic()
            if msg.type in _DATA_FRAMES and not self._admit():
                continue
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
    def _admit(self) -> bool:
        """One inbound frame against the token bucket: False when it is refused (answered
        RATE_LIMITED, or the connection closed 1008 once the refusals add up to abuse)."""
        rt = self.rt
        rt.hub.inbound.add()
        now = time.monotonic()
        retry = self.bucket.try_take(now)
        if retry <= 0:
            return True
        rt.metrics.received("rate_limited").inc()
        if self.abuse is None:
            self.abuse = AbuseTracker()
        if self.abuse.record_rejection(now):
            rt.metrics.error("ABUSE")
            self.close_soon(CloseCode.POLICY, "too many messages")
            return False
        limited = RateLimited(f"too many messages; retry in {retry:.2f} s", retry)
        self.error(limited, retryAfter=round(retry, 3))
        return False

    async def handle_text(self, data: str | bytes) -> None:
        rt = self.rt
        started = time.perf_counter()
        try:
            message = parse_client_message(data)
        except InvalidMessage as exc:
            rt.metrics.received("invalid").inc()
            self.error(exc)
            return
        kind = message.TYPE
        rt.metrics.received(kind).inc()
        try:
            if isinstance(message, Ping):
                self.push(encode_pong())
            elif isinstance(message, Subscribe):
                self.on_subscribe(message)
            elif isinstance(message, Unsubscribe):
                keys = self.subs.remove(message.subscription_type, message.filter)
                rt.hub.unsubscribe(self, keys)
                self.push(encode_unsubscribed(message.subscription_type, len(keys)))
                if keys:
                    self.save_state()
            elif isinstance(message, GetState):
                await self.on_get_state(message)
            elif isinstance(message, Ack):
                self.acked_event_id = max(self.acked_event_id, message.event_id)
        except TrackerError as exc:
            self.error(exc)
        rt.metrics.processed(kind).observe(time.perf_counter() - started)

    def authorize(
        self, sub: Subscription
    ) -> tuple[SubscriptionFilter | None, int, tuple[str, ...]]:
        """(permitted filter or None, count, refused ids) under today's permissions."""
        if sub.type in (SubscriptionType.NOTIFICATIONS, SubscriptionType.SYSTEM_ALERTS):
            # Only ever the user's own notifications / alerts meant for everyone or the company.
            return sub.filter, 1, ()
        decision = self.perms.authorize_vehicles(sub.filter, self.rt.registry, self.rt.geozones)
        return decision.filter, decision.count, decision.denied

    def on_subscribe(self, msg: Subscribe) -> None:
        stype = msg.subscription_type
        allowed, count, denied = self.authorize(Subscription(stype, msg.filter))
        if denied:
            self.error(
                SubscriptionDenied(f"no access to: {', '.join(denied)}", denied),
                denied=list(denied),
                subscriptionType=stype.value,
            )
        if allowed is None:
            return
        try:
            keys = self.subs.add(Subscription(stype, allowed), self.rt.settings.max_subscriptions)
        except SubscriptionLimit as exc:
            self.error(exc, limit=exc.limit, subscriptionType=stype.value)
            return
        self.rt.hub.subscribe(self, keys)
        self.push(encode_subscribed(stype, count))
        if keys:
            self.save_state()

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
        self.push(await self.position_snapshot(wanted))

    async def position_snapshot(self, wanted: list[str]) -> bytes:
        """One positionBatch with the latest known position, status and sensors of `wanted`."""
        registry = self.rt.registry
        latest = await self.rt.bus.fanout.last_positions(wanted)
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
        return encode_position_batch(0, fragments)


# ---------------------------------------------------------------- aiohttp handler


async def ws_handler(request: web.Request) -> web.StreamResponse:
    rt: Runtime = request.app[RUNTIME]
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
        metrics.connections("rejected").inc()
        metrics.error(exc.code)
        return error_response(exc)
    last_event_id: int | None = None
    raw_last = request.query.get("lastEventId")
    if raw_last:
        try:
            last_event_id = validate.last_event_id(raw_last)
        except InvalidMessage as exc:
            metrics.error(exc.code)
            return error_response(exc)
    platform = request.query.get("platform") or user.platform
    info = ConnectionInfo(
        user_agent=request.headers.get("User-Agent", "")[:200],
        ip=request.remote or "",
        platform=platform if platform in PLATFORMS else "web",
        version=request.query.get("version"),
    )
    ws = SessionSocket(
        protocols=(subprotocol,) if subprotocol else (),
        autoping=False,
        # aiohttp refuses a message of max_msg_size bytes or more; the limit is the largest
        # size we accept.
        max_msg_size=rt.settings.max_frame_bytes + 1,
        compress=False,
    )
    await ws.prepare(request)
    session = Session(
        rt, user, ws, info, device=request.query.get("device"), transport=request.transport
    )
    ws.writer = session
    await session.run(last_event_id)
    return ws
