"""Domain models (seed §2.1) as small immutable dataclasses.

Identifiers are kept as canonical lower-case UUID strings: they arrive as strings in JSON,
are compared as strings in the hot path and go back out as strings, so parsing them into
`uuid.UUID` objects would only cost time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class SubscriptionType(StrEnum):
    VEHICLES = "vehicles"
    GEO_EVENTS = "geoEvents"
    NOTIFICATIONS = "notifications"
    MAINTENANCE = "maintenance"
    SYSTEM_ALERTS = "systemAlerts"


class FilterKind(StrEnum):
    ALL = "all"
    BY_IDS = "byIds"
    BY_GROUP = "byGroup"
    BY_GEOZONE = "byGeozone"


class VehicleStatus(StrEnum):
    MOVING = "moving"
    STOPPED = "stopped"
    PARKING = "parking"
    OFFLINE = "offline"
    NO_GPS = "noGps"


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class GeoEventType(StrEnum):
    ENTERED = "entered"
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    """`all`, `byIds` (ids), `byGroup` (target = groupId) or `byGeozone` (target = geozoneId)."""

    kind: FilterKind
    ids: frozenset[str] = frozenset()
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.kind is FilterKind.ALL:
            return {"type": "all"}
        if self.kind is FilterKind.BY_IDS:
            return {"type": "byIds", "ids": sorted(self.ids)}
        if self.kind is FilterKind.BY_GROUP:
            return {"type": "byGroup", "groupId": self.target}
        return {"type": "byGeozone", "geozoneId": self.target}


ALL = SubscriptionFilter(FilterKind.ALL)


@dataclass(frozen=True, slots=True)
class Subscription:
    type: SubscriptionType
    filter: SubscriptionFilter

    def to_json(self) -> dict[str, Any]:
        return {"subscriptionType": self.type.value, "filter": self.filter.to_json()}


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class Subscribe:
    TYPE: ClassVar[str] = "subscribe"  # the protocol's name (metric labels)
    subscription_type: SubscriptionType
    filter: SubscriptionFilter


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    TYPE: ClassVar[str] = "unsubscribe"  # the protocol's name (metric labels)
    subscription_type: SubscriptionType
    filter: SubscriptionFilter | None  # None: the whole type


@dataclass(frozen=True, slots=True)
class GetState:
    TYPE: ClassVar[str] = "getState"  # the protocol's name (metric labels)
    vehicle_ids: frozenset[str] | None  # None: every vehicle the user may see


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"  # the protocol's name (metric labels)


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[str] = "ack"  # the protocol's name (metric labels)
    event_id: int


ClientMessage = Subscribe | Unsubscribe | GetState | Ping | Ack


# ---------------------------------------------------------------- positions and vehicles


@dataclass(frozen=True, slots=True)
class Sensors:
    fuel: float | None = None
    temperature: float | None = None
    ignition: bool | None = None
    doors: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@dataclass(frozen=True, slots=True)
class GpsFix:
    """A validated gps-events record. `timestamp_ms` is the fix time (epoch milliseconds)."""

    vehicle_id: str
    lat: float
    lon: float
    speed: float
    course: int
    timestamp_ms: int
    altitude: int | None = None
    satellites: int | None = None
    sensors: Sensors | None = None


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle-registry record."""

    vehicle_id: str
    company_id: str
    name: str
    group_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class UserContext:
    """The verified claims of a JWT (ARCHITECTURE §5)."""

    user_id: str
    company_id: str
    roles: frozenset[str] = frozenset()
    vehicle_ids: frozenset[str] | None = None  # None: no narrowing by vehicle
    group_ids: frozenset[str] | None = None  # None: no narrowing by group
    expires_at: float = 0.0  # epoch seconds
    platform: str = "web"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(slots=True)
class ConnectionInfo:
    """Per-connection facts shown by the admin API (seed ClientInfo)."""

    user_agent: str = ""
    ip: str = ""
    platform: str = "web"
    version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
