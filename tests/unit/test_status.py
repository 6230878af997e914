"""Vehicle status derivation (tracker_ws/domain/status.py) with boundary values."""

from __future__ import annotations

import pytest

from tracker_ws.domain.models import GpsFix, Sensors, VehicleStatus
from tracker_ws.domain.status import (
    MIN_SATELLITES,
    MOVING_SPEED_KMH,
    OFFLINE_AFTER_S,
    PARKING_AFTER_S,
    derive_status,
    next_still_since,
    offline_deadline_ms,
    parking_deadline_ms,
)

VID = "11111111-1111-4111-8111-111111111111"
T = 1_700_000_000_000  # fix time, epoch ms
OFFLINE_MS = int(OFFLINE_AFTER_S * 1000)
PARKING_MS = int(PARKING_AFTER_S * 1000)


def fix(
    speed: float = 0.0,
    *,
    ts: int = T,
    lat: float = 52.52,
    lon: float = 13.40,
    satellites: int | None = 9,
    ignition: bool | None = None,
) -> GpsFix:
    sensors = None if ignition is None else Sensors(ignition=ignition)
    return GpsFix(VID, lat, lon, speed, 90, ts, satellites=satellites, sensors=sensors)


def test_documented_thresholds() -> None:
    assert (OFFLINE_AFTER_S, MIN_SATELLITES, MOVING_SPEED_KMH, PARKING_AFTER_S) == (
        600.0,
        3,
        3.0,
        300.0,
    )


# ---------------------------------------------------------------- offline


def test_offline_boundary() -> None:
    moving = fix(50.0)
    assert derive_status(moving, None, T + OFFLINE_MS) is VehicleStatus.MOVING
    assert derive_status(moving, None, T + OFFLINE_MS + 1) is VehicleStatus.OFFLINE


def test_offline_threshold_is_configurable() -> None:
    moving = fix(50.0)
    assert derive_status(moving, None, T + 60_000, offline_after_s=60) is VehicleStatus.MOVING
    assert derive_status(moving, None, T + 60_001, offline_after_s=60) is VehicleStatus.OFFLINE


def test_offline_beats_every_other_status() -> None:
    late = T + OFFLINE_MS + 1
    for f in (fix(0.0, satellites=0), fix(0.0, ignition=False), fix(0.0), fix(80.0)):
        assert derive_status(f, T, late) is VehicleStatus.OFFLINE


def test_fix_from_the_future_is_not_offline() -> None:
    assert derive_status(fix(10.0, ts=T + 5_000), None, T) is VehicleStatus.MOVING


@pytest.mark.parametrize("offline_after_s", [600.0, 60.0, 0.5, 12.3456])
def test_offline_deadline_is_first_offline_millisecond(offline_after_s: float) -> None:
    f = fix(50.0)
    deadline = offline_deadline_ms(f, offline_after_s)
    assert derive_status(f, None, deadline - 1, offline_after_s) is not VehicleStatus.OFFLINE
    assert derive_status(f, None, deadline, offline_after_s) is VehicleStatus.OFFLINE


def test_offline_deadline_default() -> None:
    assert offline_deadline_ms(fix()) == T + OFFLINE_MS + 1


# ---------------------------------------------------------------- noGps


@pytest.mark.parametrize(
    ("satellites", "expected"),
    [
        (0, VehicleStatus.NO_GPS),
        (2, VehicleStatus.NO_GPS),
        (3, VehicleStatus.MOVING),
        (12, VehicleStatus.MOVING),
        (None, VehicleStatus.MOVING),  # unknown satellite count is not "no GPS"
    ],
)
def test_no_gps_by_satellites(satellites: int | None, expected: VehicleStatus) -> None:
    assert derive_status(fix(40.0, satellites=satellites), None, T) is expected


def test_no_gps_at_null_island() -> None:
    assert derive_status(fix(40.0, lat=0.0, lon=0.0), None, T) is VehicleStatus.NO_GPS
    # Only both zero: the equator and the prime meridian are real places.
    assert derive_status(fix(40.0, lat=0.0, lon=13.4), None, T) is VehicleStatus.MOVING
    assert derive_status(fix(40.0, lat=51.5, lon=0.0), None, T) is VehicleStatus.MOVING


