"""A connection's subscriptions and their routing keys (tracker_ws/domain/subscriptions.py)."""

from __future__ import annotations

import random

import pytest

from tracker_ws.domain.errors import SubscriptionLimit
from tracker_ws.domain.models import (
    ALL,
    FilterKind,
    Subscription,
    SubscriptionFilter,
    SubscriptionType,
)
from tracker_ws.domain.subscriptions import SubscriptionSet, position_keys, routing_key

T = SubscriptionType
COMPANY = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
USER = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"
G1 = "99999999-0000-4000-8000-000000000001"
G2 = "99999999-0000-4000-8000-000000000002"
Z1 = "77777777-0000-4000-8000-000000000001"

PREFIX = {
    T.VEHICLES: "",
    T.GEO_EVENTS: "geoEvents/",
    T.MAINTENANCE: "maintenance/",
    T.SYSTEM_ALERTS: "systemAlerts/",
}


def ids(*vids: str) -> SubscriptionFilter:
    return SubscriptionFilter(FilterKind.BY_IDS, frozenset(vids))


def group(gid: str) -> SubscriptionFilter:
    return SubscriptionFilter(FilterKind.BY_GROUP, target=gid)


def zone(zid: str) -> SubscriptionFilter:
    return SubscriptionFilter(FilterKind.BY_GEOZONE, target=zid)


def new_set() -> SubscriptionSet:
    return SubscriptionSet(COMPANY, USER)


# ------------------------------------------------------------------------------ key functions


def test_routing_key_vehicles_unprefixed() -> None:
    assert routing_key(T.VEHICLES, "vehicle", V1) == f"vehicle:{V1}"
    assert routing_key(T.VEHICLES, "company", COMPANY) == f"company:{COMPANY}"
    assert routing_key(T.VEHICLES, "group", G1) == f"group:{G1}"
    assert routing_key(T.VEHICLES, "geozone", Z1) == f"geozone:{Z1}"


@pytest.mark.parametrize("stype", [T.GEO_EVENTS, T.NOTIFICATIONS, T.MAINTENANCE, T.SYSTEM_ALERTS])
def test_routing_key_other_types_prefixed(stype: SubscriptionType) -> None:
    assert routing_key(stype, "company", COMPANY) == f"{stype.value}/company:{COMPANY}"
    assert routing_key(stype, "user", USER) == f"{stype.value}/user:{USER}"


def test_position_keys() -> None:
    assert position_keys(V1, COMPANY, frozenset()) == [f"vehicle:{V1}", f"company:{COMPANY}"]
    keys = position_keys(V1, COMPANY, frozenset({G1, G2}))
    assert keys[:2] == [f"vehicle:{V1}", f"company:{COMPANY}"]
    assert sorted(keys[2:]) == sorted([f"group:{G1}", f"group:{G2}"])
    assert len(keys) == 4


def test_position_keys_match_vehicle_subscription_keys() -> None:
    # Whatever a connection subscribes to for vehicles, an event of a matching vehicle
    # must share at least one key with it — otherwise the index would never find it.
    for flt in (ALL, ids(V1), group(G1)):
        s = new_set()
        s.add(Subscription(T.VEHICLES, flt))
        assert s.keys() & set(position_keys(V1, COMPANY, frozenset({G1}))), flt
    # …and a vehicle of another company / outside the group / other id shares none.
    for flt in (ids(V2), group(G2)):
        s = new_set()
        s.add(Subscription(T.VEHICLES, flt))
        assert not s.keys() & set(position_keys(V1, COMPANY, frozenset({G1}))), flt


# ------------------------------------------------------------------------------ keys per filter


@pytest.mark.parametrize("stype", list(PREFIX))
def test_keys_for_each_filter_kind(stype: SubscriptionType) -> None:
    p = PREFIX[stype]
    cases = [
        (ALL, {f"{p}company:{COMPANY}"}),
        (ids(V1, V2), {f"{p}vehicle:{V1}", f"{p}vehicle:{V2}"}),
        (group(G1), {f"{p}group:{G1}"}),
        (zone(Z1), {f"{p}geozone:{Z1}"}),
    ]
    for flt, expected in cases:
        s = new_set()
        assert s.add(Subscription(stype, flt)) == expected, flt
        assert s.keys() == expected


