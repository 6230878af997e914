"""Consumer.ack_many (tracker_ws/kafka/transport.py) leaves Faust's consumer bookkeeping
exactly as acking each record with Consumer.ack does. Real consumers of a real app, no broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.conductor import Conductor
from faust.types import TP, ConsumerMessage

from tracker_ws.kafka.app import KafkaApp

GPS = "gps-events"


async def consumer() -> Any:
    app = KafkaApp("test-ack-many", broker="kafka://127.0.0.1:1", store="memory://")
    # An acking topic, as an agent's is: the conductor's own index says so, as on a worker.
    app.topics.add(app.topic(GPS))
    assert isinstance(app.topics, Conductor)
    await app.topics._update_indices()
    assert app.topics.acks_enabled_for(GPS)
    return app.consumer


def message(tp: TP, offset: int, generation: int) -> ConsumerMessage:
    return ConsumerMessage(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=b"k",
        value=b"v",
        checksum=None,
        tp=tp,
        generation_id=generation,
    )


def state(c: Any) -> tuple[Any, ...]:
    return (
        {tp: list(v) for tp, v in c._acked.items() if v},
        {tp: set(v) for tp, v in c._acked_index.items() if v},
        c._n_acked,
        sorted((m.tp, m.offset) for m in c._unacked_messages),
        c.refused_acks,
        sorted(c.guard.take_unprocessed().items()),
    )


def run(flow_active: bool, generation: int, committed: int | None) -> None:
    """The same records, acked one by one on one consumer and as one list on another."""

    async def go() -> None:
        one, many = await consumer(), await consumer()
        for c in (one, many):
            if flow_active:
                c.app.flow_control.resume()
            else:
                c.app.flow_control.suspend()
            c.app.consumer_generation_id = 2
        tp0, tp1 = TP(GPS, 0), TP(GPS, 1)
        specs = [(tp0, 5, 2), (tp1, 3, 2), (tp0, 6, generation), (tp0, 5, 2), (tp1, 4, 2)]
        made: dict[int, list[ConsumerMessage]] = {}
        for key, c in ((1, one), (2, many)):
            made[key] = [message(tp, off, gen) for tp, off, gen in specs]
            made[key][3] = made[key][0]  # the same record twice: acked once
            for m in made[key]:
                c.track_message(m)
                c._committed_offset[m.tp] = committed
        for m in made[1]:
            one.ack(m)
        many.ack_many(made[2])
        assert state(many) == state(one)
        assert [m.acked for m in made[2]] == [m.acked for m in made[1]]

    asyncio.run(go())


@pytest.mark.parametrize("generation", [2, 1])
@pytest.mark.parametrize("committed", [None, 4, 6])
def test_ack_many_books_like_ack(generation: int, committed: int | None) -> None:
    run(True, generation, committed)


def test_ack_many_refuses_like_ack_while_flow_is_suspended() -> None:
    run(False, 2, None)


def test_ack_many_on_a_topic_without_acks_only_marks_the_records() -> None:
    async def go() -> None:
        c = await consumer()
        c.app.flow_control.resume()
        tp = TP("other", 0)
        ms = [message(tp, 1, 0), message(tp, 2, 0)]
        c.ack_many(ms)
        assert all(m.acked for m in ms) and c._n_acked == 0 and not c._acked[tp]

    asyncio.run(go())


def test_ack_many_counts_acks_and_refusals() -> None:
    async def go() -> None:
        c = await consumer()
        c.app.flow_control.resume()
        c.app.consumer_generation_id = 3
        tp = TP(GPS, 0)
        ms = [message(tp, 10, 3), message(tp, 11, 2), message(tp, 12, 3)]
        for m in ms:
            c.track_message(m)
        c.ack_many(ms)
        assert c._acked[tp] == [10, 12] and c._n_acked == 2
        assert c.refused_acks == 1
        assert c.guard.take_unprocessed() == {tp: 11}  # delivered again

    asyncio.run(go())
