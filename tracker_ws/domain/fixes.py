"""The GPS agent's per-fix hot path (tracker_ws/agents/positions.py). Pure: no I/O.

`parse_gps_record` takes the common, valid fix through as few calls as possible and builds
the envelope's parts (`p`, `x`) directly instead of a GpsFix and then dicts from it. Anything
it is not sure about goes through the strict `parse_gps_event`, which alone decides what is
rejected and with which message: both give the same record for every input the fast path
accepts (tests/unit/test_fixes.py compares them).

`VehicleViews` keeps what every position of a vehicle repeats (sorted groups, routing keys)
until the registry record or the vehicle's geozones change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from tracker_ws.domain.errors import InvalidEvent, InvalidMessage
from tracker_ws.domain.events import parse_gps_event
from tracker_ws.domain.models import GpsFix, Vehicle, VehicleStatus
from tracker_ws.domain.protocol import (
    _MAX_MS,
    _MIN_MS,
    iso_from_ms,
    parse_timestamp_ms,
    position_dict,
)
from tracker_ws.domain.status import status_of
from tracker_ws.domain.subscriptions import position_keys
from tracker_ws.domain.validate import integer, is_uuid, number

# Bounds of the per-string caches: cleared when full (a fleet has far fewer vehicles; a
# producer sending random UUIDs only costs a refill).
MAX_CACHED = 1 << 17


class GpsRecord(NamedTuple):
    """A validated fix as the envelope carries it."""

    vehicle_id: str  # canonical lower case
    timestamp_ms: int
    position: dict[str, Any]  # the seed `Position`: envelope `p`
    sensors: dict[str, Any] | None  # envelope `x` (Sensors.to_json())


# GpsRecord(...) without its Python-level __new__ (a tenth of the fast path's time).
_new_record = partial(tuple.__new__, GpsRecord)


def record_of(fix: GpsFix) -> GpsRecord:
    """The record of a fix from the strict parser."""
    sensors = fix.sensors.to_json() if fix.sensors is not None else None
    return GpsRecord(fix.vehicle_id, fix.timestamp_ms, position_dict(fix), sensors)


def parse_gps_record(value: Any, key: str | None = None) -> GpsRecord:
    """`parse_gps_event` as a GpsRecord: same acceptance, same errors."""
    try:
        return _fast(value, key)
    except (_NotFast, InvalidEvent):
        pass
    return record_of(parse_gps_event(value, key))


def record_status(rec: GpsRecord, still_since_ms: int | None, now_ms: int, offline_s: float) -> str:
    """`derive_status` of the record, as the envelope's `s`."""
    pos = rec.position
    sensors = rec.sensors
    status = status_of(
        rec.timestamp_ms,
        pos["lat"],
        pos["lon"],
        pos["speed"],
        pos.get("satellites"),
        None if sensors is None else sensors.get("ignition"),
        still_since_ms,
        now_ms,
        offline_s,
    )
    return _TEXT[status]


_TEXT = {s: s.value for s in VehicleStatus}  # `.value` is a property, slow for a hot path


class _NotFast(Exception):
    """The fast path does not handle this input: ask the strict parser."""


def _fast(value: Any, key: str | None) -> GpsRecord:
    # The checks are those of parse_gps_event (same validators, same bounds); a failure of
    # any kind sends the input to it, for the verdict and the message.
    if type(value) is not dict:
        raise _NotFast
    get: Callable[[str], Any] = value.get
    raw_vid = get("vehicleId")
    vid = _vehicle_id(raw_vid)
    if key is not None and key != raw_vid and key.lower() != vid:
        raise _NotFast
    raw_ts = get("timestamp")
    ts = _timestamp_ms(raw_ts)
    lat, lon, speed, course = get("latitude"), get("longitude"), get("speed"), get("course")
    # number()'s own fast path, inline for the four fields every fix has: a plain int or
    # float within parse_gps_event's bounds (bool is neither type; NaN fails the comparison).
    if not (
        type(lat) in _REAL
        and -90 <= lat <= 90
        and type(lon) in _REAL
        and -180 <= lon <= 180
        and type(speed) in _REAL
        and 0 <= speed <= 2000
        and type(course) in _REAL
        and 0 <= course <= 360
    ):
        raise _NotFast
    # int(course) is int(float(course)) on these values, as parse_gps_event computes it.
    pos: dict[str, Any] = {
        "lat": float(lat),
        "lon": float(lon),
        "speed": float(speed),
        "course": int(course),
    }
    altitude = get("altitude")
    if altitude is not None:
        pos["altitude"] = int(number(altitude, "altitude", InvalidEvent, -1000, 100000))
    satellites = get("satellites")
    if satellites is not None:
        pos["satellites"] = integer(satellites, "satellites", InvalidEvent, 0, 200)
    # _timestamp_ms takes a string only in the form iso_from_ms writes: reuse it.
    pos["timestamp"] = raw_ts if type(raw_ts) is str else iso_from_ms(ts)
    sensors = get("sensors")
    return _new_record((vid, ts, pos, None if sensors is None else _sensors(sensors)))


