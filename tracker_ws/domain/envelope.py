"""The records the GPS agent publishes through the bus and every instance decodes.

Short keys: these cross Redis for every fix. Every key of every kind is declared once, in the
TypedDicts below, which the builders return (mypy checks the producers); a received envelope
is input from another instance, decoded as a plain dict and read field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from tracker_ws.domain.models import GpsFix, SubscriptionType, Vehicle, VehicleStatus
from tracker_ws.domain.protocol import (
    encode_geo_event,
    encode_notification,
    encode_system_alert,
    position_dict,
)

POSITION: Literal["pos"] = "pos"
ALERT: Literal["alert"] = "alert"
GEO: Literal["geo"] = "geo"
NOTIFICATION: Literal["notif"] = "notif"
MAINTENANCE: Literal["maint"] = "maint"
ALL_HISTORY = "ws:history:all"  # events for everyone, and every system alert

# The subscription type that receives each kind (the delivery-latency metric's label).
SUBSCRIPTION_OF: dict[str, str] = {
    POSITION: SubscriptionType.VEHICLES.value,
    GEO: SubscriptionType.GEO_EVENTS.value,
    MAINTENANCE: SubscriptionType.MAINTENANCE.value,
    NOTIFICATION: SubscriptionType.NOTIFICATIONS.value,
    ALERT: SubscriptionType.SYSTEM_ALERTS.value,
}


class PositionEnvelope(TypedDict):
    t: Literal["pos"]
    v: str  # vehicleId
    c: str  # companyId
    g: list[str]  # groupIds, sorted
    n: str  # vehicle name
    s: str  # status (VehicleStatus value)
    p: dict[str, Any]  # the seed `Position` object
    ts: int  # fix time, epoch ms (the delivery-latency metric)
    x: NotRequired[dict[str, Any]]  # sensors, when the fix had any
    # The offline timer's announcement: `p` is the last fix, unchanged; clients get the status
    # in a positionBatch only (a `position` frame has no status).
    status_only: NotRequired[bool]


class GeoEnvelope(TypedDict):
    t: Literal["geo"]
    c: str  # companyId as the producer sent it (the registry decides, see audience.py)
    v: str  # vehicleId
    z: str  # geozoneId
    e: dict[str, Any]  # the seed `GeoEvent` object
    ts: NotRequired[int]  # when the service took it in, epoch ms (the delivery-latency metric)


class MaintenanceEnvelope(TypedDict):
    t: Literal["maint"]
    c: str
    v: str
    n: dict[str, Any]  # the seed `Notification` object, category maintenance
    ts: NotRequired[int]  # when the service took it in, epoch ms (the delivery-latency metric)


class NotificationEnvelope(TypedDict):
    t: Literal["notif"]
    u: str  # userId: that user's connections only
    n: dict[str, Any]  # the seed `Notification` object
    ts: NotRequired[int]  # when the service took it in, epoch ms (the delivery-latency metric)


# `from` is a keyword: the functional form.
AlertEnvelope = TypedDict(
    "AlertEnvelope",
    {
        "t": Literal["alert"],
        "level": str,
        "message": str,
        "companies": list[str] | None,  # None: every company
        # From the system-alerts stream: to `systemAlerts` subscribers only (an admin
        # broadcast goes to every connection in scope).
        "subscribers_only": NotRequired[bool],
        # An admin broadcast: request id and instance to report delivery counts to.
        "req": NotRequired[str | None],
        "from": NotRequired[str | None],
        # When the service took it in, epoch ms (the delivery-latency metric).
        "ts": NotRequired[int],
    },
)

Envelope = (
    PositionEnvelope | GeoEnvelope | MaintenanceEnvelope | NotificationEnvelope | AlertEnvelope
)


def alert_envelope(
    level: str, message: str, companies: list[str] | None, req: str | None, sender: str | None
) -> AlertEnvelope:
    """A system alert for everyone (companies None) or the listed companies. `req`/`from`
    let each instance report back how many connections it delivered to."""
    return {
        "t": ALERT,
        "level": level,
        "message": message,
        "companies": companies,
        "req": req,
        "from": sender,
    }


def position_envelope(fix: GpsFix, vehicle: Vehicle, status: VehicleStatus) -> PositionEnvelope:
    return fix_envelope(
        fix.vehicle_id,
        vehicle.company_id,
        sorted(vehicle.group_ids),
        vehicle.name,
        status.value,
        position_dict(fix),
        fix.timestamp_ms,
        None if fix.sensors is None else fix.sensors.to_json(),
    )


def fix_envelope(
    vehicle_id: str,
    company_id: str,
    groups: list[str],
    name: str,
    status: str,
    position: dict[str, Any],
    ts_ms: int,
    sensors: dict[str, Any] | None,
) -> PositionEnvelope:
    """A position envelope from its parts (`groups` sorted, `position` a seed Position)."""
    env: PositionEnvelope = {
        "t": POSITION,
        "v": vehicle_id,
        "c": company_id,
        "g": groups,
        "n": name,
        "s": status,
        "p": position,
        "ts": ts_ms,
    }
    if sensors is not None:
        env["x"] = sensors
    return env


def encode(env: Mapping[str, object]) -> bytes:
    return orjson.dumps(env)


def decode(payload: bytes) -> dict[str, Any]:
    value = orjson.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("envelope must be a JSON object")
    return value


def event_frame(event_id: int, env: dict[str, Any]) -> bytes:
    """The client frame of a replayable envelope (geo event, maintenance, notification,
    alert). Raises ValueError for another kind, KeyError for a missing field."""
    kind = env.get("t")
    if kind == GEO:
        return encode_geo_event(event_id, env["e"])
    if kind in (MAINTENANCE, NOTIFICATION):
        return encode_notification(event_id, env["n"])
    if kind == ALERT:
        return encode_system_alert(event_id, str(env["level"]), str(env["message"]))
    raise ValueError(f"no frame for envelope kind {kind!r:.40}")


def history_streams(env: Mapping[str, object]) -> list[str]:
    """The bounded history streams a replayable event is appended to (ARCHITECTURE §3).
    One per audience: a company, a user, or everyone (alerts, targeted or not)."""
    kind = env.get("t")
    if kind in (GEO, MAINTENANCE):
        return [f"ws:history:company:{env['c']}"]
    if kind == NOTIFICATION:
        return [f"ws:history:user:{env['u']}"]
    if kind == ALERT:
        # One shared copy whatever the targets: every session reads this stream and replay
        # keeps what its company may see (Hub.recipients), so N targets never cost N copies.
        return [ALL_HISTORY]
    return []


def session_streams(user_id: str, company_id: str) -> list[str]:
    """Every history stream that can hold an event for this user."""
    return [f"ws:history:company:{company_id}", f"ws:history:user:{user_id}", ALL_HISTORY]
