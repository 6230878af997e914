"""Which vehicles are inside which geozones, and which company owns a geozone.

Learnt from geofence events (entered/exited) as they pass through every instance, so that
`vehicles` can be subscribed `byGeozone` and a geozone of another company can be refused.
"""

from __future__ import annotations

from typing import Any

_NONE: frozenset[str] = frozenset()


class GeozoneState:
    __slots__ = ("_inside", "_owner")

    def __init__(self) -> None:
        # vehicleId -> geozoneIds. Replaced, never mutated: zones_of hands out the set itself
        # (no copy per fix) and the GPS agent knows it changed when it is another object.
        self._inside: dict[str, frozenset[str]] = {}
        self._owner: dict[str, str] = {}  # geozoneId -> companyId

    def apply(self, company_id: str, vehicle_id: str, geozone_id: str, event_type: str) -> None:
        self._owner[geozone_id] = company_id
        zones = self._inside.get(vehicle_id, _NONE)
        if event_type == "entered":
            if geozone_id not in zones:
                self._inside[vehicle_id] = zones | {geozone_id}
        elif geozone_id in zones:
            if len(zones) == 1:
                del self._inside[vehicle_id]
            else:
                self._inside[vehicle_id] = zones - {geozone_id}

    def apply_envelope(self, env: dict[str, Any]) -> None:
        self.apply(str(env["c"]), str(env["v"]), str(env["z"]), str(env["e"]["eventType"]))

    def zones_of(self, vehicle_id: str) -> frozenset[str]:
        return self._inside.get(vehicle_id, _NONE)

    def vehicles_in(self, geozone_id: str) -> list[str]:
        return sorted(v for v, zones in self._inside.items() if geozone_id in zones)

    def owner(self, geozone_id: str) -> str | None:
        return self._owner.get(geozone_id)
