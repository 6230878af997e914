"""The simulator's geofence crossing detection and the other inputs it produces
(tracker_ws_dev/simulator.py): pure code, no broker."""

from __future__ import annotations

import inspect
import itertools
import math
import uuid
from typing import Any

import pytest

from tracker_ws.domain.events import (
    parse_geo_event,
    parse_maintenance,
    parse_notification,
    parse_system_alert,
)
from tracker_ws_dev.simulator import (
    GEO_EVENTS,
    MAINTENANCE_EVENTS,
    NOTIFICATIONS,
    SYSTEM_ALERTS,
    Fleet,
    FleetEvents,
    Geozone,
    SimVehicle,
    crossings,
    dev_user_id,
    distance_m,
    run_simulator,
    sim_id,
)

CO = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
OTHER_CO = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
M_PER_DEG = 111_320.0
T0 = 1_790_000_000.0


def circle(n: int, lat: float, lon: float, radius_m: float, company: str = CO) -> Geozone:
    return Geozone(f"00000000-0000-4000-8000-{n:012d}", company, f"Zone {n}", (lat, lon), radius_m)


def rect(n: int, lat: float, lon: float, half_lat: float, half_lon: float) -> Geozone:
    return Geozone(
        f"00000000-0000-4000-8000-{n:012d}",
        CO,
        f"Zone {n}",
        (lat, lon),
        half_span_deg=(half_lat, half_lon),
    )


# ------------------------------------------------------------------------------ geometry


def test_distance_along_a_meridian_and_a_parallel() -> None:
    assert distance_m((55.0, 37.0), (55.01, 37.0)) == pytest.approx(0.01 * M_PER_DEG)
    east = distance_m((55.0, 37.0), (55.0, 37.01))
    assert east == pytest.approx(0.01 * M_PER_DEG * math.cos(math.radians(55.0)))


def test_circle_contains_points_up_to_its_radius() -> None:
    zone = circle(1, 55.75, 37.62, 500.0)
    assert zone.shape == "circle"
    assert zone.contains(55.75, 37.62)
    assert zone.contains(55.75 + 499.0 / M_PER_DEG, 37.62)
    assert not zone.contains(55.75 + 501.0 / M_PER_DEG, 37.62)
    # East-west the same metres are more degrees of longitude at this latitude.
    lon_per_m = 1 / (M_PER_DEG * math.cos(math.radians(55.75)))
    assert zone.contains(55.75, 37.62 + 499.0 * lon_per_m)
    assert not zone.contains(55.75, 37.62 + 501.0 * lon_per_m)


def test_rectangle_contains_up_to_its_edges_and_nothing_beyond() -> None:
    zone = rect(1, 55.0, 37.0, 0.01, 0.02)
    assert zone.shape == "rectangle"
    for lat, lon in [(55.0, 37.0), (55.0099, 37.0199), (54.9901, 36.9801), (55.0099, 36.9801)]:
        assert zone.contains(lat, lon), (lat, lon)
    for lat, lon in [(55.0101, 37.0), (55.0, 37.0201), (54.9899, 37.0), (55.0, 36.9799)]:
        assert not zone.contains(lat, lon), (lat, lon)


# ------------------------------------------------------------------------------ crossings


def test_first_position_inside_enters_and_staying_inside_is_quiet() -> None:
    z = circle(1, 55.0, 37.0, 1000.0)
    inside, entered, exited = crossings(frozenset(), [z], 55.0, 37.0)
    assert (inside, entered, exited) == (frozenset({z.geozone_id}), [z], [])
    assert crossings(inside, [z], 55.001, 37.0) == (inside, [], [])


def test_leaving_exits_and_outside_stays_quiet() -> None:
    z = circle(1, 55.0, 37.0, 1000.0)
    inside = frozenset({z.geozone_id})
    now, entered, exited = crossings(inside, [z], 55.1, 37.0)
    assert (now, entered, exited) == (frozenset(), [], [z])
    assert crossings(now, [z], 55.2, 37.0) == (frozenset(), [], [])


def test_jump_from_one_zone_into_another_exits_and_enters() -> None:
    a = circle(1, 55.0, 37.0, 500.0)
    b = rect(2, 55.1, 37.0, 0.01, 0.01)
    inside, _, _ = crossings(frozenset(), [a, b], 55.0, 37.0)
    now, entered, exited = crossings(inside, [a, b], 55.1, 37.0)
    assert (now, entered, exited) == (frozenset({b.geozone_id}), [b], [a])


def test_overlapping_zones_are_entered_together_in_id_order() -> None:
    a, b, c = circle(3, 55.0, 37.0, 800.0), circle(1, 55.0, 37.0, 300.0), circle(2, 56, 37, 1)
    inside, entered, exited = crossings(frozenset(), [a, b, c], 55.0, 37.0)
    assert inside == {a.geozone_id, b.geozone_id}
    assert entered == [b, a] and exited == []
    # Out of the small one, still inside the big one.
    inside, entered, exited = crossings(inside, [a, b, c], 55.0 + 500 / M_PER_DEG, 37.0)
    assert (inside, entered, exited) == (frozenset({a.geozone_id}), [], [b])


