"""Who may see what (tracker_ws/domain/permissions.py, ARCHITECTURE §5) over a VehicleRegistry."""

from __future__ import annotations

import pytest

from tracker_ws.domain.models import (
    ALL,
    FilterKind,
    SubscriptionFilter,
    UserContext,
    Vehicle,
)
from tracker_ws.domain.permissions import Decision, Permissions
from tracker_ws.domain.registry import VehicleRegistry

USER = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
CO_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CO_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

# Company A: groups G1 {A1, A2}, G2 {A2, A3}; A4 in no group.
A1 = "a1000000-0000-4000-8000-000000000001"
A2 = "a1000000-0000-4000-8000-000000000002"
A3 = "a1000000-0000-4000-8000-000000000003"
A4 = "a1000000-0000-4000-8000-000000000004"
# Company B: group GB {B1}; B2 in no group.
B1 = "b1000000-0000-4000-8000-000000000001"
B2 = "b1000000-0000-4000-8000-000000000002"
G1 = "91000000-0000-4000-8000-000000000001"
G2 = "91000000-0000-4000-8000-000000000002"
GB = "92000000-0000-4000-8000-000000000001"
G_UNKNOWN = "93000000-0000-4000-8000-000000000001"
V_UNKNOWN = "c1000000-0000-4000-8000-000000000001"


@pytest.fixture
def registry() -> VehicleRegistry:
    reg = VehicleRegistry()
    for v in (
        Vehicle(A1, CO_A, "a1", frozenset({G1})),
        Vehicle(A2, CO_A, "a2", frozenset({G1, G2})),
        Vehicle(A3, CO_A, "a3", frozenset({G2})),
        Vehicle(A4, CO_A, "a4"),
        Vehicle(B1, CO_B, "b1", frozenset({GB})),
        Vehicle(B2, CO_B, "b2"),
    ):
        reg.upsert(v)
    return reg


def perms(
    *,
    company: str = CO_A,
    vehicle_ids: set[str] | None = None,
    group_ids: set[str] | None = None,
) -> Permissions:
    return Permissions(
        UserContext(
            USER,
            company,
            vehicle_ids=None if vehicle_ids is None else frozenset(vehicle_ids),
            group_ids=None if group_ids is None else frozenset(group_ids),
        )
    )


def ids(*vids: str) -> SubscriptionFilter:
    return SubscriptionFilter(FilterKind.BY_IDS, frozenset(vids))


def group(gid: str) -> SubscriptionFilter:
    return SubscriptionFilter(FilterKind.BY_GROUP, target=gid)


def visible(p: Permissions, reg: VehicleRegistry) -> set[str]:
    out = p.visible_vehicles(reg)
    assert len(out) == len(set(out))
    return set(out)


# ------------------------------------------------------------------------------ can_see


def test_own_company_only() -> None:
    p = perms()
    assert not p.narrowed
    assert p.can_see(A1, CO_A, [G1])
    assert p.can_see(A4, CO_A, [])
    assert not p.can_see(B1, CO_B, [GB])
    # The company decides, not the ids: even a claimed vehicle/group of another company.
    narrowed = perms(vehicle_ids={B1}, group_ids={GB})
    assert not narrowed.can_see(B1, CO_B, [GB])


def test_narrowed_by_vehicle_ids() -> None:
    p = perms(vehicle_ids={A1, A3})
    assert p.narrowed
    assert p.can_see(A1, CO_A, [G1])
    assert p.can_see(A3, CO_A, [])
    assert not p.can_see(A2, CO_A, [G1, G2])


def test_narrowed_by_group_ids() -> None:
    p = perms(group_ids={G2})
    assert p.narrowed
    assert p.can_see(A2, CO_A, [G1, G2])
    assert p.can_see(A3, CO_A, (g for g in [G2]))  # any iterable of groups
    assert not p.can_see(A1, CO_A, [G1])
    assert not p.can_see(A4, CO_A, [])


def test_narrowed_by_both_is_the_union() -> None:
    p = perms(vehicle_ids={A4}, group_ids={G1})
    assert p.can_see(A4, CO_A, [])  # by id
    assert p.can_see(A1, CO_A, [G1])  # by group
    assert p.can_see(A2, CO_A, [G1, G2])
    assert not p.can_see(A3, CO_A, [G2])


def test_empty_claims_narrow_to_nothing() -> None:
    p = perms(vehicle_ids=set(), group_ids=set())
    assert p.narrowed
    assert not p.can_see(A1, CO_A, [G1])


# ------------------------------------------------------------------------------ visible_vehicles


def test_visible_vehicles(registry: VehicleRegistry) -> None:
    assert visible(perms(), registry) == {A1, A2, A3, A4}
    assert visible(perms(company=CO_B), registry) == {B1, B2}
    assert visible(perms(vehicle_ids={A1, B1, V_UNKNOWN}), registry) == {A1}
    assert visible(perms(group_ids={G2}), registry) == {A2, A3}
    assert visible(perms(vehicle_ids={A4}, group_ids={G1}), registry) == {A1, A2, A4}
    assert visible(perms(group_ids={GB}), registry) == set()
    assert visible(perms(company="eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"), registry) == set()
    assert visible(perms(), VehicleRegistry()) == set()


def test_visible_vehicles_follows_registry_changes(registry: VehicleRegistry) -> None:
    p = perms(group_ids={G2})
    registry.upsert(Vehicle(A4, CO_A, "a4", frozenset({G2})))
    assert visible(p, registry) == {A2, A3, A4}
    registry.upsert(Vehicle(A3, CO_B, "a3 sold"))
    assert visible(p, registry) == {A2, A4}
    registry.delete(A2)
    assert visible(p, registry) == {A4}


