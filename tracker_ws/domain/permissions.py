"""Who may see what (ARCHITECTURE §5).

A user sees only vehicles of their own company. When the token carries `vehicleIds` and/or
`groupIds`, the user is narrowed to vehicles listed there or belonging to a listed group
(the union of both lists: a dispatcher may be given a few trucks plus a whole group).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tracker_ws.domain.geozones import GeozoneState
from tracker_ws.domain.models import FilterKind, SubscriptionFilter, UserContext
from tracker_ws.domain.registry import VehicleRegistry


@dataclass(frozen=True, slots=True)
class Decision:
    """The permitted part of a subscription request and what was refused."""

    filter: SubscriptionFilter | None  # None: nothing permitted
    count: int
    denied: tuple[str, ...] = ()
    reason: str = ""


class Permissions:
    __slots__ = ("_narrowed", "user")

    def __init__(self, user: UserContext) -> None:
        self.user = user
        self._narrowed = user.vehicle_ids is not None or user.group_ids is not None

    @property
    def narrowed(self) -> bool:
        return self._narrowed

    def can_see(self, vehicle_id: str, company_id: str, group_ids: Iterable[str]) -> bool:
        """Hot path: called per delivered event for narrowed users, per subscribe otherwise."""
        if company_id != self.user.company_id:
            return False
        if not self._narrowed:
            return True
        if self.user.vehicle_ids is not None and vehicle_id in self.user.vehicle_ids:
            return True
        allowed_groups = self.user.group_ids
        return allowed_groups is not None and not allowed_groups.isdisjoint(group_ids)

    def visible_vehicles(self, registry: VehicleRegistry) -> list[str]:
        """Every vehicle of the registry this user may see."""
        out = []
        for vid in registry.company_vehicles(self.user.company_id):
            v = registry.get(vid)
            if v is not None and self.can_see(vid, v.company_id, v.group_ids):
                out.append(vid)
        return out

    def authorize_vehicles(
        self,
        flt: SubscriptionFilter,
        registry: VehicleRegistry,
        geozones: GeozoneState | None = None,
    ) -> Decision:
        """Check a `vehicles` (or vehicle-scoped) subscription filter against the registry."""
        if flt.kind is FilterKind.ALL:
            return Decision(flt, len(self.visible_vehicles(registry)))
        if flt.kind is FilterKind.BY_IDS:
            allowed: list[str] = []
            denied: list[str] = []
            for vid in sorted(flt.ids):
                v = registry.get(vid)
                if v is not None and self.can_see(vid, v.company_id, v.group_ids):
                    allowed.append(vid)
                else:
                    denied.append(vid)
            if not allowed:
                return Decision(None, 0, tuple(denied), "no access to the requested vehicles")
            return Decision(
                SubscriptionFilter(FilterKind.BY_IDS, frozenset(allowed)),
                len(allowed),
                tuple(denied),
                "no access to some of the requested vehicles" if denied else "",
            )
        if flt.kind is FilterKind.BY_GROUP:
            group = flt.target or ""
            owner = registry.group_company(group)
            claimed = self.user.group_ids is not None and group in self.user.group_ids
            if owner != self.user.company_id and not (owner is None and claimed):
                return Decision(None, 0, (group,), "no access to the requested group")
            members = [
                vid
                for vid in registry.group_vehicles(group)
                if (v := registry.get(vid)) is not None
                and self.can_see(vid, v.company_id, v.group_ids)
            ]
            if self._narrowed and not claimed and not members:
                return Decision(None, 0, (group,), "no access to the requested group")
            return Decision(flt, len(members))
        # byGeozone: a geozone belongs to the company its geofence events name. One never seen
        # yet is accepted (its events will be filtered by company like everything else).
        zone = flt.target or ""
        owner = geozones.owner(zone) if geozones is not None else None
        if owner is not None and owner != self.user.company_id:
            return Decision(None, 0, (zone,), "no access to the requested geozone")
        inside = geozones.vehicles_in(zone) if geozones is not None else []
        count = sum(
            1
            for vid in inside
            if (v := registry.get(vid)) is not None and self.can_see(vid, v.company_id, v.group_ids)
        )
        return Decision(flt, count)
