"""GET /health and GET /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from tracker_ws.web.keys import RUNTIME

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def health(request: web.Request) -> web.Response:
    rt = runtime(request)
    redis_ok = await rt.bus.fanout.ping()
    # A dead or resubscribing delivery listener means no deliveries, even if PING works.
    listener = rt.bus.fanout.listener_state
    broker_ok = rt.broker_ok
    if rt.draining:
        status = "draining"
    elif not rt.ready:
        status = "starting"
    elif not (redis_ok and listener == "ok" and broker_ok):
        status = "degraded"
    else:
        status = "healthy"
    body = {
        "status": status,
        "instanceId": rt.settings.instance_id,
        "connections": len(rt.hub.sessions),
        "subscriptions": rt.hub.subscription_count(),
        "messagesPerSecond": rt.hub.outbound.current() + rt.hub.inbound.current(),
        "redis": "ok" if redis_ok else "unreachable",
        "listener": listener,
        "broker": "ok" if broker_ok else "unreachable",
        "registryVehicles": len(rt.registry),
        "lastEventId": rt.hub.last_event_id,
        "partitions": rt.assigned_partitions(),
        "stalledPartitions": rt.stalled_partitions,
    }
    return web.json_response(body, status=200 if status == "healthy" else 503)


async def metrics(request: web.Request) -> web.Response:
    rt = runtime(request)
    rt.metrics.queue_depth.labels(rt.metrics.instance).set(
        sum(s.outbox.depth() for s in rt.hub.sessions.values())
    )
    for stype, n in _subscriptions_by_type(rt).items():
        rt.metrics.active_subscriptions.labels(rt.metrics.instance, stype).set(n)
    return web.Response(body=rt.metrics.render(), content_type="text/plain", charset="utf-8")


def _subscriptions_by_type(rt: Runtime) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in rt.hub.sessions.values():
        for stype, n in s.subs.counts().items():
            out[stype] = out.get(stype, 0) + n
    return out
