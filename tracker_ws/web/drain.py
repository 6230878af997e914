"""Graceful shutdown (SIGTERM, or the Faust worker stopping): clients must not notice.

Stop accepting connections (health answers 503 "draining"), tell every client with a
`systemAlert` and close it with 1012 in staggered batches, so that thousands of clients do
not reconnect in the same millisecond, after flushing what is queued for it; every session
saves its state on the way out. The clients reconnect to the other instances and recover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

log = logging.getLogger(__name__)

CLOSE_RESTART = 1012
BATCH_INTERVAL_S = 0.1


async def drain(rt: Runtime) -> None:
    rt.draining = True
    sessions = list(rt.hub.sessions.values())
    if not sessions:
        return
    started = time.monotonic()
    s = rt.settings
    per_batch = max(1, int(s.drain_rate * BATCH_INTERVAL_S))
    tasks = []
    for i in range(0, len(sessions), per_batch):
        for session in sessions[i : i + per_batch]:
            tasks.append(
                asyncio.create_task(
                    session.drain_and_close(
                        CLOSE_RESTART, "server restarting, please reconnect", s.drain_timeout_s
                    )
                )
            )
        if i + per_batch < len(sessions):
            # Staggering is the point: spread the reconnect wave over time.
            await asyncio.sleep(BATCH_INTERVAL_S)
    await asyncio.gather(*tasks, return_exceptions=True)
    # Each session leaves the hub (and saves its state) when its socket has closed.
    deadline = time.monotonic() + s.drain_timeout_s
    while rt.hub.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log.info(
        "drained %d connections in %.1f s (%d left)",
        len(sessions),
        time.monotonic() - started,
        len(rt.hub.sessions),
    )
