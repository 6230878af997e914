"""The GPS agent's fast path (tracker_ws/domain/fixes.py) against the strict parser it stands in
for: same records, same rejections, same messages, same envelopes and statuses."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.support.gps import CO, DROP, G1, G2, OTHER, TS_MS, VID, event
from tracker_ws.domain import envelope, fixes
from tracker_ws.domain.errors import InvalidEvent
from tracker_ws.domain.events import parse_gps_event
from tracker_ws.domain.fixes import (
    GpsRecord,
    VehicleViews,
    parse_gps_record,
    record_of,
    record_status,
)
from tracker_ws.domain.geozones import GeozoneState
from tracker_ws.domain.models import Vehicle, VehicleStatus
from tracker_ws.domain.protocol import iso_from_ms
from tracker_ws.domain.status import derive_status, next_still_since, still_since_of
from tracker_ws.domain.subscriptions import position_keys

Z1 = "a1000000-0000-4000-8000-000000000001"

# Values each field takes in the generated events: valid, boundary and wrong ones.
FIELDS: dict[str, list[Any]] = {
    "vehicleId": [
        VID,
        VID.upper(),
        "11111111-1111-4111-8111-11111111111A",
        "truck-7",
        7,
        None,
        [VID],
        {"id": VID},
        "{" + VID + "}",
        VID + " ",
        DROP,
    ],
    "latitude": [
        52.52,
        0,
        0.0,
        -90,
        90,
        90.0001,
        -90.5,
        52,
        "52.5",
        True,
        None,
        math.nan,
        math.inf,
        10**400,
        [1],
        DROP,
    ],
    "longitude": [13.405, 0, -180, 180, 180.0001, 13, False, math.nan, None, DROP],
    "speed": [42.5, 0, 0.0, 2.99, 3, 2000, 2000.1, -1, "fast", True, math.inf, None, DROP],
    "course": [270, 0, 360, 90.9, 359.99, 361, -0.5, "N", True, None, DROP],
    "timestamp": [
        TS_MS,
        0,
        -1,
        253_402_300_799_999,
        253_402_300_800_000,
        -62_135_596_800_000,
        -62_135_596_800_001,
        10**17,
        float(TS_MS) + 0.9,
        math.inf,
        math.nan,
        True,
        "2023-11-14T22:13:20.123Z",
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20Z",
        "2023-11-14T23:13:20.123+01:00",
        "2023-11-14T22:13:20.123456Z",
        "2023-11-14T22:13:20.123",
        "2023-11-14 22:13:20.123Z",
        "2023-11-14t22:13:20.123Z",
        "2023-11-14T22:13:20.123z",
        "2023-13-14T22:13:20.123Z",
        "2023-02-30T22:13:20.123Z",
        "2023-11-14T24:00:00.000Z",
        "2023-11-14T22:13:60.000Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00.000Z",
        "١٢٣٤-11-14T22:13:20.123Z",
        "2023-11-14T22:13:20.12٣Z",
        "2023-11-14T22:13:20.1 3Z",
        "2023-11-14T22:13:20.-12Z",
        "20231114T221320.123Z",
        "2023-11-14T22:13:20,123Z",
        "yesterday",
        "",
        {"s": 1},
        None,
        DROP,
    ],
    "altitude": [None, 150, 35.7, -1000, 100000, 100001, -1000.5, "high", True, math.nan, DROP],
    "satellites": [None, 12, 0, 200, 201, 11.0, 7.5, -1, False, "12", DROP],
    "sensors": [
        None,
        {},
        {"fuel": 45.0, "ignition": True},
        {"fuel": 45, "temperature": -4},
        {"ignition": False, "doors": True, "fuel": None},
        {"doors": False, "temperature": 1e6},
        {"fuel": 1e6 + 1},
        {"fuel": "full"},
        {"fuel": True},
        {"temperature": math.inf},
        {"ignition": 1},
        {"doors": "open"},
        {"ignition": None, "other": [1]},
        [1],
        "x",
        0,
        DROP,
    ],
}
KEYS: list[str | None] = [None, VID, VID.upper(), OTHER, "", "not-a-uuid"]


def generated(n: int, seed: int = 11) -> list[tuple[Any, str | None]]:
    """Events with one field changed (every value of FIELDS), then random mixes."""
    out: list[tuple[Any, str | None]] = [
        (event(**{f: v}), None) for f, vs in FIELDS.items() for v in vs
    ]
    rng = random.Random(seed)
    for _ in range(n):
        changed = rng.sample(list(FIELDS), rng.randint(1, 4))
        out.append((event(**{f: rng.choice(FIELDS[f]) for f in changed}), rng.choice(KEYS)))
    out += [([1, 2], None), (None, None), ("x", None), (event(extra={"a": 1}), VID)]
    return out


def _exact(value: Any) -> Any:
    """A value with its types spelled out (1 and 1.0 and True differ)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def assert_same_record(got: GpsRecord, want: GpsRecord) -> None:
    assert got == want
    assert got.vehicle_id == want.vehicle_id and type(got.timestamp_ms) is int
    # Same keys in the same order and the same types (what the envelope's bytes depend on).
    assert orjson.dumps(got.position) == orjson.dumps(want.position)
    assert [type(v) for v in got.position.values()] == [type(v) for v in want.position.values()]
    assert orjson.dumps(got.sensors) == orjson.dumps(want.sensors)
    if want.sensors is not None:
        assert got.sensors is not None
        assert [type(v) for v in got.sensors.values()] == [type(v) for v in want.sensors.values()]


