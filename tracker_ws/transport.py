"""Faust's aiokafka transport with a short fetch long-poll.

faust-streaming hard-codes `fetch_max_wait_ms=1500` for the worker consumer. Brokers that
hold a fetch until the wait expires even when data arrives (seen with the embedded Tansu)
then add up to 1.5 s to every delivery. Positions must arrive within a blink, so the wait is
cut to `TRACKER_WS_FETCH_MAX_WAIT_MS` (default 50). The price is idle polling: every poll
decodes a fetch response for each assigned partition (measured: a 20 ms wait cost about a
tenth of a core on an idle worker). With a broker that answers as soon as data arrives
(Apache Kafka), a longer wait costs no latency at all.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
        settings = getattr(self.app, "rt", None)
        wait = settings.settings.fetch_max_wait_ms if settings is not None else FETCH_MAX_WAIT_MS
        consumer._fetch_max_wait_ms = wait
        return consumer


class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = Consumer
