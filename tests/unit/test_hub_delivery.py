"""Hub.deliver's position path (tracker_ws/web/hub.py): the frames it splices from cached
pieces are the bytes encode_position / encode_batch_fragment make, its caches follow
registry and geozone changes, and the delivery-latency histogram counts every fix."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram

from tracker_ws.domain import envelope
from tracker_ws.domain.models import (
    GpsFix,
    Sensors,
    SubscriptionType,
    UserContext,
    Vehicle,
    VehicleStatus,
)
from tracker_ws.domain.permissions import Permissions
from tracker_ws.domain.protocol import encode_batch_fragment, encode_position
from tracker_ws.domain.subscriptions import routing_key
from tracker_ws.metrics import LATENCY_BUCKETS, Metrics
from tracker_ws.web.hub import Hub

C1 = "c0000000-0000-4000-8000-000000000001"
C2 = "c0000000-0000-4000-8000-000000000002"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
G1 = "99999999-9999-4999-8999-999999999991"
Z1 = "88888888-8888-4888-8888-888888888881"


class Conn:
    def __init__(self, user: UserContext) -> None:
        self.conn_id = user.user_id
        self.user = user
        self.perms = Permissions(user)
        self.got: list[tuple[str, int, bytes | None, bytes]] = []
        self.events: list[int] = []
        self.stream = None  # the Hub keeps its position stream here
        self.shared = False

    def push_position(
        self, vehicle_id: str, event_id: int, single: bytes | None, fragment: bytes
    ) -> None:
        self.got.append((vehicle_id, event_id, single, fragment))

    def push_event(self, event_id: int, frame: bytes) -> None:
        self.events.append(event_id)


def payload(vehicle: Vehicle, *, sensors: Sensors | None = None, ts: int | None = None) -> bytes:
    fix = GpsFix(vehicle.vehicle_id, 55.7, 37.6, 12.5, 90, ts or 1_764_000_000_000, 140, 8, sensors)
    return envelope.encode(envelope.position_envelope(fix, vehicle, VehicleStatus.MOVING))


def expected(event_id: int, raw: bytes, single: bytes | None) -> tuple[bytes | None, bytes]:
    """What the pre-splicing code built: encode_position and encode_batch_fragment."""
    env = orjson.loads(raw)
    pos = orjson.dumps(env["p"])
    x = env.get("x")
    fragment = encode_batch_fragment(
        env["v"], env["n"], pos, env["s"], Sensors(**x) if isinstance(x, dict) else None
    )
    if env.get("status_only"):
        return None, fragment
    # The frame's own timestamp is the send time: take it from the frame under test.
    assert single is not None
    ts_ms = envelope_ts(single)
    return encode_position(event_id, env["v"], pos, ts_ms=ts_ms), fragment


def envelope_ts(frame: bytes) -> int:
    from tracker_ws.domain.protocol import parse_timestamp_ms

    return parse_timestamp_ms(orjson.loads(frame)["timestamp"])


@pytest.fixture
def hub() -> Hub:
    return Hub(Metrics("test"))


def subscribe(hub: Hub, user: UserContext, keys: list[str]) -> Conn:
    conn = Conn(user)
    hub.subscribe(conn, keys)  # type: ignore[arg-type]
    return conn


@pytest.mark.parametrize(
    "sensors",
    [None, Sensors(fuel=50.0), Sensors(fuel=1.5, temperature=-3.0, ignition=False, doors=True)],
)
def test_frames_are_the_encoders_bytes(hub: Hub, sensors: Sensors | None) -> None:
    vehicle = Vehicle(V1, C1, 'Truck "7" — №1', frozenset({G1}))
    conn = subscribe(hub, UserContext("u1", C1), [f"company:{C1}"])
    raw = payload(vehicle, sensors=sensors)
    hub.deliver([(41, raw), (42, raw)])
    assert [g[:2] for g in conn.got] == [(V1, 41), (V1, 42)]
    for vid, event_id, single, fragment in conn.got:
        assert (single, fragment) == expected(event_id, raw, single)
        assert orjson.loads(fragment)["vehicleId"] == vid


def test_sensors_in_another_shape_take_the_full_rule(hub: Hub) -> None:
    conn = subscribe(hub, UserContext("u1", C1), [f"company:{C1}"])
    env = orjson.loads(payload(Vehicle(V1, C1, "T")))
    env["x"] = {"ignition": True, "fuel": 3.0, "temperature": None}  # order, null
    raw = orjson.dumps(env)
    hub.deliver([(5, raw)])
    fragment = conn.got[0][3]
    assert fragment == expected(5, raw, conn.got[0][2])[1]
    assert b'"sensors":{"fuel":3.0,"ignition":true}' in fragment
    env["x"] = {"unknown": 1}
    hub.deliver([(6, orjson.dumps(env))])
    assert len(conn.got) == 1 and hub.skipped_deliveries == 1


def test_status_only_goes_in_batches_only(hub: Hub) -> None:
    conn = subscribe(hub, UserContext("u1", C1), [f"vehicle:{V1}"])
    env = orjson.loads(payload(Vehicle(V1, C1, "T")))
    env["status_only"] = True
    env["s"] = "offline"
    raw = orjson.dumps(env)
    hub.deliver([(9, raw)])
    [(_, _, single, fragment)] = conn.got
    assert single is None and fragment == expected(9, raw, None)[1]
    assert orjson.loads(fragment)["status"] == "offline"


def test_caches_follow_changes(hub: Hub) -> None:
    by_group = subscribe(hub, UserContext("u1", C1), [f"group:{G1}"])
    by_zone = subscribe(hub, UserContext("u2", C1), [f"geozone:{Z1}"])
    other = subscribe(hub, UserContext("u3", C2), [f"company:{C2}"])
    hub.deliver([(1, payload(Vehicle(V1, C1, "Old name")))])
    assert (len(by_group.got), len(by_zone.got), len(other.got)) == (0, 0, 0)
    hub.deliver([(2, payload(Vehicle(V1, C1, "New name", frozenset({G1}))))])
    assert len(by_group.got) == 1 and orjson.loads(by_group.got[0][3])["vehicleName"] == "New name"
    hub.geozones.apply(C1, V1, Z1, "entered")
    hub.deliver([(3, payload(Vehicle(V1, C1, "New name")))])
    assert len(by_zone.got) == 1 and len(by_group.got) == 1
    hub.geozones.apply(C1, V1, Z1, "exited")
    hub.deliver([(4, payload(Vehicle(V1, C1, "New name")))])
    assert len(by_zone.got) == 1
    # Moved to another company: its subscribers get it, and never the old company's.
    hub.deliver([(5, payload(Vehicle(V1, C2, "New name")))])
    assert [g[1] for g in other.got] == [5]


def test_narrowed_users_see_only_their_vehicles(hub: Hub) -> None:
    narrowed = subscribe(hub, UserContext("u1", C1, vehicle_ids=frozenset({V2})), [f"company:{C1}"])
    full = subscribe(hub, UserContext("u2", C1), [f"company:{C1}"])
    hub.deliver([(1, payload(Vehicle(V1, C1, "a"))), (2, payload(Vehicle(V2, C1, "b")))])
    assert [g[1] for g in narrowed.got] == [2]
    assert [g[1] for g in full.got] == [1, 2]


def test_delivery_latency_observed_per_fix(hub: Hub) -> None:
    subscribe(hub, UserContext("u1", C1), [f"company:{C1}"])
    now = int(time.time() * 1000)
    records = [
        (i + 1, payload(Vehicle(V1 if i % 2 else V2, C1, "x"), ts=now - lag))
        for i, lag in enumerate([1, 30, 30, 400, 9000])
    ]
    hub.deliver(records)
    hub.deliver([(9, payload(Vehicle(V1, C2, "not subscribed"), ts=now))])  # nobody: unobserved
    samples = {
        (s.name, s.labels.get("le")): s.value
        for s in hub.metrics.delivery.collect()[0].samples
        if s.labels.get("subscription_type") == "vehicles"
    }
    assert samples[("ws_message_delivery_duration_seconds_count", None)] == 5
    assert samples[("ws_message_delivery_duration_seconds_bucket", "0.005")] == 1
    assert samples[("ws_message_delivery_duration_seconds_bucket", "0.05")] == 3
    assert samples[("ws_message_delivery_duration_seconds_bucket", "0.5")] == 4
    assert samples[("ws_message_delivery_duration_seconds_bucket", "+Inf")] == 5


def test_delivery_latency_observed_for_events_by_subscription_type(hub: Hub) -> None:
    """Events carry the time the service took them in (`ts`); one observation per event
    that reached a connection, under its subscription type."""
    user = UserContext("a0000000-0000-4000-8000-00000000000a", C1)
    conn = subscribe(hub, user, [routing_key(SubscriptionType.NOTIFICATIONS, "user", user.user_id)])
    now = int(time.time() * 1000)

    def notification(ts: int, to: str = user.user_id) -> bytes:
        n = {"id": "n", "title": "t", "body": "", "category": "c", "priority": "normal", "data": {}}
        return envelope.encode({"t": envelope.NOTIFICATION, "u": to, "n": n, "ts": ts})

    hub.deliver([(1, notification(now - 300)), (2, notification(now - 2))])
    hub.deliver([(3, notification(now, to="b0000000-0000-4000-8000-00000000000b"))])  # nobody
    assert conn.events == [1, 2]
    samples = {
        (s.name, s.labels.get("le")): s.value
        for s in hub.metrics.delivery.collect()[0].samples
        if s.labels.get("subscription_type") == "notifications"
    }
    assert samples[("ws_message_delivery_duration_seconds_count", None)] == 2
    assert samples[("ws_message_delivery_duration_seconds_bucket", "0.25")] == 1
    assert samples[("ws_message_delivery_duration_seconds_bucket", "0.5")] == 2


def test_the_batch_histogram_exposes_what_a_prometheus_histogram_does() -> None:
    amounts = [0.0, 0.005, 0.0051, 0.1, 1.0, 2.4, 5.0, 7.5, 100.0, 0.02]
    reference = Histogram(
        "ws_message_delivery_duration_seconds",
        "",
        ["subscription_type"],
        registry=CollectorRegistry(),
        buckets=LATENCY_BUCKETS,
    )
    metrics = Metrics("a")
    for a in amounts:
        reference.labels("vehicles").observe(a)
    metrics.delivery_vehicles.observe_many(amounts[:4])
    metrics.delivery_vehicles.observe(amounts[4])
    metrics.delivery_vehicles.observe_many(amounts[5:])

    def samples(family: Any) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value) for s in family.samples if not s.name.endswith("_created")
        ]

    got = samples(metrics.delivery.collect()[0])
    want = samples(next(iter(reference.collect())))
    assert [(n, lb) for n, lb, _ in got] == [(n, lb) for n, lb, _ in want]
    assert [v for _, _, v in got] == pytest.approx([v for _, _, v in want])
    assert (
        b'ws_message_delivery_duration_seconds_bucket{le="0.005",subscription_type="vehicles"} 2.0'
        in metrics.render()
    )
