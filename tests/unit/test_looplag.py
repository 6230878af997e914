"""web/looplag.LoopLag on a real event loop: it reports every interval; a callback that holds
the loop shows up as the lateness of the next tick; stopped, it reports no more."""

from __future__ import annotations

import asyncio
import time

from tracker_ws.web.looplag import LoopLag

INTERVAL = 0.02
HOLD = 0.15


async def test_a_held_loop_shows_as_lag_and_stop_ends_the_reports() -> None:
    seen: list[float] = []
    arrived = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        arrived.set()

    probe = LoopLag(INTERVAL, observe)
    probe.start()
    async with asyncio.timeout(5):
        while len(seen) < 3:
            arrived.clear()
            await arrived.wait()
    # Lateness, not a timestamp or an interval sum: an idle loop runs its timer nearly on time.
    assert all(0.0 <= lag < 1.0 for lag in seen), seen

    # A callback that does not return for HOLD seconds (what a 10,000-connection ping sweep
    # or a long collection does to the loop).
    asyncio.get_running_loop().call_soon(time.sleep, HOLD)
    count = len(seen)
    async with asyncio.timeout(5):
        while len(seen) == count:
            arrived.clear()
            await arrived.wait()
    assert seen[count] > HOLD - INTERVAL - 0.01, seen[count:]

    probe.stop()
    count = len(seen)
    # Nothing to await for the absence of a report: give it several intervals.
    await asyncio.sleep(INTERVAL * 5)
    assert len(seen) == count
