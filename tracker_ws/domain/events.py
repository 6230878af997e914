"""Stream input (Kafka topics and Redis `events:*` channels) → validated domain records.

Every problem raises `InvalidEvent`: the agent counts it, sends the raw record to the
dead-letter topic and carries on.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracker_ws.domain.errors import InvalidEvent, InvalidMessage
from tracker_ws.domain.models import GpsFix, Sensors
from tracker_ws.domain.protocol import parse_timestamp_ms
from tracker_ws.domain.validate import integer, number, uuid_str

MAX_EVENT_BYTES = 64 * 1024


def load_json(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None


def _sensors(raw: object) -> Sensors | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidEvent("sensors must be an object")
    kw: dict[str, Any] = {}
    for name in ("fuel", "temperature"):
        if raw.get(name) is not None:
            kw[name] = number(raw[name], f"sensors.{name}", InvalidEvent, -1e6, 1e6)
    for name in ("ignition", "doors"):
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise InvalidEvent(f"sensors.{name} must be a boolean")
            kw[name] = value
    return Sensors(**kw)


def parse_gps_event(value: Any, key: str | None = None) -> GpsFix:
    """A gps-events record: {vehicleId, latitude, longitude, speed, course, altitude?,
    satellites?, timestamp (ISO-8601 or epoch ms), sensors?}."""
    if not isinstance(value, dict):
        raise InvalidEvent("gps event must be a JSON object")
    vid = uuid_str(value.get("vehicleId"), "vehicleId", InvalidEvent)
    if key is not None and key != vid:
        raise InvalidEvent(f"message key {key!r:.60} does not match vehicleId {vid}")
    try:
        ts = parse_timestamp_ms(value.get("timestamp"))
    except InvalidMessage as exc:
        raise InvalidEvent(f"timestamp: {exc.message}") from None
    altitude = value.get("altitude")
    satellites = value.get("satellites")
    return GpsFix(
        vehicle_id=vid,
        lat=number(value.get("latitude"), "latitude", InvalidEvent, -90, 90),
        lon=number(value.get("longitude"), "longitude", InvalidEvent, -180, 180),
        speed=number(value.get("speed"), "speed", InvalidEvent, 0, 2000),
        course=int(number(value.get("course"), "course", InvalidEvent, 0, 360)),
        timestamp_ms=ts,
        altitude=None
        if altitude is None
        else int(number(altitude, "altitude", InvalidEvent, -1000, 100000)),
        satellites=None
        if satellites is None
        else integer(satellites, "satellites", InvalidEvent, 0, 200),
        sensors=_sensors(value.get("sensors")),
    )