def test_a_straight_drive_through_a_circle_crosses_it_once_each_way() -> None:
    z = circle(1, 55.0, 37.0, 1000.0)
    inside: frozenset[str] = frozenset()
    kinds = []
    for step in range(-30, 31):  # 100 m steps from 3 km south to 3 km north
        inside, entered, exited = crossings(inside, [z], 55.0 + step * 100 / M_PER_DEG, 37.0)
        kinds += ["exited"] * len(exited) + ["entered"] * len(entered)
    assert kinds == ["entered", "exited"]


# ------------------------------------------------------------------------------ the fleet


def test_fleet_has_named_circles_and_rectangles_per_company_deterministic_by_seed() -> None:
    fleet = Fleet.build(50, 2, seed=1)
    again = Fleet.build(50, 2, seed=1)
    other = Fleet.build(50, 2, seed=2)
    assert fleet.geozones == again.geozones
    assert fleet.geozones != other.geozones
    for c in (0, 1):
        zones = fleet.zones_of(sim_id("company", c))
        assert [z.geozone_id for z in zones] == [sim_id(f"geozone-{c}", k) for k in range(4)]
        assert [z.name for z in zones] == ["Depot", "Client site", "Warehouse", "Service station"]
        assert [z.shape for z in zones] == ["circle", "rectangle"] * 2
    assert len({z.geozone_id for z in fleet.geozones}) == 8
    for z in fleet.geozones:
        uuid.UUID(z.geozone_id)
        # Around the fleet's area (Moscow, as the vehicles).
        assert 55.5 < z.center[0] < 56.0 and 37.2 < z.center[1] < 38.0, z


def test_zones_do_not_change_the_vehicles_of_a_seed() -> None:
    assert (
        Fleet.build(20, 2, seed=3).vehicles
        == Fleet.build(20, 2, seed=3, geozones_per_company=0).vehicles
    )
    assert Fleet.build(20, 2, seed=3, geozones_per_company=0).geozones == []


def drive(
    events: FleetEvents, vehicle: SimVehicle, seconds: float, every: float = 2.5
) -> list[Any]:
    out = []
    for k in range(int(seconds / every)):
        out += events.on_fix(vehicle, vehicle.fix(T0 + k * every))
    return out


def test_a_lap_of_the_host_vehicle_crosses_its_zone() -> None:
    """Each zone sits astride the loop of one of its company's vehicles: a lap (plus the time
    standing still one minute in four) enters and leaves it, entered/exited alternating."""
    fleet = Fleet.build(50, 2, seed=1)
    for zone in fleet.geozones:
        events = FleetEvents(fleet)
        host = min(
            (v for v in fleet.vehicles if v.company_id == zone.company_id),
            key=lambda v: distance_m(zone.center, _on_loop(v, zone)),
        )
        assert zone.contains(*_on_loop(host, zone))
        lap = 2 * math.pi / abs(host.angular_speed)
        geo = [
            value
            for topic, key, value in drive(events, host, lap * 4 / 3 + 120)
            if topic == GEO_EVENTS and value["geozoneId"] == zone.geozone_id
        ]
        kinds = [g["eventType"] for g in geo]
        assert "entered" in kinds and "exited" in kinds, (zone.name, kinds)
        assert all(a != b for a, b in itertools.pairwise(kinds)), kinds


def _on_loop(v: SimVehicle, zone: Geozone) -> tuple[float, float]:
    """The point of `v`'s loop closest to the zone centre."""
    best = min(
        range(360),
        key=lambda d: distance_m(
            zone.center,
            (
                v.center[0] + v.radius_deg * math.sin(math.radians(d)),
                v.center[1] + v.radius_deg * math.cos(math.radians(d)) * 1.8,
            ),
        ),
    )
    rad = math.radians(best)
    return (
        v.center[0] + v.radius_deg * math.sin(rad),
        v.center[1] + v.radius_deg * math.cos(rad) * 1.8,
    )


def test_geo_events_are_valid_input_for_the_service_and_only_of_the_own_company() -> None:
    fleet = Fleet.build(50, 2, seed=1)
    events = FleetEvents(fleet)
    produced = []
    for v in fleet.vehicles:
        produced += [(key, value) for topic, key, value in drive(events, v, 1800, every=5.0)]
    geo = [(k, v) for k, v in produced if "geozoneId" in v]
    assert len(geo) > 10
    zones = {z.geozone_id: z for z in fleet.geozones}
    for key, value in geo:
        env, _ = parse_geo_event(value, key)  # the worker's own validation
        assert key == value["vehicleId"]
        zone = zones[value["geozoneId"]]
        assert (value["geozoneName"], value["companyId"]) == (zone.name, zone.company_id)
        assert env["e"]["eventType"] in ("entered", "exited")
        inside = zone.contains(value["position"]["lat"], value["position"]["lon"])
        assert inside == (value["eventType"] == "entered"), value


