"""The batch hand-over (tracker_ws/kafka/drain.py, stream.py) without a broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from mode.utils.queues import FlowControlEvent

from tracker_ws.kafka.app import HandBackQueue
from tracker_ws.kafka.drain import LANE_BATCH, BatchDrain
from tracker_ws.kafka.stream import split


def record(generation: int) -> Any:
    return SimpleNamespace(generation_id=generation)


def test_split_keeps_the_current_generation() -> None:
    a, b, c = record(3), record(2), record(3)
    assert split([a, b, c], True, 3) == ([a, c], [b])


def test_split_skips_everything_while_flow_is_suspended() -> None:
    a, b = record(3), record(3)
    assert split([a, b], False, 3) == ([], [a, b])


class FakeConsumer(BatchDrain):
    def __init__(self, commit_every: int | None = None) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.commits = 0
        self._read_offset: dict[str, int | None] = defaultdict(lambda: None)
        self._commit_every = commit_every
        self._n_acked = 0
        self.handed_back: list[Any] = []
        self.flow = FlowControlEvent()
        self.flow.resume()
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda t: True),
            producer=SimpleNamespace(buffer=SimpleNamespace(wait_until_ebb=self._ebb)),
            # The app's own queue (kafka/app.py): emptied queues hand their items back.
            FlowControlQueue=lambda maxsize, clear_on_resume: HandBackQueue(
                maxsize=maxsize,
                flow_control=self.flow,
                clear_on_resume=clear_on_resume,
                on_clear=self.hand_back,
            ),
        )

    @staticmethod
    async def _ebb() -> None:
        return None

    def hand_back(self, items: Any) -> None:
        self.handed_back.extend(items)

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.tp, message.offset))
        self._n_acked += 1  # as if the stream acked it at once

    async def _add_gap(self, tp: str, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> bool:
        self.commits += 1
        return True


def msg(tp: str, offset: int, topic: str = "gps-events") -> tuple[str, Any]:
    return tp, SimpleNamespace(tp=tp, offset=offset, topic=topic)


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


def test_a_lane_gets_its_topic_in_lists_and_the_conductor_the_rest() -> None:
    async def run() -> tuple[FakeConsumer, list[list[Any]]]:
        c = FakeConsumer()
        lane = c.open_lane("gps-events")
        batch = [msg("a", 1), msg("r", 4, "vehicle-registry"), msg("b", 7), msg("a", 2)]
        progress = [0]
        await c._deliver_batch(batch, progress)
        assert progress == [4]
        lists = []
        while not lane.empty():
            lists.append(lane.get_nowait())
        return c, lists

    c, lists = asyncio.run(run())
    assert c.delivered == [("r", 4)]  # the other topic went through the conductor
    assert [[(m.tp, m.offset) for m in chunk] for chunk in lists] == [
        [("a", 1), ("b", 7), ("a", 2)]  # one list, in fetch order
    ]
    assert c._read_offset["a"] == 2 and c._read_offset["b"] == 7


def test_a_lane_takes_at_most_lane_batch_records_per_list() -> None:
    async def run() -> list[int]:
        c = FakeConsumer()
        lane = c.open_lane("gps-events")
        await c._deliver_batch([msg("a", i) for i in range(LANE_BATCH + 3)], [0])
        sizes = []
        while not lane.empty():
            sizes.append(len(lane.get_nowait()))
        return sizes

    assert asyncio.run(run()) == [LANE_BATCH, 3]


def test_a_closed_lane_hands_back_what_it_held_and_the_conductor_gets_the_rest() -> None:
    async def run() -> FakeConsumer:
        c = FakeConsumer()
        lane = c.open_lane("gps-events")
        await c._deliver_batch([msg("a", 1)], [0])
        c.close_lane("gps-events", lane)
        assert lane.empty()
        # Closed: the conductor gets the topic again.
        await c._deliver_batch([msg("a", 2)], [0])
        return c

    c = asyncio.run(run())
    # What the lane held went back to be delivered again; later records go to the conductor.
    assert [[(m.tp, m.offset) for m in chunk] for chunk in c.handed_back] == [[("a", 1)]]
    assert c.delivered == [("a", 2)]


def test_a_rebalance_empties_a_lane_like_a_stream_queue() -> None:
    async def run() -> tuple[bool, FakeConsumer]:
        c = FakeConsumer()
        lane = c.open_lane("gps-events")
        await c._deliver_batch([msg("a", 1), msg("a", 2)], [0])
        c.flow.suspend()
        c.flow.clear()
        return lane.empty(), c

    emptied, c = asyncio.run(run())
    assert emptied
    # Handed back, to be delivered again after the rebalance.
    assert [[m.offset for m in chunk] for chunk in c.handed_back] == [[1, 2]]