@pytest.mark.parametrize("flt", [ALL, ids(V1, V2), group(G1), zone(Z1)])
def test_notifications_always_map_to_the_user_key(flt: SubscriptionFilter) -> None:
    s = new_set()
    assert s.add(Subscription(T.NOTIFICATIONS, flt)) == {f"notifications/user:{USER}"}
    assert s.keys() == {f"notifications/user:{USER}"}


def test_notifications_key_dropped_only_when_type_empty() -> None:
    s = new_set()
    s.add(Subscription(T.NOTIFICATIONS, ALL))
    assert s.add(Subscription(T.NOTIFICATIONS, ids(V1))) == set()  # same key
    assert s.remove(T.NOTIFICATIONS, ALL) == set()  # byIds still there
    assert s.remove(T.NOTIFICATIONS, ids(V1)) == {f"notifications/user:{USER}"}
    assert not s.has(T.NOTIFICATIONS)


def test_types_do_not_collide() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ALL))
    assert s.add(Subscription(T.GEO_EVENTS, ALL)) == {f"geoEvents/company:{COMPANY}"}
    assert s.add(Subscription(T.MAINTENANCE, ALL)) == {f"maintenance/company:{COMPANY}"}
    assert s.add(Subscription(T.SYSTEM_ALERTS, ALL)) == {f"systemAlerts/company:{COMPANY}"}
    assert len(s.keys()) == 4
    assert s.remove(T.GEO_EVENTS, None) == {f"geoEvents/company:{COMPANY}"}
    assert s.keys() == {
        f"company:{COMPANY}",
        f"maintenance/company:{COMPANY}",
        f"systemAlerts/company:{COMPANY}",
    }


# ------------------------------------------------------------------------------ add / remove


def test_add_returns_only_new_keys() -> None:
    s = new_set()
    assert s.add(Subscription(T.VEHICLES, ids(V1, V2))) == {f"vehicle:{V1}", f"vehicle:{V2}"}
    assert s.add(Subscription(T.VEHICLES, ids(V2, V3))) == {f"vehicle:{V3}"}
    assert s.add(Subscription(T.VEHICLES, ids(V1))) == set()
    assert s.add(Subscription(T.VEHICLES, ALL)) == {f"company:{COMPANY}"}
    assert s.add(Subscription(T.VEHICLES, ALL)) == set()
    assert s.add(Subscription(T.VEHICLES, group(G1))) == {f"group:{G1}"}
    assert s.add(Subscription(T.VEHICLES, group(G1))) == set()
    assert s.add(Subscription(T.VEHICLES, zone(Z1))) == {f"geozone:{Z1}"}
    assert s.vehicle_ids() == {V1, V2, V3}


def test_remove_by_ids_removes_just_those_ids() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1, V2, V3)))
    s.add(Subscription(T.VEHICLES, ALL))
    assert s.remove(T.VEHICLES, ids(V2)) == {f"vehicle:{V2}"}
    assert s.vehicle_ids() == {V1, V3}
    assert s.keys() == {f"vehicle:{V1}", f"vehicle:{V3}", f"company:{COMPANY}"}
    # Ids never subscribed are ignored; known ones in the same request still go.
    assert s.remove(T.VEHICLES, ids(V2, V3)) == {f"vehicle:{V3}"}
    assert s.has(T.VEHICLES)


