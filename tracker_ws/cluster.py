"""Instance liveness and clean-up after dead instances (ARCHITECTURE §2, seed §4).

Each instance keeps a liveness key with a TTL. Every tick, each instance looks for
instances whose key expired; one of the survivors (a Redis lock decides) removes the dead
one's connection registry entries and withdraws its interest from the subscriptions table.
Until then the dead instance is simply skipped when routing (a PUBLISH to nobody).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tracker_ws.bus.base import ConnectionEntry

if TYPE_CHECKING:
    from tracker_ws.agents.subscriptions import InterestAnnouncer
    from tracker_ws.runtime import Runtime
    from tracker_ws.web.session import Session

log = logging.getLogger(__name__)

JANITOR_INTERVAL_S = 3.0
LIVENESS_TTL_S = 10.0
LAST_SEEN_EVERY_S = 30.0  # seed §4: lastSeen written at most every 30 s per connection


class Janitor:
    def __init__(self, rt: Runtime, announcer: InterestAnnouncer) -> None:
        self.rt = rt
        self.announcer = announcer
        self._cursor = 0
        self.cleaned: list[str] = []
        self._registered = False
        self.rebuilds = 0

    async def tick(self) -> None:
        rt = self.rt
        try:
            if self._registered and not await rt.bus.presence.is_registered():
                await self.rebuild()
            await rt.bus.presence.heartbeat(LIVENESS_TTL_S)
            self._registered = True
            live, dead = await rt.bus.presence.instances()
        except Exception as exc:
            log.warning("liveness check failed: %s", exc)
            return
        rt.dead_instances = set(dead) - {rt.settings.instance_id}
        rt.live_instances = set(live) | {rt.settings.instance_id}
        for instance in dead:
            if instance == rt.settings.instance_id:
                continue
            n = await rt.bus.presence.cleanup_instance(instance)
            if n >= 0:
                log.warning(
                    "instance %s is gone: removed %d connections, pruning its interest", instance, n
                )
                self.announcer.reset(instance)
                self.cleaned.append(instance)
        await self.touch_last_seen()

    async def rebuild(self) -> None:
        """The cluster forgot this instance (Redis came back empty, or survivors took it for
        dead and cleaned it up): register its connections again, announce its interest
        again and save every session's state again."""
        rt = self.rt
        self.rebuilds += 1
        log.warning(
            "instance %s was forgotten by the cluster: re-registering %d connections",
            rt.settings.instance_id,
            len(rt.hub.sessions),
        )
        await rt.bus.presence.register_connections(self._entries())
        self.announcer.on_interest(rt.hub.index.keys(), [])
        for session in rt.hub.sessions.values():
            session.save_state()

    def _entries(self, sessions: Iterable[Session] | None = None) -> list[ConnectionEntry]:
        rt = self.rt
        wall_now = time.time()
        mono_now = time.monotonic()
        return [
            ConnectionEntry(
                s.conn_id,
                s.user.user_id,
                rt.settings.instance_id,
                int(s.connected_at * 1000),
                int((wall_now - (mono_now - s.last_seen)) * 1000),
            )
            for s in (rt.hub.sessions.values() if sessions is None else sessions)
        ]

    async def touch_last_seen(self) -> None:
        """lastSeen (and the saved state's TTL) of each connection once per
        LAST_SEEN_EVERY_S, a slice per tick so that 10k connections never make one big burst."""
        rt = self.rt
        sessions = list(rt.hub.sessions.values())
        if not sessions:
            return
        per_tick = math.ceil(len(sessions) * JANITOR_INTERVAL_S / LAST_SEEN_EVERY_S)
        start = self._cursor % len(sessions)
        chosen = sessions[start : start + per_tick]
        self._cursor = start + per_tick
        try:
            await asyncio.gather(
                rt.bus.presence.touch_connections(self._entries(chosen)),
                rt.bus.store.refresh_states([s.state_key for s in chosen], rt.settings.state_ttl_s),
            )
        except Exception as exc:
            log.warning("lastSeen update failed: %s", exc)
