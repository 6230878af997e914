"""tracker_ws/tables/records.py: the GpsEvent model data engineers use describes exactly what
the GPS agent accepts — what it serialises, the fast and the strict parser both take, to the
same record; what the simulator produces, it reads without loss; nothing extra on the wire."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tracker_ws.domain.events import parse_gps_event
from tracker_ws.domain.fixes import parse_gps_record, record_of
from tracker_ws.tables.records import GpsEvent, GpsSensors
from tracker_ws_dev.simulator import Fleet

VID = "11111111-1111-4111-8111-111111111111"
SENSORS = GpsSensors(fuel=40.5, doors=True)


def both(raw: bytes) -> Any:
    """The record both parsers make of `raw` (with its vehicleId as the message key)."""
    value = orjson.loads(raw)
    key = value["vehicleId"]
    fast = parse_gps_record(value, key)
    assert fast == record_of(parse_gps_event(value, key))
    return fast


@pytest.mark.parametrize(
    "event",
    [
        GpsEvent(VID, 55.75, 37.62, 42.5, 90, "2026-12-07T10:00:00.123Z"),
        GpsEvent(VID, -33.9, 151.2, 0, 0, "2026-12-07T10:00:00Z", altitude=120, satellites=9),
        GpsEvent(
            VID,
            0,
            0,
            1999.9,
            360,
            "2026-12-07T10:00:00Z",
            sensors=GpsSensors(fuel=40.5, doors=True),
        ),
        GpsEvent(VID, 90, -180, 5, 45, "2026-12-07T10:00:00+03:00", sensors=GpsSensors()),
    ],
)
def test_what_the_model_serialises_the_agent_accepts(event: GpsEvent) -> None:
    raw = event.dumps()
    assert b"__faust" not in raw  # plain JSON, as any producer sends it
    record = both(raw)
    assert record.vehicle_id == VID
    assert record.position["lat"] == event.latitude and record.position["lon"] == event.longitude


def test_the_simulators_fixes_load_into_the_model_and_back() -> None:
    fleet = Fleet.build(5, 1, seed=3)
    for vehicle in fleet.vehicles:
        fix = vehicle.fix(1_765_000_000.0)
        event = GpsEvent.loads(orjson.dumps(fix))
        assert set(fix) <= set(GpsEvent._options.fields)  # no field the model does not know
        assert both(event.dumps()) == both(orjson.dumps(fix))


def test_the_model_is_listed_under_its_name() -> None:
    from faust.models import registry

    assert registry["tracker_ws.tables.records.GpsEvent"] is GpsEvent