# ------------------------------------------------------------------------------ authorize: all


def test_authorize_all(registry: VehicleRegistry) -> None:
    assert perms().authorize_vehicles(ALL, registry) == Decision(ALL, 4)
    assert perms(group_ids={G1}).authorize_vehicles(ALL, registry) == Decision(ALL, 2)
    assert perms(vehicle_ids={B1}).authorize_vehicles(ALL, registry) == Decision(ALL, 0)


# ------------------------------------------------------------------------------ authorize: byIds


def test_authorize_by_ids_all_allowed(registry: VehicleRegistry) -> None:
    d = perms().authorize_vehicles(ids(A1, A4), registry)
    assert d == Decision(ids(A1, A4), 2)
    assert d.denied == ()
    assert d.reason == ""


def test_authorize_by_ids_split(registry: VehicleRegistry) -> None:
    d = perms().authorize_vehicles(ids(V_UNKNOWN, B2, A2, B1, A1), registry)
    assert d.filter == ids(A1, A2)
    assert d.count == 2
    assert d.denied == tuple(sorted([V_UNKNOWN, B1, B2]))  # sorted; unknown ids denied
    assert d.reason


def test_authorize_by_ids_nothing_allowed(registry: VehicleRegistry) -> None:
    d = perms().authorize_vehicles(ids(B2, V_UNKNOWN, B1), registry)
    assert d.filter is None
    assert d.count == 0
    assert d.denied == tuple(sorted([B1, B2, V_UNKNOWN]))
    assert d.reason


def test_authorize_by_ids_narrowed(registry: VehicleRegistry) -> None:
    p = perms(vehicle_ids={A1}, group_ids={G2})
    d = p.authorize_vehicles(ids(A1, A2, A3, A4), registry)
    assert d.filter == ids(A1, A2, A3)
    assert d.count == 3
    assert d.denied == (A4,)


def test_authorize_by_ids_claimed_but_unknown_is_denied(registry: VehicleRegistry) -> None:
    # A vehicleIds claim is not proof of ownership: the registry must know the vehicle.
    d = perms(vehicle_ids={V_UNKNOWN}).authorize_vehicles(ids(V_UNKNOWN), registry)
    assert d.filter is None
    assert d.denied == (V_UNKNOWN,)


# ------------------------------------------------------------------------------ authorize: byGroup


def test_authorize_own_group(registry: VehicleRegistry) -> None:
    assert perms().authorize_vehicles(group(G1), registry) == Decision(group(G1), 2)
    assert perms().authorize_vehicles(group(G2), registry) == Decision(group(G2), 2)


def test_authorize_other_company_group_denied(registry: VehicleRegistry) -> None:
    for p in (perms(), perms(group_ids={GB}), perms(vehicle_ids={B1})):
        d = p.authorize_vehicles(group(GB), registry)
        assert d.filter is None
        assert d.count == 0
        assert d.denied == (GB,)
        assert d.reason


def test_authorize_unknown_group_denied_unless_claimed(registry: VehicleRegistry) -> None:
    d = perms().authorize_vehicles(group(G_UNKNOWN), registry)
    assert d.filter is None
    assert d.denied == (G_UNKNOWN,)
    # Claimed in the token: allowed (it may get vehicles later), with no members yet.
    d = perms(group_ids={G_UNKNOWN}).authorize_vehicles(group(G_UNKNOWN), registry)
    assert d == Decision(group(G_UNKNOWN), 0)


def test_authorize_group_narrowed_by_group_claim(registry: VehicleRegistry) -> None:
    p = perms(group_ids={G2})
    assert p.authorize_vehicles(group(G2), registry) == Decision(group(G2), 2)
    # G1 is not claimed, but A2 (in G1) is visible through G2: allowed, counting only A2.
    assert p.authorize_vehicles(group(G1), registry) == Decision(group(G1), 1)


def test_authorize_group_narrowed_without_visible_members(registry: VehicleRegistry) -> None:
    p = perms(vehicle_ids={A4})
    d = p.authorize_vehicles(group(G1), registry)
    assert d.filter is None
    assert d.denied == (G1,)


def test_authorize_group_narrowed_by_vehicle_claim(registry: VehicleRegistry) -> None:
    p = perms(vehicle_ids={A3})
    assert p.authorize_vehicles(group(G2), registry) == Decision(group(G2), 1)


def test_authorize_group_member_count_follows_registry(registry: VehicleRegistry) -> None:
    p = perms()
    registry.upsert(Vehicle(A4, CO_A, "a4", frozenset({G1})))
    assert p.authorize_vehicles(group(G1), registry).count == 3
    registry.delete(A1)
    registry.delete(A2)
    registry.delete(A4)
    # Group now empty and forgotten: unknown again.
    assert p.authorize_vehicles(group(G1), registry).filter is None


# ------------------------------------------------------------------------------ byGeozone


def test_authorize_geozone_passes_through(registry: VehicleRegistry) -> None:
    flt = SubscriptionFilter(FilterKind.BY_GEOZONE, target="94000000-0000-4000-8000-000000000001")
    assert perms().authorize_vehicles(flt, registry) == Decision(flt, 0)


def test_own_group_allowed_after_foreign_vehicle_left_it(registry: VehicleRegistry) -> None:
    registry.upsert(Vehicle(B2, CO_B, "b2", frozenset({G1})))  # bad record…
    registry.upsert(Vehicle(B2, CO_B, "b2"))  # …corrected
    assert registry.group_vehicles(G1) == {A1, A2}
    assert perms().authorize_vehicles(group(G1), registry) == Decision(group(G1), 2)
    d = perms(company=CO_B).authorize_vehicles(group(G1), registry)
    assert d.filter is None
