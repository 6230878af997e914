"""web/expiry.py: token expiries of every connection on one heap and one timer: each target
is told once, in time order, never after it was cancelled; cancelled entries are shed."""

from __future__ import annotations

import asyncio

from tracker_ws.web.expiry import Expiries


class Target:
    def __init__(self, name: str, log: list[str], done: asyncio.Event | None = None) -> None:
        self.name = name
        self.log = log
        self.done = done

    def on_token_expired(self) -> None:
        self.log.append(self.name)
        if self.done is not None:
            self.done.set()


async def test_each_fires_once_in_time_order_and_cancelled_ones_never() -> None:
    loop = asyncio.get_running_loop()
    exp = Expiries()
    log: list[str] = []
    last = asyncio.Event()
    now = loop.time()
    exp.add(now + 0.03, Target("c", log))
    exp.add(now + 0.01, Target("a", log))
    gone = exp.add(now + 0.02, Target("cancelled", log))
    exp.add(now + 0.02, Target("b", log))
    exp.add(now + 0.05, Target("d", log, last))
    exp.cancel(gone)
    exp.cancel(gone)  # twice is harmless
    assert len(exp) == 4
    await asyncio.wait_for(last.wait(), 2)
    assert log == ["a", "b", "c", "d"]
    assert len(exp) == 0


async def test_an_earlier_expiry_moves_the_timer_forward() -> None:
    loop = asyncio.get_running_loop()
    exp = Expiries()
    log: list[str] = []
    early = asyncio.Event()
    exp.add(loop.time() + 3600, Target("late", log))
    exp.add(loop.time() + 0.01, Target("early", log, early))
    await asyncio.wait_for(early.wait(), 2)
    assert log == ["early"]
    assert len(exp) == 1


async def test_cancelled_entries_are_shed_and_release_their_targets() -> None:
    loop = asyncio.get_running_loop()
    exp = Expiries()
    log: list[str] = []
    entries = [exp.add(loop.time() + 3600 + i, Target(str(i), log)) for i in range(1000)]
    for e in entries[:900]:
        exp.cancel(e)
    assert len(exp) == 100
    assert len(exp._heap) < 1000  # compacted
    assert all(e[2] is None for e in entries[:900])  # no reference kept to a gone connection
    assert log == []
