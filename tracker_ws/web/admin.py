"""Admin REST API (seed §6). Every route needs a JWT with the `admin` role.

Cluster-wide answers are gathered from every live instance over the control channel with a
short timeout; instances that do not answer in time are listed in `unreachable`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tracker_ws.auth import extract_token
from tracker_ws.bus import Outgoing
from tracker_ws.domain import envelope
from tracker_ws.domain.errors import (
    AuthError,
    BackendUnavailable,
    Forbidden,
    InvalidMessage,
    NotFound,
    TrackerError,
)
from tracker_ws.domain.events import check_alert_targets
from tracker_ws.domain.models import AlertLevel, UserContext
from tracker_ws.domain.protocol import iso_from_ms, now_ms
from tracker_ws.domain.validate import choice, uuid_str
from tracker_ws.kafka import consumer_watch
from tracker_ws.web.keys import RUNTIME

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

GATHER_TIMEOUT_S = 2.0
MAX_ALERT_CHARS = 2000


def _rt(request: web.Request) -> Runtime:
    rt: Runtime = request.app[RUNTIME]
    return rt


def error_response(err: TrackerError) -> web.Response:
    return web.json_response({"code": err.code, "message": err.message}, status=err.http_status)


def require_admin(request: web.Request) -> UserContext:
    # The one token parser, with the WebSocket endpoint's precedence (auth.extract_token).
    token, _ = extract_token(request.query, request.headers)
    if not token:
        raise AuthError("missing token: send Authorization: Bearer <jwt>")
    user = _rt(request).verifier.verify(token)
    if not user.is_admin:
        raise Forbidden("the admin role is required")
    return user


Handler = Callable[[web.Request], Awaitable[web.Response]]


def admin_route(handler: Handler) -> Handler:
    """Checks the admin token first; every failure is answered as JSON with an error code."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            require_admin(request)
            return await handler(request)
        except TrackerError as exc:
            return error_response(exc)

    return wrapped


@admin_route
async def stats(request: web.Request) -> web.Response:
    rt = _rt(request)
    live, _ = await rt.bus.presence.instances()
    replies = await rt.bus.control.call(live, "stats", {}, GATHER_TIMEOUT_S)
    by_platform: dict[str, int] = {}
    by_type: dict[str, int] = {}
    inbound = outbound = total = 0
    rows = []
    for instance in sorted(replies):
        r = replies[instance]
        total += int(r.get("connections", 0))
        for k, v in r.get("connectionsByPlatform", {}).items():
            by_platform[k] = by_platform.get(k, 0) + int(v)
        for k, v in r.get("activeSubscriptions", {}).items():
            by_type[k] = by_type.get(k, 0) + int(v)
        inbound += int(r.get("messagesPerSecond", {}).get("inbound", 0))
        outbound += int(r.get("messagesPerSecond", {}).get("outbound", 0))
        rows.append(
            {
                "instanceId": instance,
                "connections": r.get("connections", 0),
                "queueDepth": r.get("queueDepth", 0),
                "lastEventId": r.get("lastEventId", 0),
                "partitions": r.get("partitions", []),
            }
        )
    return web.json_response(
        {
            "totalConnections": total,
            "connectionsByPlatform": by_platform,
            "activeSubscriptions": by_type,
            "messagesPerSecond": {"inbound": inbound, "outbound": outbound},
            "instanceStats": rows,
            "unreachable": sorted(set(live) - replies.keys()),
        }
    )


@admin_route
async def user_connections(request: web.Request) -> web.Response:
    rt = _rt(request)
    user_id = uuid_str(request.match_info["user_id"], "userId", InvalidMessage)
    entries = await rt.bus.presence.user_connections(user_id)
    by_instance: dict[str, list[str]] = {}
    for e in entries:
        by_instance.setdefault(e.instance_id, []).append(e.conn_id)
    live, _ = await rt.bus.presence.instances()
    asked = [i for i in by_instance if i in live]
    conn_ids = [e.conn_id for e in entries]
    replies = await rt.bus.control.call(asked, "describe", {"connIds": conn_ids}, GATHER_TIMEOUT_S)
    details = {c["id"]: c for r in replies.values() for c in r.get("connections", []) if "id" in c}
    out = []
    for e in sorted(entries, key=lambda e: e.connected_at_ms):
        row: dict[str, Any] = {
            "id": e.conn_id,
            "instanceId": e.instance_id,
            "connectedAt": iso_from_ms(e.connected_at_ms),
            "lastSeen": iso_from_ms(e.last_seen_ms),
        }
        row.update({k: v for k, v in details.get(e.conn_id, {}).items() if k != "connectedAt"})
        out.append(row)
    return web.json_response({"connections": out})


