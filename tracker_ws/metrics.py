"""Prometheus metrics with the seed §7 names, on a registry of our own.

Children are bound once per label set (`labels()` is a dict lookup plus a lock; the hot
path should not pay for it per frame).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


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
            buckets=_LATENCY_BUCKETS,
        )
        self.delivery = Histogram(
            "ws_message_delivery_duration_seconds",
            "From event time (GPS fix time) to hand-off to the connection queues",
            ["subscription_type"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
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
        # Bound children for the hot path.
        self.sent_position = self.messages_sent.labels(instance, "position")
        self.delivery_vehicles = self.delivery.labels("vehicles")

    def sent(self, message_type: str) -> Counter:
        return self.messages_sent.labels(self.instance, message_type)  # type: ignore[no-any-return]

    def error(self, code: str) -> None:
        self.errors.labels(self.instance, code).inc()

    def stream(self, topic: str, outcome: str, n: int = 1) -> None:
        self.stream_events.labels(self.instance, topic, outcome).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """`histogram.observe(a)` for every amount, in one lock round per bucket touched instead
    of two per amount: the same buckets, count and sum (a delivery message of a thousand fixes
    mostly lands in one or two buckets). Falls back to observe() on a client library whose
    histogram child is laid out differently."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts: dict[int, int] = {}
    for amount in amounts:
        i = bisect_left(bounds, amount)  # the first bound >= amount, as observe() picks
        counts[i] = counts.get(i, 0) + 1
    total.inc(sum(amounts))
    for i, n in counts.items():
        buckets[i].inc(n)
