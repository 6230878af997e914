"""Vehicle status from its latest fix and the current time. Pure: no clock, no state.

Rules, first match wins (times in epoch milliseconds):

1. `offline` — the latest fix is older than `offline_after_s` (default `OFFLINE_AFTER_S` = 600 s,
   `Settings.offline_after_s`): age > threshold. A stale fix says nothing about the present, so
   this beats every other rule.
2. `noGps` — the fix has no usable position: `satellites` is known and < `MIN_SATELLITES` (3),
   or latitude and longitude are both exactly 0 (the "null island" of trackers without a fix).
3. `moving` — speed ≥ `MOVING_SPEED_KMH` (3 km/h).
4. `parking` — still (speed < 3 km/h) and the ignition is off, or still for
   ≥ `PARKING_AFTER_S` (300 s) whatever the ignition.
5. `stopped` — still, ignition on or unknown, still for < `PARKING_AFTER_S`.

"Still since" is carried by the caller between fixes: `next_still_since` folds each new fix
into it (None while moving), `derive_status` reads it. When it is unknown the still period is
taken to start at the fix itself.

Status changes without a new fix (stopped → parking, anything → offline) happen at
`parking_deadline_ms` and `offline_deadline_ms`; the caller arms timers for them.
"""

from __future__ import annotations

import math

from tracker_ws.domain.models import GpsFix, VehicleStatus

OFFLINE_AFTER_S = 600.0
MIN_SATELLITES = 3
MOVING_SPEED_KMH = 3.0
PARKING_AFTER_S = 300.0
_PARKING_AFTER_MS = int(PARKING_AFTER_S * 1000)


def next_still_since(prev_still_since_ms: int | None, fix: GpsFix) -> int | None:
    """Fold `fix` into the still-since mark: None while moving, else when stillness began."""
    return still_since_of(prev_still_since_ms, fix.speed, fix.timestamp_ms)


def still_since_of(prev_still_since_ms: int | None, speed: float, ts_ms: int) -> int | None:
    """`next_still_since` from the fix's speed and time (the agent's hot path has no GpsFix)."""
    if speed >= MOVING_SPEED_KMH:
        return None
    return ts_ms if prev_still_since_ms is None else prev_still_since_ms


def derive_status(
    fix: GpsFix,
    still_since_ms: int | None,
    now_ms: int,
    offline_after_s: float = OFFLINE_AFTER_S,
) -> VehicleStatus:
    """Status of the vehicle whose latest fix is `fix`, as of `now_ms` (rules in the module doc)."""
    ignition = fix.sensors.ignition if fix.sensors is not None else None
    return status_of(
        fix.timestamp_ms,
        fix.lat,
        fix.lon,
        fix.speed,
        fix.satellites,
        ignition,
        still_since_ms,
        now_ms,
        offline_after_s,
    )


def status_of(
    ts_ms: int,
    lat: float,
    lon: float,
    speed: float,
    satellites: int | None,
    ignition: bool | None,
    still_since_ms: int | None,
    now_ms: int,
    offline_after_s: float = OFFLINE_AFTER_S,
) -> VehicleStatus:
    """`derive_status` from the fix's fields: the rules, in the module doc's order."""
    if now_ms - ts_ms > offline_after_s * 1000:
        return VehicleStatus.OFFLINE
    if (satellites is not None and satellites < MIN_SATELLITES) or (lat == 0 and lon == 0):
        return VehicleStatus.NO_GPS
    if speed >= MOVING_SPEED_KMH:
        return VehicleStatus.MOVING
    if ignition is False:
        return VehicleStatus.PARKING
    since = ts_ms if still_since_ms is None else still_since_ms
    if now_ms - since >= _PARKING_AFTER_MS:
        return VehicleStatus.PARKING
    return VehicleStatus.STOPPED


def offline_deadline_ms(fix: GpsFix, offline_after_s: float = OFFLINE_AFTER_S) -> int:
    """The first millisecond at which `derive_status` reports `fix`'s vehicle offline."""
    # offline is age > threshold (strict), so the deadline is one past the threshold.
    return math.floor(fix.timestamp_ms + offline_after_s * 1000) + 1


def parking_deadline_ms(still_since_ms: int) -> int:
    """The first millisecond at which a still vehicle (ignition on/unknown) becomes parking."""
    return still_since_ms + _PARKING_AFTER_MS