@pytest.mark.parametrize(("value", "key"), generated(3000))
def test_fast_path_matches_strict_parser(value: Any, key: str | None) -> None:
    try:
        fix = parse_gps_event(value, key)
    except Exception as strict:  # InvalidEvent; 10**400 (not from JSON) overflows float()
        with pytest.raises(type(strict)) as fast:
            parse_gps_record(value, key)
        assert str(fast.value) == str(strict)
        return
    assert_same_record(parse_gps_record(value, key), record_of(fix))


def test_the_fast_path_is_taken_for_common_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_strict(*_a: Any) -> None:
        raise AssertionError("strict parser called")

    monkeypatch.setattr(fixes, "parse_gps_event", no_strict)
    sim = {
        **event(timestamp=TS_MS),
        "altitude": 150,
        "satellites": 12,
        "sensors": {"fuel": 45.0, "ignition": True},
    }
    for value in (event(), event(timestamp=TS_MS), sim, event(vehicleId=VID.upper())):
        parse_gps_record(value, VID)
        parse_gps_record(value, None)


def test_canonical_iso_timestamp_text_is_reused_and_equals_iso_from_ms() -> None:
    rec = parse_gps_record(event(timestamp="2023-11-14T22:13:20.123Z"))
    assert rec.position["timestamp"] == iso_from_ms(rec.timestamp_ms) == "2023-11-14T22:13:20.123Z"
    rec = parse_gps_record(event(timestamp=TS_MS))
    assert rec.position["timestamp"] == "2023-11-14T22:13:20.123Z"


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixes, "MAX_CACHED", 4)
    fixes._VEHICLE_IDS.clear()
    fixes._ISO_SECONDS.clear()
    for i in range(10):
        vid = f"{i:08d}-1111-4111-8111-111111111111"
        ts = iso_from_ms(TS_MS + i * 1000)
        rec = parse_gps_record(event(vehicleId=vid, timestamp=ts))
        assert (rec.vehicle_id, rec.timestamp_ms) == (vid, TS_MS + i * 1000)
        assert len(fixes._VEHICLE_IDS) <= 4 and len(fixes._ISO_SECONDS) <= 4


def test_iso_from_ms_matches_datetime() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ms in (
        0,
        1,
        999,
        1000,
        -1,
        -999,
        -1000,
        -1001,
        TS_MS,
        253_402_300_799_999,
        -62_135_596_800_000,
    ):
        d = epoch + timedelta(milliseconds=ms)
        want = f"{d.year:04d}-{d:%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
        assert iso_from_ms(ms) == want


# ---------------------------------------------------------------- status and envelope