def test_no_gps_beats_motion_and_ignition() -> None:
    assert derive_status(fix(0.0, satellites=1, ignition=False), T, T) is VehicleStatus.NO_GPS


# ---------------------------------------------------------------- moving / stopped / parking


def test_moving_speed_boundary() -> None:
    assert derive_status(fix(3.0), None, T) is VehicleStatus.MOVING
    assert derive_status(fix(2.99), None, T) is VehicleStatus.STOPPED


def test_moving_ignores_ignition_and_still_since() -> None:
    assert derive_status(fix(60.0, ignition=False), T - 3_600_000, T) is VehicleStatus.MOVING


@pytest.mark.parametrize("ignition", [True, None])
def test_stopped_then_parking_after_five_minutes(ignition: bool | None) -> None:
    still = fix(0.0, ignition=ignition)
    assert derive_status(still, T, T) is VehicleStatus.STOPPED
    assert derive_status(still, T, T + PARKING_MS - 1) is VehicleStatus.STOPPED
    assert derive_status(still, T, T + PARKING_MS) is VehicleStatus.PARKING


def test_still_since_earlier_than_fix() -> None:
    # Still since long before this fix: parking as soon as the fix arrives.
    assert derive_status(fix(1.0, ignition=True), T - PARKING_MS, T) is VehicleStatus.PARKING
    assert derive_status(fix(1.0, ignition=True), T - PARKING_MS + 1, T) is VehicleStatus.STOPPED


def test_unknown_still_since_starts_at_the_fix() -> None:
    assert derive_status(fix(0.0), None, T + PARKING_MS - 1) is VehicleStatus.STOPPED
    assert derive_status(fix(0.0), None, T + PARKING_MS) is VehicleStatus.PARKING


def test_ignition_off_parks_at_once() -> None:
    assert derive_status(fix(0.0, ignition=False), T, T) is VehicleStatus.PARKING
    assert derive_status(fix(2.99, ignition=False), None, T) is VehicleStatus.PARKING


def test_parking_deadline() -> None:
    deadline = parking_deadline_ms(T)
    assert deadline == T + PARKING_MS
    assert derive_status(fix(0.0), T, deadline - 1) is VehicleStatus.STOPPED
    assert derive_status(fix(0.0), T, deadline) is VehicleStatus.PARKING


# ---------------------------------------------------------------- next_still_since


def test_next_still_since_sequence() -> None:
    still_since: int | None = None
    seen = []
    for speed, ts in [
        (40.0, T),
        (2.0, T + 1_000),
        (0.0, T + 2_000),
        (5.0, T + 3_000),
        (0.0, T + 4_000),
    ]:
        still_since = next_still_since(still_since, fix(speed, ts=ts))
        seen.append(still_since)
    assert seen == [None, T + 1_000, T + 1_000, None, T + 4_000]


def test_next_still_since_speed_boundary() -> None:
    assert next_still_since(T, fix(3.0, ts=T + 1)) is None
    assert next_still_since(None, fix(2.99, ts=T + 1)) == T + 1
    assert next_still_since(T, fix(2.99, ts=T + 1)) == T


def test_full_stop_scenario() -> None:
    """Drive, stop with the engine running, idle past five minutes, then switch the engine off."""
    still_since: int | None = None
    timeline = [
        (0, 50.0, True, VehicleStatus.MOVING),
        (30_000, 0.0, True, VehicleStatus.STOPPED),
        (30_000 + PARKING_MS - 1, 0.0, True, VehicleStatus.STOPPED),
        (30_000 + PARKING_MS, 0.0, True, VehicleStatus.PARKING),
        (30_000 + PARKING_MS + 1_000, 0.0, False, VehicleStatus.PARKING),
        (30_000 + PARKING_MS + 2_000, 20.0, True, VehicleStatus.MOVING),
    ]
    for offset, speed, ignition, expected in timeline:
        f = fix(speed, ts=T + offset, ignition=ignition)
        still_since = next_still_since(still_since, f)
        assert derive_status(f, still_since, T + offset) is expected, offset
