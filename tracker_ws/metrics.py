"""Prometheus metrics with the seed §7 names, on a registry of our own.

Children are bound once per label set (`labels()` is a dict lookup plus a lock; the hot
path should not pay for it per frame).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tracker_ws.domain.protocol import message_type_of

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A metric's children by the value of its last label, the labels before it fixed: each
    bound once (`labels()` builds the key and takes a lock per call; per client frame that
    was 3.7% of the connect path in S1)."""

    __slots__ = ("_by_value", "_fixed", "_metric")

    def __init__(self, metric: M, *fixed: str) -> None:
        self._metric = metric
        self._fixed = fixed
        self._by_value: dict[str, M] = {}

    def __call__(self, value: str) -> M:
        child = self._by_value.get(value)
        if child is None:
            child = self._by_value[value] = self._metric.labels(*self._fixed, value)
        return child


LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_connections = Gauge(
            "ws_active_connections",
            "Open WebSocket connections",
            ["instance", "platform"],
            registry=r,
        )
        self.active_subscriptions = Gauge(
            "ws_active_subscriptions",
            "Subscription entries by type",
            ["instance", "subscription_type"],
            registry=r,
        )
        self.connections_total = Counter(
            "ws_connections_total", "Connections by outcome", ["instance", "status"], registry=r
        )
        self.messages_received = Counter(
            "ws_messages_received_total", "Client frames", ["instance", "message_type"], registry=r
        )
        self.messages_sent = Counter(
            "ws_messages_sent_total", "Server frames", ["instance", "message_type"], registry=r
        )
        self.errors = Counter(
            "ws_errors_total", "Errors by code", ["instance", "error_type"], registry=r
        )
        self.processing = Histogram(
            "ws_message_processing_duration_seconds",
            "Time to handle one client frame or stream event",
            ["message_type"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.delivery = BatchHistogram(
            "ws_message_delivery_duration_seconds",
            "From event time (GPS fix time) to hand-off to the connection queues",
            "subscription_type",
            LATENCY_BUCKETS,
            r,
        )
        self.stream_events = Counter(
            "ws_stream_events_total",
            "Stream input events by topic and outcome (ok, invalid, unregistered)",
            ["instance", "topic", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "ws_outbound_queue_depth",
            "Frames waiting in connection queues",
            ["instance"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "ws_slow_consumer_closes_total",
            "Connections closed with 4009",
            ["instance"],
            registry=r,
        )
        self.recoveries = Counter(
            "ws_recoveries_total",
            "Reconnects with lastEventId by outcome (recovered, expired, trimmed, no_state, …)",
            ["instance", "outcome"],
            registry=r,
        )
        self.broker_up = Gauge(
            "ws_broker_up",
            "1 while this instance's Kafka client reaches a broker (checked every 5 s)",
            ["instance"],
            registry=r,
        )
        self.redis_up = Gauge(
            "ws_redis_up",
            "1 while this instance's Redis delivery subscription is live",
            ["instance"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "ws_consumer_lag",
            "Input records on the broker not yet processed, per partition this instance owns",
            ["instance", "topic", "partition"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "ws_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 0.25 s (web/looplag.py): while the "
            "loop is held, every frame, fix and reply waits",
            ["instance"],
            registry=r,
            buckets=LOOP_LAG_BUCKETS,
        )
        self.stalled_partitions = Gauge(
            "ws_stalled_partitions",
            "Input partitions of this instance with records waiting and no progress "
            "for TRACKER_WS_STALL_AFTER_S seconds",
            ["instance"],
            registry=r,
        )
        # CPU, memory, file descriptors, start time; Python version; garbage collections.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # Bound children for the hot path.
        self.delivery_vehicles = self.delivery.labels("vehicles")
        self.sent = Children(self.messages_sent, instance)  # by message type
        self.received = Children(self.messages_received, instance)  # by message type
        self.processed = Children(self.processing)  # by message type
        self.connections = Children(self.connections_total, instance)  # by outcome
        self.connected = Children(self.active_connections, instance)  # by platform
        self._errors = Children(self.errors, instance)

    def count_sent(self, writes: dict[bytes, int]) -> None:
        """A flush pass's writes per message (web/flusher.py), counted by message type."""
        by_type: dict[str, int] = {}
        for payload, n in writes.items():
            mtype = message_type_of(payload)
            by_type[mtype] = by_type.get(mtype, 0) + n
        for mtype, n in by_type.items():
            self.sent(mtype).inc(n)

    def watch_state(
        self,
        broker_up: Callable[[], bool],
        redis_up: Callable[[], bool],
        stalled: Callable[[], int],
    ) -> None:
        """Read the up gauges and the stalled partitions from the runtime at scrape time."""
        self.broker_up.labels(self.instance).set_function(lambda: float(broker_up()))
        self.redis_up.labels(self.instance).set_function(lambda: float(redis_up()))
        self.stalled_partitions.labels(self.instance).set_function(lambda: float(stalled()))

    def set_consumer_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """(topic, partition, lag) of every input partition owned now; the others go."""
        self.consumer_lag.clear()
        for topic, partition, lag in lags:
            self.consumer_lag.labels(self.instance, topic, str(partition)).set(lag)

    def error(self, code: str) -> None:
        self._errors(code).inc()

    def stream(self, topic: str, outcome: str, n: int = 1) -> None:
        self.stream_events.labels(self.instance, topic, outcome).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchHistogram(Collector):
    """A Prometheus histogram family fed a list of observations at a time.

    prometheus_client's Histogram takes one value per call, with two lock rounds each; the
    delivery latency is measured for every delivered fix, a thousand per Redis message at
    full ingest. This one counts a whole list with one bisect per value and no lock (it is
    fed and scraped on the event loop). Exposed through the library's public collector
    interface, with the same samples a Histogram has (`_bucket`, `_count`, `_sum`)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = [*sorted(buckets), math.inf]
        # The `le` label values, formatted as prometheus_client's Histogram does.
        self._le: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._children: dict[str, BatchHistogramChild] = {}
        registry.register(self)

    def labels(self, value: str) -> BatchHistogramChild:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = BatchHistogramChild(self.bounds)
        return child

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in self._children.items():
            cumulative = accumulate(child.counts)
            buckets = [(self._le[i], n) for i, n in enumerate(cumulative)]
            family.add_metric([value], buckets, child.sum)
        return [family]


class BatchHistogramChild:
    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.observe_many((amount,))

    def observe_many(self, amounts: Iterable[float]) -> None:
        """Each amount lands in the first bucket whose bound is >= it, as in Prometheus."""
        bounds, counts = self._bounds, self.counts
        total = 0.0
        for amount in amounts:
            counts[bisect_left(bounds, amount)] += 1
            total += amount
        self.sum += total