@pytest.mark.parametrize(("value", "key"), generated(300, seed=5)[::3])
def test_status_and_envelope_match_the_fix_based_functions(value: Any, key: str | None) -> None:
    try:
        fix = parse_gps_event(value, key)
    except (InvalidEvent, OverflowError):
        return
    rec = parse_gps_record(value, key)
    vehicle = Vehicle(fix.vehicle_id, CO, "Truck 7 – Süd", frozenset({G2, G1}))
    view = VehicleViews().get(vehicle, frozenset())
    for prev in (None, fix.timestamp_ms - 400_000, fix.timestamp_ms):
        still = next_still_since(prev, fix)
        assert still_since_of(prev, rec.position["speed"], rec.timestamp_ms) == still
        for age_ms in (0, 299_999, 300_000, 600_000, 600_001):
            now_ms = fix.timestamp_ms + age_ms
            status = derive_status(fix, still, now_ms, 600.0)
            assert record_status(rec, still, now_ms, 600.0) == status.value
            assert type(record_status(rec, still, now_ms, 600.0)) is str
            want = envelope.position_envelope(fix, vehicle, status)
            got = envelope.fix_envelope(
                rec.vehicle_id,
                CO,
                view.groups,
                vehicle.name,
                status.value,
                rec.position,
                rec.timestamp_ms,
                rec.sensors,
            )
            assert envelope.encode(got) == envelope.encode(want)


# ---------------------------------------------------------------- per-vehicle views


def test_views_are_kept_until_the_vehicle_or_its_zones_change() -> None:
    views = VehicleViews()
    zones = GeozoneState()
    v1 = Vehicle(VID, CO, "a", frozenset({G2, G1}))
    first = views.get(v1, zones.zones_of(VID))
    assert first.groups == [G1, G2]
    assert first.keys == position_keys(VID, CO, v1.group_ids, frozenset())
    assert views.get(v1, zones.zones_of(VID)) is first
    # Equal zones in another object: kept.
    assert views.get(v1, frozenset()) is first

    zones.apply(CO, VID, Z1, "entered")
    second = views.get(v1, zones.zones_of(VID))
    assert second is not first and f"geozone:{Z1}" in second.keys
    assert views.get(v1, zones.zones_of(VID)) is second

    v2 = Vehicle(VID, CO, "a", frozenset({G1}))  # the registry replaced the record
    third = views.get(v2, zones.zones_of(VID))
    assert third.groups == [G1] and f"group:{G2}" not in third.keys
    v3 = Vehicle(VID, OTHER, "b", frozenset({G1}))
    assert views.get(v3, zones.zones_of(VID)).keys[1] == f"company:{OTHER}"

    zones.apply(CO, VID, Z1, "exited")
    assert views.get(v3, zones.zones_of(VID)).keys == position_keys(
        VID, OTHER, v3.group_ids, frozenset()
    )
    views.forget(VID)
    assert len(views) == 0


def test_geozone_state_hands_out_the_same_set_until_it_changes() -> None:
    zones = GeozoneState()
    assert zones.zones_of(VID) == frozenset()
    zones.apply(CO, VID, Z1, "exited")  # not inside: nothing
    assert zones.zones_of(VID) == frozenset() and zones.vehicles_in(Z1) == []
    zones.apply(CO, VID, Z1, "entered")
    inside = zones.zones_of(VID)
    assert inside == {Z1} and zones.zones_of(VID) is inside
    zones.apply(CO, VID, Z1, "entered")  # again: unchanged
    assert zones.zones_of(VID) is inside
    zones.apply(CO, VID, G1, "entered")
    assert zones.zones_of(VID) == {Z1, G1} and inside == {Z1}
    zones.apply(CO, VID, Z1, "exited")
    assert zones.zones_of(VID) == {G1} and zones.vehicles_in(G1) == [VID]
    zones.apply(CO, VID, G1, "exited")
    assert zones.zones_of(VID) == frozenset() and zones.vehicles_in(G1) == []
    assert zones.owner(Z1) == CO


def test_record_status_spelling() -> None:
    rec = parse_gps_record(event(speed=0, sensors={"ignition": False}, timestamp=TS_MS))
    assert record_status(rec, None, TS_MS, 600.0) == VehicleStatus.PARKING.value
