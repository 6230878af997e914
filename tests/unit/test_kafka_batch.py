"""The batch hand-over (tracker_ws/kafka/drain.py, stream.py) without a broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from tracker_ws.kafka.drain import BatchDrain
from tracker_ws.kafka.stream import split


def event(generation: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(generation_id=generation))


def test_split_keeps_the_current_generation() -> None:
    a, b, c = event(3), event(2), event(3)
    assert split([a, b, c], True, 3) == ([a, c], [b])


def test_split_skips_everything_while_flow_is_suspended() -> None:
    a, b = event(3), event(3)
    assert split([a, b], False, 3) == ([], [a, b])


class FakeConsumer(BatchDrain):
    def __init__(self, commit_every: int | None = None) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.commits = 0
        self._read_offset: dict[str, int | None] = defaultdict(lambda: None)
        self._commit_every = commit_every
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: True))

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.tp, message.offset))
        self._n_acked += 1  # as if the stream acked it at once

    async def _add_gap(self, tp: str, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> bool:
        self.commits += 1
        return True


def msg(tp: str, offset: int) -> tuple[str, Any]:
    return tp, SimpleNamespace(tp=tp, offset=offset, topic="gps-events")


def test_deliver_batch_hands_over_in_order_and_moves_read_offsets() -> None:
    c = FakeConsumer()
    progress = [0]
    batch = [msg("a", 5), msg("b", 1), msg("a", 6)]
    asyncio.run(c._deliver_batch(batch, progress))
    assert c.delivered == [("a", 5), ("b", 1), ("a", 6)]
    assert progress == [3]
    assert c._read_offset["a"] == 6 and c._read_offset["b"] == 1


def test_deliver_batch_drops_records_below_the_read_offset_and_reports_gaps() -> None:
    c = FakeConsumer()
    c._read_offset["a"] = 10
    asyncio.run(c._deliver_batch([msg("a", 9), msg("a", 13)], [0]))
    assert c.delivered == [("a", 13)]  # 9 was read already, as in Faust
    assert c.gaps == [("a", 11, 13)]


def test_commit_every_runs_beside_the_hand_over() -> None:
    async def run() -> FakeConsumer:
        c = FakeConsumer(commit_every=2)
        await c._deliver_batch([msg("a", i) for i in range(5)], [0])
        assert c.commits == 0  # not awaited inside the hand-over
        assert c._commit_task is not None
        await c._commit_task
        return c

    c = asyncio.run(run())
    assert c.commits == 1  # one at a time: the later triggers found it still pending
    assert len(c.delivered) == 5