@admin_route
async def kick(request: web.Request) -> web.Response:
    rt = _rt(request)
    conn_id = uuid_str(request.match_info["conn_id"], "connectionId", InvalidMessage)
    live, _ = await rt.bus.presence.instances()
    replies = await rt.bus.control.call(live, "kick", {"connId": conn_id}, GATHER_TIMEOUT_S)
    if not any(r.get("kicked") for r in replies.values()):
        raise NotFound(f"no connection {conn_id}")
    return web.Response(status=204)


def parse_broadcast(body: bytes) -> tuple[str, str, list[str] | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidMessage("body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage("body must be a JSON object")
    unknown = set(data) - {"level", "message", "targetCompanyIds"}
    if unknown:
        raise InvalidMessage(f"unknown field(s): {', '.join(sorted(unknown))}")
    level = choice(
        data.get("level", "info"), "level", InvalidMessage, (lv.value for lv in AlertLevel)
    )
    message = data.get("message")
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_ALERT_CHARS:
        raise InvalidMessage(f"message must be a non-empty string of at most {MAX_ALERT_CHARS}")
    targets = data.get("targetCompanyIds")
    if targets is not None:
        if not isinstance(targets, list) or not targets:
            raise InvalidMessage("targetCompanyIds must be a non-empty list of UUIDs or null")
        targets = sorted({uuid_str(t, "targetCompanyIds", InvalidMessage) for t in targets})
    return level, message, targets


@admin_route
async def broadcast(request: web.Request) -> web.Response:
    rt = _rt(request)
    level, message, targets = parse_broadcast(await request.read())
    check_alert_targets(targets, rt.settings.max_broadcast_targets)
    live, _ = await rt.bus.presence.instances()
    req = rt.bus.control.new_request(live)
    env = envelope.alert_envelope(level, message, targets, req, rt.settings.instance_id)
    env["ts"] = now_ms()
    history = envelope.history_streams(env)
    [event_id] = await rt.bus.fanout.publish(
        [Outgoing(live, envelope.encode(env), history=history)]
    )
    replies = await rt.bus.control.gather_replies(req, GATHER_TIMEOUT_S)
    return web.json_response(
        {
            "delivered": sum(int(r.get("delivered", 0)) for r in replies.values()),
            "eventId": event_id,
            "instances": len(replies),
            "unreachable": sorted(set(live) - replies.keys()),
        }
    )


@admin_route
async def interest(request: web.Request) -> web.Response:
    """This worker's share of the cluster-wide subscriptions table (for operators and tests)."""
    rt = _rt(request)
    return web.json_response(
        {
            "instanceId": rt.settings.instance_id,
            "partitions": rt.assigned_partitions(),
            "interest": rt.interest_snapshot(),
        }
    )


@admin_route
async def consumer(request: web.Request) -> web.Response:
    """This worker's Kafka input partitions: committed offset, log end, fetch position, and
    whether each is paused; `stalled` lists those with records waiting and no progress."""
    rt = _rt(request)
    if rt.consumer_snapshot is None:
        raise BackendUnavailable("this worker has no Kafka consumer")
    try:
        snap = await asyncio.wait_for(rt.consumer_snapshot(), 5.0)
    except Exception as exc:  # mid-rebalance, broker away
        raise BackendUnavailable(f"the consumer did not answer: {exc!r}") from exc
    body = consumer_watch.as_json(snap)
    body["instanceId"] = rt.settings.instance_id
    body["stalled"] = rt.stalled_partitions
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/ws/stats", stats)
    r.add_get("/api/v1/ws/users/{user_id}/connections", user_connections)
    r.add_delete("/api/v1/ws/connections/{conn_id}", kick)
    r.add_post("/api/v1/ws/broadcast", broadcast)
    r.add_get("/api/v1/ws/interest", interest)
    r.add_get("/api/v1/ws/consumer", consumer)
