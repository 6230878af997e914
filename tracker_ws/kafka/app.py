"""The faust.App hooks that put our consumer in place: the transport, and stream queues that
hand back the records they drop (TrackerApp derives from KafkaApp)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust
from mode.utils.queues import ThrowableQueue

from tracker_ws.kafka.transport import Consumer, Transport


class HandBackQueue(ThrowableQueue[Any]):
    """A stream/channel queue that reports its items to `on_clear` before it is emptied.

    Faust's flow control empties every stream queue on a rebalance and again on each resume,
    which also comes after the seek that ends a rebalance: a record handed to a stream in
    between is dropped before any agent saw it. The consumer gets each one back so it is
    delivered again (transport.Consumer.hand_back)."""

    def __init__(
        self, *args: Any, on_clear: Callable[[Iterable[Any]], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_clear = on_clear

    def clear(self) -> None:
        # asyncio.Queue's deque, which mode's clear() empties too (listed in compat.py).
        items = self._queue  # type: ignore[attr-defined]
        if items:
            self._on_clear(list(items))
        super().clear()


class KafkaApp(faust.App):  # type: ignore[misc]
    def _new_transport(self) -> Any:
        # Faust's own hook (private, checked by compat.py); the same arguments as Faust's.
        return Transport(self.conf.broker_consumer, self)

    def FlowControlQueue(
        self, maxsize: int | None = None, *, clear_on_resume: bool = False
    ) -> ThrowableQueue[Any]:
        # Faust builds every stream, channel and changelog queue here (all with
        # clear_on_resume=True, so app.flow_control empties them).
        return HandBackQueue(
            maxsize=maxsize,
            flow_control=self.flow_control,
            clear_on_resume=clear_on_resume,
            on_clear=self._queue_cleared,
        )

    def _queue_cleared(self, items: Iterable[Any]) -> None:
        consumer = self.consumer
        if isinstance(consumer, Consumer):
            consumer.hand_back(items)
