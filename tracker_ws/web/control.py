"""Commands other instances send over the control channel (admin actions, cluster stats)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker_ws.domain.close import CloseCode
from tracker_ws.domain.protocol import iso_from_ms

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime


def local_stats(rt: Runtime) -> dict[str, Any]:
    hub = rt.hub
    by_platform: dict[str, int] = {}
    by_type: dict[str, int] = {}
    depth = 0
    for s in hub.sessions.values():
        by_platform[s.info.platform] = by_platform.get(s.info.platform, 0) + 1
        for stype, n in s.subs.counts().items():
            by_type[stype] = by_type.get(stype, 0) + n
        depth += s.outbox.depth()
    return {
        "instanceId": rt.settings.instance_id,
        "connections": len(hub.sessions),
        "connectionsByPlatform": by_platform,
        "activeSubscriptions": by_type,
        "messagesPerSecond": {"inbound": hub.inbound.current(), "outbound": hub.outbound.current()},
        "queueDepth": depth,
        "lastEventId": hub.last_event_id,
        "partitions": rt.assigned_partitions(),
    }


def describe(rt: Runtime, conn_ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for conn_id in conn_ids:
        s = rt.hub.sessions.get(conn_id)
        if s is None:
            continue
        out.append(
            {
                "id": s.conn_id,
                "instanceId": rt.settings.instance_id,
                "userId": s.user.user_id,
                "companyId": s.user.company_id,
                "connectedAt": iso_from_ms(int(s.connected_at * 1000)),
                "clientInfo": {
                    "platform": s.info.platform,
                    "userAgent": s.info.user_agent,
                    "ip": s.info.ip,
                    "version": s.info.version,
                },
                "subscriptions": [
                    {"type": stype, "count": n} for stype, n in sorted(s.subs.counts().items())
                ],
                "subscriptionFilters": [sub.to_json() for sub in s.subs.subscriptions()],
                "queueDepth": s.outbox.depth(),
                "lastEventId": s.last_event_id,
                "ackedEventId": s.acked_event_id,
            }
        )
    return out


def make_handler(rt: Runtime) -> Any:
    async def handle(command: str, args: dict[str, Any]) -> dict[str, Any] | None:
        if command == "stats":
            return local_stats(rt)
        if command == "describe":
            return {"connections": describe(rt, list(args.get("connIds", [])))}
        if command == "kick":
            session = rt.hub.sessions.get(str(args.get("connId")))
            if session is None:
                return {"kicked": False}
            session.close_soon(CloseCode.KICKED, str(args.get("reason") or "disconnected by admin"))
            return {"kicked": True}
        return {"error": f"unknown command {command!r}"}

    return handle