def test_remove_with_filter_removes_exactly_that_part() -> None:
    s = new_set()
    s.add(Subscription(T.GEO_EVENTS, ALL))
    s.add(Subscription(T.GEO_EVENTS, ids(V1)))
    s.add(Subscription(T.GEO_EVENTS, group(G1)))
    s.add(Subscription(T.GEO_EVENTS, group(G2)))
    s.add(Subscription(T.GEO_EVENTS, zone(Z1)))
    assert s.remove(T.GEO_EVENTS, group(G1)) == {f"geoEvents/group:{G1}"}
    assert s.remove(T.GEO_EVENTS, ALL) == {f"geoEvents/company:{COMPANY}"}
    assert s.remove(T.GEO_EVENTS, zone(Z1)) == {f"geoEvents/geozone:{Z1}"}
    assert s.keys() == {f"geoEvents/vehicle:{V1}", f"geoEvents/group:{G2}"}
    assert s.remove(T.GEO_EVENTS, group(G1)) == set()  # already gone
    assert s.remove(T.GEO_EVENTS, zone(Z1)) == set()
    assert s.remove(T.GEO_EVENTS, ALL) == set()
    assert s.counts() == {"geoEvents": 2}


def test_removing_last_part_drops_the_type() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, group(G1)))
    assert s.has(T.VEHICLES)
    assert s.remove(T.VEHICLES, group(G1)) == {f"group:{G1}"}
    assert not s.has(T.VEHICLES)
    assert s.subscriptions() == []
    assert s.counts() == {}


def test_remove_none_removes_the_whole_type() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ALL))
    s.add(Subscription(T.VEHICLES, ids(V1, V2)))
    s.add(Subscription(T.VEHICLES, group(G1)))
    s.add(Subscription(T.VEHICLES, zone(Z1)))
    s.add(Subscription(T.MAINTENANCE, ids(V1)))
    assert s.remove(T.VEHICLES, None) == {
        f"company:{COMPANY}",
        f"vehicle:{V1}",
        f"vehicle:{V2}",
        f"group:{G1}",
        f"geozone:{Z1}",
    }
    assert not s.has(T.VEHICLES)
    assert s.vehicle_ids() == set()
    assert s.keys() == {f"maintenance/vehicle:{V1}"}


def test_remove_of_type_not_subscribed_is_harmless() -> None:
    s = new_set()
    assert s.remove(T.VEHICLES, None) == set()
    assert s.remove(T.GEO_EVENTS, ids(V1)) == set()
    s.add(Subscription(T.VEHICLES, ids(V1)))
    assert s.remove(T.MAINTENANCE, None) == set()
    assert s.keys() == {f"vehicle:{V1}"}


def test_same_key_from_two_types_kept_apart() -> None:
    # vehicles byIds V1 and maintenance byIds V1 are different keys: removing one keeps the other.
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1)))
    s.add(Subscription(T.MAINTENANCE, ids(V1)))
    assert s.remove(T.VEHICLES, ids(V1)) == {f"vehicle:{V1}"}
    assert s.keys() == {f"maintenance/vehicle:{V1}"}
    assert s.vehicle_ids() == set()  # only the vehicles type counts here


# ------------------------------------------------------------------------------ views


def test_subscriptions_round_trip() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1)))
    s.add(Subscription(T.VEHICLES, ids(V2)))
    s.add(Subscription(T.VEHICLES, group(G2)))
    s.add(Subscription(T.VEHICLES, group(G1)))
    s.add(Subscription(T.VEHICLES, ALL))
    s.add(Subscription(T.GEO_EVENTS, zone(Z1)))
    s.add(Subscription(T.NOTIFICATIONS, ALL))
    subs = s.subscriptions()
    assert set(subs) == {
        Subscription(T.VEHICLES, ALL),
        Subscription(T.VEHICLES, ids(V1, V2)),  # merged into one byIds
        Subscription(T.VEHICLES, group(G1)),
        Subscription(T.VEHICLES, group(G2)),
        Subscription(T.GEO_EVENTS, zone(Z1)),
        Subscription(T.NOTIFICATIONS, ALL),
    }
    assert len(subs) == 6
    copy = new_set()
    for sub in subs:
        copy.add(sub)
    assert copy.keys() == s.keys()
    assert copy.counts() == s.counts()
    assert set(copy.subscriptions()) == set(subs)
    # to_json of the saved form is the seed shape
    assert Subscription(T.VEHICLES, ids(V2, V1)).to_json() == {
        "subscriptionType": "vehicles",
        "filter": {"type": "byIds", "ids": sorted([V1, V2])},
    }


