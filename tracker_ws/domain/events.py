"""Stream input (Kafka topics and Redis `events:*` channels) → validated domain records.

Every problem raises `InvalidEvent`: the agent counts it, sends the raw record to the
dead-letter topic and carries on.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from tracker_ws.domain.envelope import (
    ALERT,
    GEO,
    MAINTENANCE,
    NOTIFICATION,
    AlertEnvelope,
    Envelope,
    GeoEnvelope,
    MaintenanceEnvelope,
    NotificationEnvelope,
)
from tracker_ws.domain.errors import InvalidEvent, InvalidMessage, TooManyTargets
from tracker_ws.domain.models import GpsFix, Sensors
from tracker_ws.domain.protocol import iso_from_ms, parse_timestamp_ms
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
    if key is not None and key.lower() != vid:
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


# ---------------------------------------------------------------- replayable events
#
# Each parser returns (envelope, dedupe id). The dedupe id names the event itself, so the
# same event arriving from Kafka and from a Redis channel (or read by two instances) gets
# one eventId and is delivered once.


def _text(value: object, field: str, limit: int, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise InvalidEvent(f"{field} must be a non-empty string of at most {limit} characters")
    return value


def _position(raw: object) -> dict[str, Any]:
    """A seed `Position` ({lat, lon, speed, course, altitude?, satellites?, timestamp}); the
    gps-events spelling (latitude/longitude) is accepted too."""
    if not isinstance(raw, dict):
        raise InvalidEvent("position must be an object")
    lat = raw.get("lat", raw.get("latitude"))
    lon = raw.get("lon", raw.get("longitude"))
    out: dict[str, Any] = {
        "lat": number(lat, "position.lat", InvalidEvent, -90, 90),
        "lon": number(lon, "position.lon", InvalidEvent, -180, 180),
        "speed": number(raw.get("speed", 0), "position.speed", InvalidEvent, 0, 2000),
        "course": int(number(raw.get("course", 0), "position.course", InvalidEvent, 0, 360)),
    }
    for name in ("altitude", "satellites"):
        if raw.get(name) is not None:
            out[name] = integer(raw[name], f"position.{name}", InvalidEvent, -1000, 100000)
    if raw.get("timestamp") is not None:
        out["timestamp"] = _iso(raw["timestamp"], "position.timestamp")
    return out


def _iso(value: object, field: str) -> str:
    try:
        return iso_from_ms(parse_timestamp_ms(value, field=field))
    except InvalidMessage as exc:
        raise InvalidEvent(exc.message) from None


def parse_geo_event(value: Any, key: str | None = None) -> tuple[GeoEnvelope, str]:
    """geo-events: {vehicleId, vehicleName, companyId, geozoneId, geozoneName,
    eventType: entered|exited, position, timestamp}."""
    if not isinstance(value, dict):
        raise InvalidEvent("geo event must be a JSON object")
    vid = uuid_str(value.get("vehicleId"), "vehicleId", InvalidEvent)
    if key is not None and key.lower() != vid:
        raise InvalidEvent(f"message key {key!r:.60} does not match vehicleId {vid}")
    event_type = value.get("eventType")
    if event_type not in ("entered", "exited"):
        raise InvalidEvent("eventType must be entered or exited")
    event = {
        "vehicleId": vid,
        "vehicleName": _text(value.get("vehicleName"), "vehicleName", 200, required=False),
        "geozoneId": uuid_str(value.get("geozoneId"), "geozoneId", InvalidEvent),
        "geozoneName": _text(value.get("geozoneName"), "geozoneName", 200, required=False),
        "eventType": event_type,
        "position": _position(value.get("position")),
        "timestamp": _iso(value.get("timestamp"), "timestamp"),
    }
    company = uuid_str(value.get("companyId"), "companyId", InvalidEvent)
    env: GeoEnvelope = {"t": GEO, "c": company, "v": vid, "z": event["geozoneId"], "e": event}
    dedupe = f"geo:{vid}:{event['geozoneId']}:{event_type}:{event['timestamp']}"
    return env, dedupe


def _notification(raw: object, *, category: str | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidEvent("notification must be an object")
    data = raw.get("data") or {}
    if not isinstance(data, dict) or len(data) > 100:
        raise InvalidEvent("notification.data must be an object of at most 100 entries")
    return {
        "id": uuid_str(raw.get("id"), "notification.id", InvalidEvent),
        "title": _text(raw.get("title"), "notification.title", 500),
        "body": _text(raw.get("body"), "notification.body", 5000, required=False),
        "category": category or _text(raw.get("category"), "notification.category", 100),
        "priority": _text(raw.get("priority", "normal"), "notification.priority", 50),
        # seed: data is Map[String, String]
        "data": {
            str(k)[:100]: v if isinstance(v, str) else orjson.dumps(v).decode()
            for k, v in data.items()
        },
    }


def parse_notification(value: Any, key: str | None = None) -> tuple[NotificationEnvelope, str]:
    """notifications: {userId, notification: {id, title, body, category, priority, data}}."""
    if not isinstance(value, dict):
        raise InvalidEvent("notification event must be a JSON object")
    user = uuid_str(value.get("userId"), "userId", InvalidEvent)
    n = _notification(value.get("notification"))
    return {"t": NOTIFICATION, "u": user, "n": n}, f"notif:{n['id']}"


def parse_maintenance(value: Any, key: str | None = None) -> tuple[MaintenanceEnvelope, str]:
    """maintenance-events: {companyId, vehicleId, id?, title?, body?/description?, priority?,
    type?, data?} → a `notification` with category `maintenance`."""
    if not isinstance(value, dict):
        raise InvalidEvent("maintenance event must be a JSON object")
    company = uuid_str(value.get("companyId"), "companyId", InvalidEvent)
    vid = uuid_str(value.get("vehicleId"), "vehicleId", InvalidEvent)
    kind = value.get("type") or "maintenance"
    event_id = value.get("id") or str(
        uuid.uuid5(_NS, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    )
    data = dict(value.get("data") or {}) if isinstance(value.get("data") or {}, dict) else None
    if data is None:
        raise InvalidEvent("data must be an object")
    data.setdefault("vehicleId", vid)
    data.setdefault("type", kind)
    n = _notification(
        {
            "id": event_id,
            "title": value.get("title") or f"Maintenance: {kind}",
            "body": value.get("body") or value.get("description") or "",
            "priority": value.get("priority", "normal"),
            "data": data,
        },
        category="maintenance",
    )
    return {"t": MAINTENANCE, "c": company, "v": vid, "n": n}, f"maint:{n['id']}"


def parse_system_alert(value: Any, key: str | None = None) -> tuple[AlertEnvelope, str]:
    """system-alerts: {level, message, targetCompanyIds?, id?}."""
    if not isinstance(value, dict):
        raise InvalidEvent("system alert must be a JSON object")
    level = value.get("level")
    if level not in ("info", "warning", "critical"):
        raise InvalidEvent("level must be one of info, warning, critical")
    message = _text(value.get("message"), "message", 2000)
    targets = value.get("targetCompanyIds")
    companies = None
    if targets is not None:
        if not isinstance(targets, list) or not targets:
            raise InvalidEvent("targetCompanyIds must be a non-empty list of UUIDs or null")
        companies = sorted({uuid_str(t, "targetCompanyIds", InvalidEvent) for t in targets})
    ident = (
        value.get("id")
        or hashlib.sha1(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    env: AlertEnvelope = {
        "t": ALERT,
        "level": level,
        "message": message,
        "companies": companies,
        "subscribers_only": True,
    }
    return env, f"alert:{ident}"


def check_alert_targets(companies: list[str] | None, cap: int) -> None:
    """Bound the fan-out of one alert (issue 10.6): its payload carries every target id."""
    if companies is not None and len(companies) > cap:
        raise TooManyTargets(
            f"{len(companies)} targetCompanyIds exceed the limit of {cap} "
            "(TRACKER_WS_MAX_BROADCAST_TARGETS); split the alert"
        )


_NS = uuid.UUID("0b7c7a52-7f4e-4f0e-9c43-4c3f3c1f6a11")

# Input type (topic name, or the {type} of a Redis `events:{type}` channel) → parser.
PARSERS: dict[str, Callable[[Any, str | None], tuple[Envelope, str]]] = {
    "geo-events": parse_geo_event,
    "notifications": parse_notification,
    "maintenance-events": parse_maintenance,
    "system-alerts": parse_system_alert,
}
ALIASES = {
    "geo": "geo-events",
    "geoEvents": "geo-events",
    "notification": "notifications",
    "maintenance": "maintenance-events",
    "systemAlerts": "system-alerts",
    "alerts": "system-alerts",
}
