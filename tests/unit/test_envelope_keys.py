"""Every key an envelope is built with is declared once, in its kind's TypedDict
(tracker_ws/domain/envelope.py): the builders, the stream parsers over an hour of simulated
fleet events, and the offline timer's status-only position."""

from __future__ import annotations

from typing import Any, NotRequired, get_origin, get_type_hints

from tracker_ws.domain import envelope
from tracker_ws.domain.events import PARSERS
from tracker_ws.domain.models import GpsFix, Sensors, Vehicle, VehicleStatus
from tracker_ws_dev.simulator import Fleet, FleetEvents

USER = "a0000000-0000-4000-8000-000000000001"
DECLARED = {
    envelope.POSITION: envelope.PositionEnvelope,
    envelope.GEO: envelope.GeoEnvelope,
    envelope.MAINTENANCE: envelope.MaintenanceEnvelope,
    envelope.NOTIFICATION: envelope.NotificationEnvelope,
    envelope.ALERT: envelope.AlertEnvelope,
}


def keys_of(td: Any) -> tuple[set[str], set[str]]:
    """(required, optional) keys, from the evaluated annotations (NotRequired marks the
    optional ones)."""
    hints = get_type_hints(td, include_extras=True)
    optional = {k for k, v in hints.items() if get_origin(v) is NotRequired}
    return set(hints) - optional, optional


def check(env: Any) -> None:
    required, optional = keys_of(DECLARED[env["t"]])
    assert required <= env.keys() <= required | optional, (env["t"], sorted(env))


def test_position_envelopes_use_declared_keys_only() -> None:
    v = Vehicle("11111111-1111-4111-8111-111111111111", "c1", "truck", frozenset({"g"}))
    for sensors in (None, Sensors(fuel=1.0, ignition=True)):
        fix = GpsFix(v.vehicle_id, 55.7, 37.6, 10.0, 90, 1_790_000_000_000, 100, 7, sensors)
        env = envelope.position_envelope(fix, v, VehicleStatus.MOVING)
        check(env)
        check({**env, "s": VehicleStatus.OFFLINE.value, "status_only": True})  # offline timer


def test_alert_envelopes_use_declared_keys_only() -> None:
    check(envelope.alert_envelope("info", "m", None, "req-1", "instance-1"))


def test_parsed_stream_events_use_declared_keys_only() -> None:
    fleet = Fleet.build(20, 2, seed=3)
    company = fleet.company_ids()[0]
    events = FleetEvents(
        fleet, speed_limit_kmh=30, notify_user=USER, notify_company=company, notify_every_s=60
    )
    produced = [events.maintenance(n) for n in range(5)]
    produced.append(events.alert(0, 1_790_000_000_000))
    for k in range(720):  # an hour of fixes every 5 s
        for vehicle in fleet.vehicles:
            produced += events.on_fix(vehicle, vehicle.fix(1_790_000_000 + 5.0 * k))
    seen: set[str] = set()
    for topic, key, value in produced:
        env, _ = PARSERS[topic](value, key or None)
        check(env)
        seen.add(env["t"])
    assert seen == {envelope.GEO, envelope.NOTIFICATION, envelope.MAINTENANCE, envelope.ALERT}
