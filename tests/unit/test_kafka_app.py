"""Stream queues hand back what Faust's flow control drops (tracker_ws.kafka.app)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from mode.utils.queues import FlowControlEvent

from tracker_ws.kafka.app import HandBackQueue
from tracker_ws.kafka.offset_guard import OffsetGuard
from tracker_ws.kafka.transport import Consumer


def _queue(flow: FlowControlEvent, dropped: list[Any]) -> HandBackQueue:
    return HandBackQueue(
        maxsize=10, flow_control=flow, clear_on_resume=True, on_clear=dropped.extend
    )


async def test_items_are_handed_back_when_flow_resumes_and_on_a_clear() -> None:
    flow = FlowControlEvent()
    dropped: list[Any] = []
    queue = _queue(flow, dropped)
    queue.put_nowait("a")
    queue.put_nowait("b")
    flow.resume()  # Faust resumes after the seek that ends a rebalance: queues emptied
    assert dropped == ["a", "b"]
    assert queue.empty()
    queue.put_nowait("c")
    flow.suspend()
    flow.clear()  # on a rebalance
    assert dropped == ["a", "b", "c"]
    assert queue.empty()
    flow.resume()  # nothing left: no call
    assert dropped == ["a", "b", "c"]


def test_the_consumer_takes_back_unacked_input_records_only() -> None:
    consumer: Any = Consumer.__new__(Consumer)  # only what hand_back touches
    consumer.guard = OffsetGuard()
    consumer.cleared = 0

    def event(topic: str, partition: int, offset: int, acked: bool = False) -> Any:
        message = SimpleNamespace(topic=topic, tp=(topic, partition), offset=offset, acked=acked)
        return SimpleNamespace(message=message)

    consumer.hand_back(
        [
            event("gps-events", 1, 7),
            event("gps-events", 1, 8),
            event("gps-events", 2, 3, acked=True),
            event("app-last_positions-changelog", 1, 4),
            "not an event",
            # A lane's item: a list of Messages (kafka/drain.py).
            [event("gps-events", 3, 12).message, event("gps-events", 3, 13).message],
        ]
    )
    assert consumer.cleared == 4
    assert consumer.guard.take_unprocessed() == {("gps-events", 1): 7, ("gps-events", 3): 12}