def test_counts() -> None:
    s = new_set()
    assert s.counts() == {}
    s.add(Subscription(T.VEHICLES, ids(V1, V2, V3)))
    s.add(Subscription(T.VEHICLES, ALL))
    s.add(Subscription(T.VEHICLES, group(G1)))
    s.add(Subscription(T.VEHICLES, zone(Z1)))
    s.add(Subscription(T.GEO_EVENTS, ALL))
    s.add(Subscription(T.GEO_EVENTS, ALL))  # idempotent
    s.add(Subscription(T.SYSTEM_ALERTS, ALL))
    assert s.counts() == {"vehicles": 6, "geoEvents": 1, "systemAlerts": 1}
    s.remove(T.VEHICLES, ids(V1))
    assert s.counts()["vehicles"] == 5


def test_sets_are_independent() -> None:
    a = new_set()
    b = SubscriptionSet(
        "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee", "ffffffff-ffff-4fff-8fff-ffffffffffff"
    )
    a.add(Subscription(T.VEHICLES, ALL))
    assert b.keys() == set()
    assert b.add(Subscription(T.VEHICLES, ALL)) == {"company:eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"}
    assert b.add(Subscription(T.NOTIFICATIONS, ALL)) == {
        "notifications/user:ffffffff-ffff-4fff-8fff-ffffffffffff"
    }
    assert a.keys() == {f"company:{COMPANY}"}


# ------------------------------------------------------------------------------ model test


class _Model:
    def __init__(self) -> None:
        # type -> {"all": bool, "ids": set, "groups": set, "zones": set}
        self.subs: dict[SubscriptionType, dict[str, set[str]]] = {}

    @staticmethod
    def _fresh() -> dict[str, set[str]]:
        return {"all": set(), "ids": set(), "groups": set(), "zones": set()}

    def _apply(self, stype: SubscriptionType, flt: SubscriptionFilter, add: bool) -> None:
        parts = self.subs.setdefault(stype, self._fresh())
        if flt.kind is FilterKind.ALL:
            items, bucket = {"*"}, "all"
        elif flt.kind is FilterKind.BY_IDS:
            items, bucket = set(flt.ids), "ids"
        elif flt.kind is FilterKind.BY_GROUP:
            items, bucket = {flt.target or ""}, "groups"
        else:
            items, bucket = {flt.target or ""}, "zones"
        if add:
            parts[bucket] |= items
        else:
            parts[bucket] -= items
        if not any(parts.values()):
            del self.subs[stype]

    def add(self, sub: Subscription) -> None:
        self._apply(sub.type, sub.filter, True)

    def remove(self, stype: SubscriptionType, flt: SubscriptionFilter | None) -> None:
        if stype not in self.subs:
            return
        if flt is None:
            del self.subs[stype]
        else:
            self._apply(stype, flt, False)

    def keys(self) -> set[str]:
        out: set[str] = set()
        for stype, parts in self.subs.items():
            if stype is T.NOTIFICATIONS:
                out.add(f"notifications/user:{USER}")
                continue
            p = PREFIX[stype]
            if parts["all"]:
                out.add(f"{p}company:{COMPANY}")
            out |= {f"{p}vehicle:{v}" for v in parts["ids"]}
            out |= {f"{p}group:{g}" for g in parts["groups"]}
            out |= {f"{p}geozone:{z}" for z in parts["zones"]}
        return out

    def counts(self) -> dict[str, int]:
        return {st.value: sum(len(v) for v in parts.values()) for st, parts in self.subs.items()}


def _random_filter(rng: random.Random) -> SubscriptionFilter:
    kind = rng.choice(list(FilterKind))
    if kind is FilterKind.ALL:
        return ALL
    if kind is FilterKind.BY_IDS:
        pool = [f"v{i}" for i in range(8)]
        return ids(*rng.sample(pool, rng.randint(1, 4)))
    if kind is FilterKind.BY_GROUP:
        return group(rng.choice(["g1", "g2", "g3"]))
    return zone(rng.choice(["z1", "z2"]))


