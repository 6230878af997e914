"""Graceful shutdown (SIGTERM, or the Faust worker stopping): clients must not notice.

Stop accepting connections (health answers 503 "draining"), tell every client with a
`systemAlert` and close it with 1012 in staggered batches, so that thousands of clients do
not reconnect in the same millisecond, after flushing what is queued for it; every session
saves its state on the way out. The clients reconnect to the other instances and recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from tracker_ws.cluster import JANITOR_INTERVAL_S, LIVENESS_TTL_S
from tracker_ws.domain.close import CloseCode

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.1


async def drain(rt: Runtime) -> None:
    rt.draining = True
    if not rt.hub.sessions:
        return
    # Faust's timers stop with the shutdown; keep this instance alive in the cluster's eyes
    # while it drains, or its peers would clean it up under its clients' feet.
    beat = asyncio.create_task(_heartbeat(rt))
    try:
        started = time.monotonic()
        closed = 0
        # Again until none is left: a handshake that was under way when draining began
        # registers its session after the first snapshot.
        for _ in range(3):
            if not rt.hub.sessions:
                break
            closed += await _drain_once(rt)
        log.info(
            "drained %d connections in %.1f s (%d left)",
            closed,
            time.monotonic() - started,
            len(rt.hub.sessions),
        )
    finally:
        beat.cancel()


async def _heartbeat(rt: Runtime) -> None:
    while True:
        with contextlib.suppress(Exception):
            await rt.bus.presence.heartbeat(LIVENESS_TTL_S)
        await asyncio.sleep(JANITOR_INTERVAL_S)


async def _drain_once(rt: Runtime) -> int:
    sessions = list(rt.hub.sessions.values())
    s = rt.settings
    per_batch = max(1, int(s.drain_rate * BATCH_INTERVAL_S))
    tasks = []
    for i in range(0, len(sessions), per_batch):
        for session in sessions[i : i + per_batch]:
            tasks.append(
                asyncio.create_task(
                    session.drain_and_close(
                        CloseCode.RESTART, "server restarting, please reconnect", s.drain_timeout_s
                    )
                )
            )
        if i + per_batch < len(sessions):
            # Staggering is the point: spread the reconnect wave over time.
            await asyncio.sleep(BATCH_INTERVAL_S)
    await asyncio.gather(*tasks, return_exceptions=True)
    # Each session leaves the hub (and saves its state) when its socket has closed.
    deadline = time.monotonic() + s.drain_timeout_s
    while any(x.conn_id in rt.hub.sessions for x in sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(sessions)
