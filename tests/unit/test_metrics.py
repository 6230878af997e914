"""tracker_ws/metrics.py: sent messages counted by their real type, delivery latency for every
subscription type, consumer lag per owned partition, the backends' up gauges, process metrics —
read back from the exposition text as Prometheus would scrape it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tracker_ws.domain import envelope
from tracker_ws.domain.models import SubscriptionType
from tracker_ws.domain.protocol import (
    SERVER_MESSAGE_TYPES,
    encode_connected,
    encode_error,
    encode_geo_event,
    encode_notification,
    encode_pong,
    encode_position,
    encode_position_batch,
    encode_system_alert,
    message_type_of,
)
from tracker_ws.metrics import Metrics


def samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_message_type_is_read_back_from_every_encoder() -> None:
    frames = {
        "connected": encode_connected("c", server_time_ms=0),
        "error": encode_error("X", "y"),
        "pong": encode_pong(),
        "position": encode_position(1, "v", b"{}"),
        "positionBatch": encode_position_batch(1, [b"{}"]),
        "geoEvent": encode_geo_event(1, {}),
        "notification": encode_notification(1, {}),
        "systemAlert": encode_system_alert(1, "info", "m"),
    }
    assert {t: message_type_of(f) for t, f in frames.items()} == {t: t for t in frames}
    assert set(frames) <= SERVER_MESSAGE_TYPES


def test_anything_else_is_other_so_labels_stay_bounded() -> None:
    for frame in (b"", b"[]", b'{"type":"', b'{"type":"made-up"}', b'{"eventId":1,"type":"pong"}'):
        assert message_type_of(frame) == "other"


def test_sent_counts_by_message_type() -> None:
    m = Metrics("ws-1")
    m.count_sent({encode_pong(): 3, encode_connected("c", server_time_ms=0): 2})
    m.count_sent({encode_pong(): 1, encode_position_batch(7, [b"{}"]): 40})
    got = samples(m, "ws_messages_sent_total")
    assert got == {
        (("instance", "ws-1"), ("message_type", "pong")): 4,
        (("instance", "ws-1"), ("message_type", "connected")): 2,
        (("instance", "ws-1"), ("message_type", "positionBatch")): 40,
    }


def test_every_envelope_kind_has_its_subscription_type() -> None:
    kinds = {envelope.POSITION, envelope.GEO, envelope.MAINTENANCE, envelope.NOTIFICATION}
    kinds.add(envelope.ALERT)
    assert set(envelope.SUBSCRIPTION_OF) == kinds
    assert set(envelope.SUBSCRIPTION_OF.values()) == {t.value for t in SubscriptionType}


def test_consumer_lag_follows_the_owned_partitions() -> None:
    m = Metrics("ws-1")
    m.set_consumer_lag([("gps-events", 0, 5), ("gps-events", 3, 0)])
    m.set_consumer_lag([("gps-events", 3, 12)])  # partition 0 went to another instance
    assert samples(m, "ws_consumer_lag") == {
        (("instance", "ws-1"), ("partition", "3"), ("topic", "gps-events")): 12
    }


def test_state_gauges_read_the_runtime_at_scrape_time() -> None:
    m = Metrics("ws-1")
    state: dict[str, bool] = {"broker": True, "redis": False}
    stalled = ["gps-events[3]"]
    m.watch_state(lambda: state["broker"], lambda: state["redis"], lambda: len(stalled))
    me = (("instance", "ws-1"),)
    assert samples(m, "ws_broker_up") == {me: 1}
    assert samples(m, "ws_redis_up") == {me: 0}
    assert samples(m, "ws_stalled_partitions") == {me: 1}
    state.update(broker=False, redis=True)
    stalled.clear()
    assert samples(m, "ws_broker_up") == {me: 0}
    assert samples(m, "ws_redis_up") == {me: 1}
    assert samples(m, "ws_stalled_partitions") == {me: 0}


def test_process_metrics_are_exported() -> None:
    names = {f.name for f in text_string_to_metric_families(Metrics("ws-1").render().decode())}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
