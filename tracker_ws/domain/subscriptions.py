"""A connection's own subscriptions, and the routing keys they stand for.

Routing keys are what the subscription index, the cross-instance interest table and the
event router agree on. For positions they are the ARCHITECTURE §2 keys: `vehicle:{id}`,
`company:{id}`, `group:{id}`, `geozone:{id}`; other types prefix them with the type
(`geoEvents/company:{id}`), so one index serves all five types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker_ws.domain.errors import SubscriptionLimit
from tracker_ws.domain.models import FilterKind, Subscription, SubscriptionFilter, SubscriptionType

_SCOPE = {
    FilterKind.BY_IDS: "vehicle",
    FilterKind.BY_GROUP: "group",
    FilterKind.BY_GEOZONE: "geozone",
}


def routing_key(stype: SubscriptionType, scope: str, ident: str) -> str:
    if stype is SubscriptionType.VEHICLES:
        return f"{scope}:{ident}"
    return f"{stype.value}/{scope}:{ident}"


def position_keys(
    vehicle_id: str,
    company_id: str,
    group_ids: frozenset[str],
    geozone_ids: frozenset[str] = frozenset(),
) -> list[str]:
    """Every key under which a position of this vehicle may have been subscribed."""
    keys = [f"vehicle:{vehicle_id}", f"company:{company_id}"]
    keys.extend(f"group:{g}" for g in group_ids)
    keys.extend(f"geozone:{z}" for z in geozone_ids)
    return keys


def event_keys(
    stype: SubscriptionType,
    company_id: str,
    vehicle_id: str | None = None,
    group_ids: frozenset[str] = frozenset(),
    geozone_id: str | None = None,
) -> list[str]:
    """Keys of a vehicle-related event of another type (geo event, maintenance)."""
    keys = [routing_key(stype, "company", company_id)]
    if vehicle_id is not None:
        keys.append(routing_key(stype, "vehicle", vehicle_id))
    keys.extend(routing_key(stype, "group", g) for g in group_ids)
    if geozone_id is not None:
        keys.append(routing_key(stype, "geozone", geozone_id))
    return keys


@dataclass(slots=True)
class _TypeSubs:
    all: bool = False
    ids: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    zones: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.all or self.ids or self.groups or self.zones)


class SubscriptionSet:
    """What one connection subscribed to. add/remove return the routing keys that changed."""

    __slots__ = ("_company_id", "_subs", "_user_id")

    def __init__(self, company_id: str, user_id: str) -> None:
        self._company_id = company_id
        self._user_id = user_id
        self._subs: dict[SubscriptionType, _TypeSubs] = {}

    def _keys(self, stype: SubscriptionType, flt: SubscriptionFilter) -> set[str]:
        if stype is SubscriptionType.NOTIFICATIONS:
            # Notifications are personal: `all` means all of this user's own.
            return {routing_key(stype, "user", self._user_id)}
        if flt.kind is FilterKind.ALL:
            return {routing_key(stype, "company", self._company_id)}
        if flt.kind is FilterKind.BY_IDS:
            return {routing_key(stype, "vehicle", i) for i in flt.ids}
        return {routing_key(stype, _SCOPE[flt.kind], flt.target or "")}

    def add(self, sub: Subscription, limit: int | None = None) -> set[str]:
        """Add a subscription; returns the keys this connection did not have before.

        With `limit`, a subscription that would take the connection past `limit` routing keys
        is refused whole (SubscriptionLimit) and nothing changes: every key is an entry in the
        cluster-wide interest table, so one connection must not be able to add them unbounded
        (unknown geozone ids included)."""
        if limit is not None:
            have, adding = self.size(), self._adds(sub)
            if adding and have + adding > limit:
                raise SubscriptionLimit(
                    f"subscription limit reached: at most {limit} per connection "
                    f"(byIds counts each id); this one adds {adding} to {have}",
                    limit,
                )
        before = self.keys()
        ts = self._subs.setdefault(sub.type, _TypeSubs())
        flt = sub.filter
        if flt.kind is FilterKind.ALL:
            ts.all = True
        elif flt.kind is FilterKind.BY_IDS:
            ts.ids.update(flt.ids)
        elif flt.kind is FilterKind.BY_GROUP:
            ts.groups.add(flt.target or "")
        else:
            ts.zones.add(flt.target or "")
        return self.keys() - before

    def _adds(self, sub: Subscription) -> int:
        """How many entries (= routing keys) `sub` would add."""
        ts = self._subs.get(sub.type) or _TypeSubs()
        flt = sub.filter
        if flt.kind is FilterKind.ALL:
            return 0 if ts.all else 1
        if flt.kind is FilterKind.BY_IDS:
            return len(flt.ids - ts.ids)
        present = ts.groups if flt.kind is FilterKind.BY_GROUP else ts.zones
        return 0 if (flt.target or "") in present else 1

    def size(self) -> int:
        """Subscription entries over all types; equal to len(keys()), without building them."""
        return sum(
            int(ts.all) + len(ts.ids) + len(ts.groups) + len(ts.zones) for ts in self._subs.values()
        )

    def remove(self, stype: SubscriptionType, flt: SubscriptionFilter | None) -> set[str]:
        """Remove exactly `flt` (or the whole type when None); returns the keys dropped."""
        ts = self._subs.get(stype)
        if ts is None:
            return set()
        before = self.keys()
        if flt is None:
            del self._subs[stype]
        else:
            if flt.kind is FilterKind.ALL:
                ts.all = False
            elif flt.kind is FilterKind.BY_IDS:
                ts.ids.difference_update(flt.ids)
            elif flt.kind is FilterKind.BY_GROUP:
                ts.groups.discard(flt.target or "")
            else:
                ts.zones.discard(flt.target or "")
            if ts.empty():
                del self._subs[stype]
        return before - self.keys()

    def keys(self) -> set[str]:
        out: set[str] = set()
        for stype, ts in self._subs.items():
            for flt in self._filters(ts):
                out |= self._keys(stype, flt)
        return out

    @staticmethod
    def _filters(ts: _TypeSubs) -> list[SubscriptionFilter]:
        out = []
        if ts.all:
            out.append(SubscriptionFilter(FilterKind.ALL))
        if ts.ids:
            out.append(SubscriptionFilter(FilterKind.BY_IDS, frozenset(ts.ids)))
        out.extend(SubscriptionFilter(FilterKind.BY_GROUP, target=g) for g in sorted(ts.groups))
        out.extend(SubscriptionFilter(FilterKind.BY_GEOZONE, target=z) for z in sorted(ts.zones))
        return out

    def subscriptions(self) -> list[Subscription]:
        """As seed `Subscription`s, for saved state and the admin API."""
        return [
            Subscription(stype, flt)
            for stype, ts in self._subs.items()
            for flt in self._filters(ts)
        ]

    def has(self, stype: SubscriptionType) -> bool:
        return stype in self._subs

    def vehicle_ids(self) -> set[str]:
        ts = self._subs.get(SubscriptionType.VEHICLES)
        return set(ts.ids) if ts else set()

    def counts(self) -> dict[str, int]:
        """Subscription entries by type (byIds counts each id)."""
        out: dict[str, int] = {}
        for stype, ts in self._subs.items():
            out[stype.value] = int(ts.all) + len(ts.ids) + len(ts.groups) + len(ts.zones)
        return out