def _sensors(raw: object) -> dict[str, Any]:
    """`_sensors(raw).to_json()` of events.py: the set fields, in Sensors' field order."""
    if type(raw) is not dict:
        raise _NotFast
    out: dict[str, Any] = {}
    for name in ("fuel", "temperature"):
        value = raw.get(name)
        if value is not None:
            out[name] = number(value, "sensors", InvalidEvent, -1e6, 1e6)
    for name in ("ignition", "doors"):
        value = raw.get(name)
        if value is not None:
            if type(value) is not bool:
                raise _NotFast
            out[name] = value
    return out


_REAL = frozenset((int, float))

# vehicleId as sent → canonical form; valid ones only.
_VEHICLE_IDS: dict[str, str] = {}


def _vehicle_id(raw: object) -> str:
    if type(raw) is not str:
        raise _NotFast
    vid = _VEHICLE_IDS.get(raw)
    if vid is None:
        if not is_uuid(raw):
            raise _NotFast
        if len(_VEHICLE_IDS) >= MAX_CACHED:
            _VEHICLE_IDS.clear()
        vid = _VEHICLE_IDS[raw] = raw.lower()
    return vid


# Timestamps: epoch ms, or the ISO form iso_from_ms writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`),
# whose second ("YYYY-MM-DDTHH:MM:SS") is parsed once and cached; any other form is left to
# parse_timestamp_ms.
_MILLI_OF = {f".{i:03d}Z": i for i in range(1000)}
_ISO_SECOND_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}", re.ASCII)
_ISO_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" → epoch ms


def _timestamp_ms(raw: object) -> int:
    kind = type(raw)
    if kind is int:
        if _MIN_MS <= raw <= _MAX_MS:  # type: ignore[operator]
            return raw  # type: ignore[return-value]
    elif kind is str:
        text: str = raw  # type: ignore[assignment]
        milli = _MILLI_OF.get(text[19:])  # exactly ".mmmZ" after the second
        if milli is not None:
            second = _ISO_SECONDS.get(text[:19])
            if second is None:
                second = _iso_second_ms(text[:19])
            if second is not None:
                return second + milli
    raise _NotFast


def _iso_second_ms(text: str) -> int | None:
    """Epoch ms of `text` + "Z", when it is exactly how iso_from_ms writes that second."""
    if not _ISO_SECOND_RE.fullmatch(text):
        return None
    try:
        ms = parse_timestamp_ms(text + "Z")
    except InvalidMessage:
        return None
    if iso_from_ms(ms)[:19] != text:
        return None
    if len(_ISO_SECONDS) >= MAX_CACHED:
        _ISO_SECONDS.clear()
    _ISO_SECONDS[text] = ms
    return ms


# ---------------------------------------------------------------- per-vehicle constants


@dataclass(frozen=True, slots=True)
class VehicleView:
    """What every position of a vehicle repeats, for one registry record and geozone set."""

    vehicle: Vehicle
    zones: frozenset[str]
    groups: list[str]  # sorted: envelope `g` (shared by its envelopes: never mutated)
    keys: list[str]  # position_keys

    @classmethod
    def of(cls, vehicle: Vehicle, zones: frozenset[str]) -> VehicleView:
        keys = position_keys(vehicle.vehicle_id, vehicle.company_id, vehicle.group_ids, zones)
        return cls(vehicle, zones, sorted(vehicle.group_ids), keys)


class VehicleViews:
    """VehicleView per vehicle id, rebuilt when the registry record (a new Vehicle object on
    every change) or the vehicle's geozones differ from those it was built from."""

    __slots__ = ("_views",)

    def __init__(self) -> None:
        self._views: dict[str, VehicleView] = {}

    def get(self, vehicle: Vehicle, zones: frozenset[str]) -> VehicleView:
        view = self._views.get(vehicle.vehicle_id)
        if (
            view is None
            or view.vehicle is not vehicle
            or (view.zones is not zones and view.zones != zones)
        ):
            view = self._views[vehicle.vehicle_id] = VehicleView.of(vehicle, zones)
        return view

    def forget(self, vehicle_id: str) -> None:
        self._views.pop(vehicle_id, None)

    def __len__(self) -> int:
        return len(self._views)