def test_run_simulator_keeps_its_signature_and_adds_keyword_options() -> None:
    params = inspect.signature(run_simulator).parameters
    assert list(params)[:2] == ["broker", "fleet"]
    for name in ("rate", "duration", "report_every"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    for name, p in params.items():
        if name not in ("broker", "fleet", "rate"):
            assert p.default is not inspect.Parameter.empty, name


# ------------------------------------------------------------------------------ notifications


def test_dev_user_id_is_the_dev_tokens_user() -> None:
    assert dev_user_id() == str(uuid.uuid5(uuid.NAMESPACE_URL, "tracker-ws-dev-user"))


def _vehicle(company: str, speed_kmh: float) -> SimVehicle:
    """A vehicle whose simulated speed (while moving) is `speed_kmh`."""
    radius = 0.02
    omega = speed_kmh / (radius * 111_000 * 3.6)
    return SimVehicle(str(uuid.uuid4()), company, "А123ВС", [], (55.75, 37.62), radius, 0.5, omega)


def _moving_fixes(v: SimVehicle, seconds: float, every: float = 1.0) -> list[dict[str, Any]]:
    fixes = [v.fix(T0 + k * every) for k in range(int(seconds / every))]
    return [f for f in fixes if f["speed"] > 0]


def test_speeding_notifies_the_dev_user_at_most_every_interval_for_its_company_only() -> None:
    fast, slow, foreign = _vehicle(CO, 80.0), _vehicle(CO, 40.0), _vehicle(OTHER_CO, 80.0)
    fleet = Fleet([fast, slow, foreign])
    user = dev_user_id()
    events = FleetEvents(
        fleet, speed_limit_kmh=60, notify_user=user, notify_company=CO, notify_every_s=30
    )
    notes = []
    for v in (fast, slow, foreign):
        for fix in _moving_fixes(v, 100):
            for topic, key, value in events.on_fix(v, fix):
                assert topic == NOTIFICATIONS and key == user
                notes.append((fix, value))
    assert notes, "the fast vehicle of the dev user's company was never reported"
    times = [fix["timestamp"] for fix, _ in notes]
    assert all(b - a >= 30_000 for a, b in itertools.pairwise(times)), times
    for _, value in notes:
        env, _ = parse_notification(value)  # the worker's own validation
        n = value["notification"]
        assert value["userId"] == user and env["u"] == user
        assert n["category"] == "speed" and n["title"] == "Speeding"
        assert n["data"] == {"vehicleId": fast.vehicle_id, "speed": "80", "limit": "60"}
        assert "А123ВС" in n["body"] and "80 km/h" in n["body"]
    assert len({v["notification"]["id"] for _, v in notes}) == len(notes)


def test_no_notifications_without_a_user() -> None:
    fast = _vehicle(CO, 120.0)
    events = FleetEvents(Fleet([fast]), notify_user=None, notify_company=CO)
    assert all(events.on_fix(fast, f) == [] for f in _moving_fixes(fast, 30))


# ------------------------------------------------------------------------------ maintenance, alerts


def test_maintenance_reminders_go_round_the_fleet_in_a_seeded_order() -> None:
    fleet = Fleet.build(10, 2, seed=1)
    events = FleetEvents(fleet, seed=7)
    reminders = [events.maintenance(n) for n in range(10)]
    assert [r[2] for r in reminders] == [
        FleetEvents(fleet, seed=7).maintenance(n)[2] for n in range(10)
    ]
    assert {r[1] for r in reminders} == {v.vehicle_id for v in fleet.vehicles}
    assert reminders[0][2]["title"] == "Oil change due"
    for topic, key, value in reminders:
        assert topic == MAINTENANCE_EVENTS and key == value["vehicleId"]
        env, _ = parse_maintenance(value, key)
        assert env["n"]["category"] == "maintenance" and env["n"]["id"] == value["id"]
        assert env["c"] == value["companyId"]
    assert len({r[2]["id"] for r in reminders}) == 10


def test_alert_targets_the_fleets_companies() -> None:
    fleet = Fleet.build(4, 2)
    topic, key, value = FleetEvents(fleet).alert(0, 1_790_000_000_000)
    env, _ = parse_system_alert(value)
    assert topic == SYSTEM_ALERTS and key == ""
    assert env["level"] == "info" and env["companies"] == fleet.company_ids()
    assert fleet.company_ids() == sorted([sim_id("company", 0), sim_id("company", 1)])
