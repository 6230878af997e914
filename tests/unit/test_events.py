"""Stream input parsing (tracker_ws/domain/events.py) and the bus envelope (domain/envelope.py)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from tests.support.gps import CO, DROP, G1, G2, OTHER, TS_ISO, TS_MS, VID, event
from tracker_ws.domain import envelope
from tracker_ws.domain.errors import InvalidEvent, TooManyTargets
from tracker_ws.domain.events import (
    MAX_EVENT_BYTES,
    check_alert_targets,
    load_json,
    parse_gps_event,
)
from tracker_ws.domain.models import GpsFix, Sensors, Vehicle, VehicleStatus

# ------------------------------------------------------------------------------ valid events


def test_valid_minimal_iso_timestamp() -> None:
    fix = parse_gps_event(event())
    assert fix == GpsFix(VID, 52.52, 13.405, 42.5, 270, TS_MS)
    assert fix.altitude is None
    assert fix.satellites is None
    assert fix.sensors is None


@pytest.mark.parametrize(
    "ts",
    [
        TS_ISO,
        "2023-11-14T23:13:20.123+01:00",
        "2023-11-14T17:13:20.123-05:00",
        "2023-11-14T22:13:20.123456Z",  # sub-ms truncated
        TS_MS,
        float(TS_MS) + 0.9,  # epoch ms as float: floor
    ],
)
def test_timestamp_forms(ts: object) -> None:
    assert parse_gps_event(event(timestamp=ts)).timestamp_ms == TS_MS


def test_iso_without_fraction() -> None:
    fix = parse_gps_event(event(timestamp="2023-11-14T22:13:20Z"))
    assert fix.timestamp_ms == 1_700_000_000_000


def test_optional_fields_and_sensors() -> None:
    fix = parse_gps_event(
        event(
            altitude=35.7,
            satellites=11.0,  # integral float accepted
            course=90.9,
            speed=0,
            sensors={"fuel": 63.5, "temperature": -4, "ignition": True, "doors": False},
        )
    )
    assert fix.altitude == 35  # truncated to int
    assert isinstance(fix.altitude, int)
    assert fix.satellites == 11
    assert isinstance(fix.satellites, int)
    assert fix.course == 90
    assert isinstance(fix.course, int)
    assert fix.speed == 0.0
    assert fix.sensors == Sensors(fuel=63.5, temperature=-4.0, ignition=True, doors=False)


def test_partial_and_null_sensors() -> None:
    fix = parse_gps_event(event(sensors={"ignition": False, "fuel": None}))
    assert fix.sensors == Sensors(ignition=False)
    assert fix.sensors.to_json() == {"ignition": False}
    assert parse_gps_event(event(sensors={})).sensors == Sensors()
    assert parse_gps_event(event(sensors=None)).sensors is None
    assert parse_gps_event(event(altitude=None, satellites=None)).altitude is None


def test_vehicle_id_canonicalised_and_key_checked() -> None:
    fix = parse_gps_event(event(vehicleId=VID.upper()))
    assert fix.vehicle_id == VID
    assert parse_gps_event(event(), key=VID).vehicle_id == VID
    with pytest.raises(InvalidEvent, match="vehicleId"):
        parse_gps_event(event(), key=OTHER)


def test_range_boundaries_accepted() -> None:
    for lat, lon in ((-90, -180), (90, 180), (0, 0)):
        fix = parse_gps_event(event(latitude=lat, longitude=lon))
        assert (fix.lat, fix.lon) == (float(lat), float(lon))
    assert parse_gps_event(event(course=0)).course == 0
    assert parse_gps_event(event(course=360)).course == 360
    assert parse_gps_event(event(speed=2000)).speed == 2000.0
    assert parse_gps_event(event(satellites=0)).satellites == 0
    assert parse_gps_event(event(satellites=200)).satellites == 200


def test_unknown_fields_are_ignored() -> None:
    assert parse_gps_event(event(odometer=12345, driver="x")) == parse_gps_event(event())


# ------------------------------------------------------------------------------ malformed events

MALFORMED: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "JSON object"),
    ("null", None, "JSON object"),
    ("vehicleId missing", event(vehicleId=DROP), "vehicleId"),
    ("vehicleId not a UUID", event(vehicleId="truck-7"), "vehicleId"),
    ("vehicleId number", event(vehicleId=7), "vehicleId"),
    ("latitude missing", event(latitude=DROP), "latitude"),
    ("latitude too big", event(latitude=90.0001), "latitude"),
    ("latitude string", event(latitude="52.5"), "latitude"),
    ("latitude boolean", event(latitude=True), "latitude"),
    ("latitude NaN", event(latitude=math.nan), "latitude"),
    ("longitude missing", event(longitude=DROP), "longitude"),
    ("longitude too small", event(longitude=-180.5), "longitude"),
    ("speed missing", event(speed=DROP), "speed"),
    ("speed negative", event(speed=-1), "speed"),
    ("speed too high", event(speed=2000.1), "speed"),
    ("speed infinite", event(speed=math.inf), "speed"),
    ("course missing", event(course=DROP), "course"),
    ("course over 360", event(course=361), "course"),
    ("course string", event(course="N"), "course"),
    ("timestamp missing", event(timestamp=DROP), "timestamp"),
    ("timestamp garbage", event(timestamp="yesterday"), "timestamp"),
    ("timestamp naive ISO", event(timestamp="2023-11-14T22:13:20"), "timestamp"),
    ("timestamp boolean", event(timestamp=True), "timestamp"),
    ("timestamp out of range", event(timestamp=10**17), "timestamp"),
    ("timestamp infinite", event(timestamp=math.inf), "timestamp"),
    ("timestamp object", event(timestamp={"s": 1}), "timestamp"),
    ("altitude string", event(altitude="high"), "altitude"),
    ("altitude out of range", event(altitude=100001), "altitude"),
    ("satellites fractional", event(satellites=7.5), "satellites"),
    ("satellites negative", event(satellites=-1), "satellites"),
    ("satellites boolean", event(satellites=False), "satellites"),
    ("sensors not an object", event(sensors=[1]), "sensors"),
    ("sensors.fuel string", event(sensors={"fuel": "full"}), "sensors.fuel"),
    ("sensors.temperature inf", event(sensors={"temperature": math.inf}), "sensors.temperature"),
    ("sensors.ignition number", event(sensors={"ignition": 1}), "sensors.ignition"),
    ("sensors.doors string", event(sensors={"doors": "open"}), "sensors.doors"),
]


@pytest.mark.parametrize(
    ("value", "field"), [(v, f) for _, v, f in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_event_names_the_field(value: Any, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_gps_event(value)
    assert field in info.value.message
    assert str(info.value) == info.value.message
    assert info.value.code == "INVALID_EVENT"


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 15


# ------------------------------------------------------------------------------ load_json


def test_load_json_valid() -> None:
    raw = orjson.dumps(event(timestamp=TS_MS))
    assert load_json(raw) == event(timestamp=TS_MS)
    assert load_json(raw.decode()) == event(timestamp=TS_MS)
    assert parse_gps_event(load_json(raw)).timestamp_ms == TS_MS
    assert load_json(None) is None  # Kafka tombstone
    assert load_json(b"[1,2]") == [1, 2]


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"NaN", b"\xff\xfe", "nope"])
def test_load_json_not_json(raw: bytes | str) -> None:
    with pytest.raises(InvalidEvent, match="not JSON"):
        load_json(raw)


def test_load_json_oversize() -> None:
    pad = b" " * (MAX_EVENT_BYTES - 2)
    assert load_json(b"{" + pad + b"}") == {}  # exactly at the limit: fine
    with pytest.raises(InvalidEvent, match=str(MAX_EVENT_BYTES)) as info:
        load_json(b"{" + pad + b" }")
    assert str(MAX_EVENT_BYTES + 1) in info.value.message
    big = orjson.dumps(event(note="x" * MAX_EVENT_BYTES))
    with pytest.raises(InvalidEvent, match="exceeds"):
        load_json(big)
    with pytest.raises(InvalidEvent, match="exceeds"):
        load_json(big.decode())


# ------------------------------------------------------------------------------ envelope


def _vehicle() -> Vehicle:
    return Vehicle(VID, CO, "Truck 7 – Süd", frozenset({G2, G1}))


def test_position_envelope_round_trip() -> None:
    fix = parse_gps_event(
        event(altitude=35, satellites=9, sensors={"fuel": 50.5, "ignition": True})
    )
    env = envelope.position_envelope(fix, _vehicle(), VehicleStatus.MOVING)
    assert env == {
        "t": envelope.POSITION,
        "v": VID,
        "c": CO,
        "g": [G1, G2],  # sorted
        "n": "Truck 7 – Süd",
        "s": "moving",
        "p": {
            "lat": 52.52,
            "lon": 13.405,
            "speed": 42.5,
            "course": 270,
            "altitude": 35,
            "satellites": 9,
            "timestamp": TS_ISO,
        },
        "ts": TS_MS,
        "x": {"fuel": 50.5, "ignition": True},
    }
    raw = envelope.encode(env)
    assert isinstance(raw, bytes)
    assert b"\n" not in raw
    assert envelope.decode(raw) == env


def test_position_envelope_without_optional_fields() -> None:
    fix = parse_gps_event(event(timestamp=TS_MS))
    env = envelope.position_envelope(fix, Vehicle(VID, CO, ""), VehicleStatus.NO_GPS)
    assert "x" not in env
    assert env["g"] == []
    assert env["s"] == "noGps"
    assert "altitude" not in env["p"]
    assert "satellites" not in env["p"]
    assert envelope.decode(envelope.encode(env)) == env


@pytest.mark.parametrize("raw", [b"[1]", b"1", b'"pos"', b"null"])
def test_envelope_decode_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        envelope.decode(raw)


def test_envelope_decode_rejects_invalid_json() -> None:
    with pytest.raises(ValueError):
        envelope.decode(b"{not json")


# ---------------------------------------------------------------- alert fan-out (issue 10.6)


def test_an_alert_is_stored_once_whatever_its_targets() -> None:
    companies = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(1000)]
    env = envelope.alert_envelope("info", "m", companies, None, None)
    assert envelope.history_streams(env) == [envelope.ALL_HISTORY]
    everyone = envelope.alert_envelope("info", "m", None, None, None)
    assert envelope.history_streams(everyone) == [envelope.ALL_HISTORY]
    # ...and every session reads that stream, so recovery still finds it.
    assert envelope.ALL_HISTORY in envelope.session_streams(VID, CO)


def test_alert_targets_are_capped() -> None:
    check_alert_targets(None, 2)
    check_alert_targets([CO, OTHER], 2)
    with pytest.raises(TooManyTargets) as err:
        check_alert_targets([CO, OTHER, VID], 2)
    assert err.value.code == "TOO_MANY_TARGETS" and err.value.http_status == 400
    assert "3 targetCompanyIds" in err.value.message
    assert isinstance(err.value, InvalidEvent)  # stream input: counted and skipped