@pytest.mark.parametrize("seed", [0, 42])
def test_randomized_against_model(seed: int) -> None:
    rng = random.Random(seed)
    s = new_set()
    model = _Model()
    types = list(SubscriptionType)
    for step in range(2000):
        stype = rng.choice(types)
        before = model.keys()
        if rng.random() < 0.5:
            sub = Subscription(stype, _random_filter(rng))
            got = s.add(sub)
            model.add(sub)
            assert got == model.keys() - before, step
        else:
            flt = None if rng.random() < 0.15 else _random_filter(rng)
            got = s.remove(stype, flt)
            model.remove(stype, flt)
            assert got == before - model.keys(), step
        assert s.keys() == model.keys(), step
        assert s.counts() == model.counts(), step
        for st in types:
            assert s.has(st) == (st in model.subs), step
        veh = model.subs.get(T.VEHICLES)
        assert s.vehicle_ids() == (veh["ids"] if veh else set()), step
        if step % 50 == 0:
            copy = new_set()
            for sub in s.subscriptions():
                copy.add(sub)
            assert copy.keys() == s.keys(), step
            assert copy.counts() == s.counts(), step


# ------------------------------------------------------------------------------ the cap (issue 10)


def test_size_equals_the_number_of_routing_keys() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1, V2)))
    s.add(Subscription(T.GEO_EVENTS, ALL))
    s.add(Subscription(T.NOTIFICATIONS, ALL))
    s.add(Subscription(T.VEHICLES, zone(Z1)))
    s.add(Subscription(T.MAINTENANCE, group(G1)))
    assert s.size() == len(s.keys()) == 6


def test_cap_refuses_a_subscription_that_would_pass_it_and_changes_nothing() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1, V2)), limit=3)
    with pytest.raises(SubscriptionLimit) as info:
        s.add(Subscription(T.GEO_EVENTS, ids(V1, V2)), limit=3)
    assert info.value.code == "SUBSCRIPTION_LIMIT"
    assert info.value.limit == 3 and "3" in info.value.message
    assert s.size() == 2 and not s.has(T.GEO_EVENTS)
    # Exactly up to the cap is fine; past it nothing more, whatever the filter kind.
    assert s.add(Subscription(T.GEO_EVENTS, ALL), limit=3) == {f"geoEvents/company:{COMPANY}"}
    for sub in (
        Subscription(T.VEHICLES, zone(Z1)),
        Subscription(T.VEHICLES, group(G1)),
        Subscription(T.NOTIFICATIONS, ALL),
        Subscription(T.VEHICLES, ids(V3)),
    ):
        with pytest.raises(SubscriptionLimit):
            s.add(sub, limit=3)
    assert s.size() == 3


def test_cap_counts_only_what_is_new() -> None:
    s = new_set()
    s.add(Subscription(T.VEHICLES, ids(V1, V2)), limit=3)
    # Repeats add nothing, so they pass at the cap; a byIds overlapping counts its new ids.
    s.add(Subscription(T.VEHICLES, ids(V1, V3)), limit=3)
    s.add(Subscription(T.VEHICLES, ids(V1, V2, V3)), limit=3)
    s.add(Subscription(T.VEHICLES, ids(V2)), limit=3)
    assert s.size() == 3
    s.remove(T.VEHICLES, ids(V3))
    s.add(Subscription(T.VEHICLES, zone(Z1)), limit=3)
    s.add(Subscription(T.VEHICLES, zone(Z1)), limit=3)
    assert s.size() == 3


def test_unknown_geozones_count_against_the_cap() -> None:
    s = new_set()
    zones = [f"77777777-0000-4000-8000-{i:012d}" for i in range(1000)]
    for z in zones:
        s.add(Subscription(T.VEHICLES, zone(z)), limit=1000)
    with pytest.raises(SubscriptionLimit):
        s.add(Subscription(T.GEO_EVENTS, zone(zones[0])), limit=1000)
    assert len(s.keys()) == 1000


def test_no_limit_means_no_cap() -> None:
    s = new_set()
    s.add(
        Subscription(T.VEHICLES, ids(*(f"11111111-1111-4111-8111-{i:012d}" for i in range(1500))))
    )
    assert s.size() == 1500
