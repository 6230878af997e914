"""The vehicle registry as the service sees it: who owns a vehicle and which groups hold it.

Fed from the compacted `vehicle-registry` topic. Every instance keeps the whole registry
(a few hundred bytes per vehicle) because any instance must answer permission checks for
any vehicle, while the GPS partitions a worker owns hold only part of the fleet.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tracker_ws.domain.errors import InvalidEvent
from tracker_ws.domain.models import Vehicle
from tracker_ws.domain.validate import uuid_str


def parse_vehicle(key: str | None, value: Any) -> Vehicle | None:
    """A registry record → Vehicle; `None` value is a tombstone (returns None)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent("vehicle-registry value must be a JSON object")
    vehicle_id = uuid_str(value.get("vehicleId", key), "vehicleId", InvalidEvent)
    if key is not None and uuid_str(key, "key", InvalidEvent) != vehicle_id:
        raise InvalidEvent(f"message key {key!r:.60} does not match vehicleId {vehicle_id}")
    company_id = uuid_str(value.get("companyId"), "companyId", InvalidEvent)
    name = value.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidEvent("name must be a string of at most 200 characters")
    groups_raw = value.get("groupIds")
    if groups_raw is None:
        groups_raw = []
    if not isinstance(groups_raw, list):
        raise InvalidEvent("groupIds must be a list of UUIDs")
    groups = frozenset(uuid_str(g, "groupIds", InvalidEvent) for g in groups_raw)
    return Vehicle(vehicle_id, company_id, name, groups)


class VehicleRegistry:
    """Vehicles with reverse indexes by company and by group."""

    __slots__ = ("_by_company", "_by_group", "_group_companies", "_vehicles")

    def __init__(self) -> None:
        self._vehicles: dict[str, Vehicle] = {}
        self._by_company: dict[str, set[str]] = defaultdict(set)
        self._by_group: dict[str, set[str]] = defaultdict(set)
        # A group belongs to the company of the vehicles in it: members counted per company,
        # so one stray record (a vehicle of another company put in the group and moved out
        # again) cannot leave the group owned by the wrong company.
        self._group_companies: dict[str, dict[str, int]] = defaultdict(dict)

    def __len__(self) -> int:
        return len(self._vehicles)

    def get(self, vehicle_id: str) -> Vehicle | None:
        return self._vehicles.get(vehicle_id)

    def upsert(self, vehicle: Vehicle) -> Vehicle | None:
        """Store a vehicle; returns the previous record (None if new)."""
        previous = self._vehicles.get(vehicle.vehicle_id)
        if previous is not None:
            self._unindex(previous)
        self._vehicles[vehicle.vehicle_id] = vehicle
        self._by_company[vehicle.company_id].add(vehicle.vehicle_id)
        for g in vehicle.group_ids:
            self._by_group[g].add(vehicle.vehicle_id)
            owners = self._group_companies[g]
            owners[vehicle.company_id] = owners.get(vehicle.company_id, 0) + 1
        return previous

    def delete(self, vehicle_id: str) -> Vehicle | None:
        previous = self._vehicles.pop(vehicle_id, None)
        if previous is not None:
            self._unindex(previous)
        return previous

    def _unindex(self, vehicle: Vehicle) -> None:
        company = self._by_company.get(vehicle.company_id)
        if company is not None:
            company.discard(vehicle.vehicle_id)
            if not company:
                del self._by_company[vehicle.company_id]
        for g in vehicle.group_ids:
            members = self._by_group.get(g)
            if members is not None:
                members.discard(vehicle.vehicle_id)
                if not members:
                    del self._by_group[g]
            owners = self._group_companies.get(g)
            if owners is not None:
                left = owners.get(vehicle.company_id, 0) - 1
                if left > 0:
                    owners[vehicle.company_id] = left
                else:
                    owners.pop(vehicle.company_id, None)
                if not owners:
                    del self._group_companies[g]

    def company_vehicles(self, company_id: str) -> frozenset[str]:
        return frozenset(self._by_company.get(company_id, ()))

    def group_vehicles(self, group_id: str) -> frozenset[str]:
        return frozenset(self._by_group.get(group_id, ()))

    def group_company(self, group_id: str) -> str | None:
        """The company owning the group; None when unknown or (wrongly) shared."""
        owners = self._group_companies.get(group_id)
        if not owners or len(owners) != 1:
            return None
        return next(iter(owners))
