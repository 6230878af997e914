"""The vehicle registry and its reverse indexes (tracker_ws/domain/registry.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tracker_ws.domain.errors import InvalidEvent
from tracker_ws.domain.models import Vehicle
from tracker_ws.domain.registry import VehicleRegistry, parse_vehicle

CO_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CO_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"
G1 = "91000000-0000-4000-8000-000000000001"
G2 = "91000000-0000-4000-8000-000000000002"
G3 = "91000000-0000-4000-8000-000000000003"


def veh(vid: str, company: str, *groups: str, name: str = "") -> Vehicle:
    return Vehicle(vid, company, name or f"truck {vid[:2]}", frozenset(groups))


def check_indexes(reg: VehicleRegistry, expected: dict[str, Vehicle]) -> None:
    """The reverse indexes equal what the stored vehicles imply, exactly."""
    assert len(reg) == len(expected)
    companies = {v.company_id for v in expected.values()} | {CO_A, CO_B}
    groups = {g for v in expected.values() for g in v.group_ids} | {G1, G2, G3}
    for vid, v in expected.items():
        assert reg.get(vid) == v
    for c in companies:
        want = frozenset(vid for vid, v in expected.items() if v.company_id == c)
        assert reg.company_vehicles(c) == want, c
    for g in groups:
        want = frozenset(vid for vid, v in expected.items() if g in v.group_ids)
        assert reg.group_vehicles(g) == want, g
        if not want:
            assert reg.group_company(g) is None, g


# ------------------------------------------------------------------------------ upsert / delete


def test_empty_registry() -> None:
    reg = VehicleRegistry()
    assert len(reg) == 0
    assert reg.get(V1) is None
    assert reg.company_vehicles(CO_A) == frozenset()
    assert reg.group_vehicles(G1) == frozenset()
    assert reg.group_company(G1) is None
    assert reg.delete(V1) is None


def test_upsert_new_and_replace_returns_previous() -> None:
    reg = VehicleRegistry()
    first = veh(V1, CO_A, G1, name="old")
    assert reg.upsert(first) is None
    second = veh(V1, CO_A, G1, name="new")
    assert reg.upsert(second) == first
    assert reg.get(V1) == second
    assert len(reg) == 1
    check_indexes(reg, {V1: second})


def test_indexes_after_several_upserts() -> None:
    reg = VehicleRegistry()
    vs = {
        V1: veh(V1, CO_A, G1),
        V2: veh(V2, CO_A, G1, G2),
        V3: veh(V3, CO_B, G3),
    }
    for v in vs.values():
        reg.upsert(v)
    check_indexes(reg, vs)
    assert reg.company_vehicles(CO_A) == {V1, V2}
    assert reg.group_vehicles(G1) == {V1, V2}
    assert reg.group_company(G1) == CO_A
    assert reg.group_company(G2) == CO_A
    assert reg.group_company(G3) == CO_B


def test_move_vehicle_between_groups() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    reg.upsert(veh(V2, CO_A, G1))
    moved = veh(V1, CO_A, G2)
    reg.upsert(moved)
    check_indexes(reg, {V1: moved, V2: veh(V2, CO_A, G1)})
    assert reg.group_vehicles(G1) == {V2}
    assert reg.group_vehicles(G2) == {V1}
    assert reg.group_company(G2) == CO_A
    # Moving the last member out forgets the group.
    moved2 = veh(V2, CO_A, G2)
    reg.upsert(moved2)
    assert reg.group_vehicles(G1) == frozenset()
    assert reg.group_company(G1) is None
    check_indexes(reg, {V1: moved, V2: moved2})


def test_move_vehicle_between_companies() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    reg.upsert(veh(V2, CO_A))
    sold = veh(V1, CO_B, G3)
    assert reg.upsert(sold) == veh(V1, CO_A, G1)
    assert reg.company_vehicles(CO_A) == {V2}
    assert reg.company_vehicles(CO_B) == {V1}
    assert reg.group_company(G1) is None
    assert reg.group_company(G3) == CO_B
    check_indexes(reg, {V1: sold, V2: veh(V2, CO_A)})


def test_move_company_keeping_sole_group() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    reg.upsert(veh(V1, CO_B, G1))
    assert reg.group_company(G1) == CO_B
    assert reg.company_vehicles(CO_A) == frozenset()


def test_delete_unindexes() -> None:
    reg = VehicleRegistry()
    a = veh(V1, CO_A, G1, G2)
    b = veh(V2, CO_A, G2)
    reg.upsert(a)
    reg.upsert(b)
    assert reg.delete(V1) == a
    assert reg.get(V1) is None
    assert reg.group_company(G1) is None
    assert reg.group_company(G2) == CO_A
    check_indexes(reg, {V2: b})
    assert reg.delete(V1) is None  # twice is harmless
    assert reg.delete(V2) == b
    check_indexes(reg, {})


def test_index_views_are_snapshots() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    members = reg.group_vehicles(G1)
    fleet = reg.company_vehicles(CO_A)
    reg.upsert(veh(V2, CO_A, G1))
    assert members == {V1}
    assert fleet == {V1}
    assert isinstance(members, frozenset)


def test_lookups_of_unknown_ids_do_not_create_entries() -> None:
    reg = VehicleRegistry()
    reg.company_vehicles(CO_A)
    reg.group_vehicles(G1)
    reg.group_company(G1)
    reg.upsert(veh(V1, CO_B))
    reg.delete(V1)
    check_indexes(reg, {})


def test_group_company_follows_remaining_members() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    reg.upsert(veh(V2, CO_A, G1))
    # A record mistakenly puts a company-B vehicle into A's group, then it is corrected.
    reg.upsert(veh(V3, CO_B, G1))
    reg.upsert(veh(V3, CO_B, G3))
    assert reg.group_vehicles(G1) == {V1, V2}
    assert reg.group_company(G1) == CO_A  # actual: CO_B


def test_group_company_after_delete_of_foreign_member() -> None:
    reg = VehicleRegistry()
    reg.upsert(veh(V1, CO_A, G1))
    reg.upsert(veh(V2, CO_B, G1))
    reg.delete(V2)
    assert reg.group_company(G1) == CO_A  # actual: CO_B


@pytest.mark.parametrize("seed", [3, 11])
def test_randomized_indexes_stay_exact(seed: int) -> None:
    # Each group id is only ever used by one company here (the production invariant), so
    # group_company must always be that company while the group has members.
    rng = random.Random(seed)
    vids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(10)]
    group_owner = {G1: CO_A, G2: CO_A, G3: CO_B}
    reg = VehicleRegistry()
    model: dict[str, Vehicle] = {}
    for _ in range(1000):
        vid = rng.choice(vids)
        if rng.random() < 0.25:
            assert reg.delete(vid) == model.pop(vid, None)
        else:
            company = rng.choice([CO_A, CO_B])
            groups = [g for g, c in group_owner.items() if c == company and rng.random() < 0.5]
            v = veh(vid, company, *groups)
            assert reg.upsert(v) == model.get(vid)
            model[vid] = v
        check_indexes(reg, model)
        for g, owner in group_owner.items():
            if reg.group_vehicles(g):
                assert reg.group_company(g) == owner


# ------------------------------------------------------------------------------ parse_vehicle


def test_parse_vehicle_valid() -> None:
    v = parse_vehicle(
        V1,
        {
            "vehicleId": V1.upper(),
            "companyId": CO_A.upper(),
            "name": "Truck 7",
            "groupIds": [G1.upper(), G2, G1],
        },
    )
    assert v == Vehicle(V1, CO_A, "Truck 7", frozenset({G1, G2}))  # canonical lower case


def test_parse_vehicle_id_from_key_and_defaults() -> None:
    v = parse_vehicle(V2, {"companyId": CO_B})
    assert v == Vehicle(V2, CO_B, "", frozenset())
    v = parse_vehicle(None, {"vehicleId": V3, "companyId": CO_B, "groupIds": None})
    assert v == Vehicle(V3, CO_B, "", frozenset())
    assert parse_vehicle(V1, {"vehicleId": V1, "companyId": CO_A, "name": "x" * 200}) is not None


def test_parse_vehicle_tombstone() -> None:
    assert parse_vehicle(V1, None) is None
    assert parse_vehicle(None, None) is None


MALFORMED: list[tuple[str, Any, str]] = [
    ("list value", ["x"], "JSON object"),
    ("string value", "x", "JSON object"),
    ("number value", 5, "JSON object"),
    ("no vehicleId and no key", {"companyId": CO_A}, "vehicleId"),
    ("bad vehicleId", {"vehicleId": "truck-1", "companyId": CO_A}, "vehicleId"),
    ("numeric vehicleId", {"vehicleId": 17, "companyId": CO_A}, "vehicleId"),
    ("missing companyId", {"vehicleId": V1}, "companyId"),
    ("bad companyId", {"vehicleId": V1, "companyId": "acme"}, "companyId"),
    ("name not a string", {"vehicleId": V1, "companyId": CO_A, "name": 7}, "name"),
    ("name too long", {"vehicleId": V1, "companyId": CO_A, "name": "x" * 201}, "name"),
    ("groupIds not a list", {"vehicleId": V1, "companyId": CO_A, "groupIds": G1}, "groupIds"),
    ("groupIds bad member", {"vehicleId": V1, "companyId": CO_A, "groupIds": ["g"]}, "groupIds"),
    ("groupIds null member", {"vehicleId": V1, "companyId": CO_A, "groupIds": [None]}, "groupIds"),
]


@pytest.mark.parametrize(
    ("value", "field"), [(v, f) for _, v, f in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_parse_vehicle_malformed(value: Any, field: str) -> None:
    key = None if isinstance(value, dict) else V1  # dicts carry (or lack) their own vehicleId
    with pytest.raises(InvalidEvent, match=field) as info:
        parse_vehicle(key, value)
    assert info.value.code == "INVALID_EVENT"


@pytest.mark.parametrize("groups", [False, 0, "", {}], ids=["false", "zero", "empty-str", "obj"])
def test_parse_vehicle_falsy_non_list_group_ids_rejected(groups: Any) -> None:
    with pytest.raises(InvalidEvent, match="groupIds"):
        parse_vehicle(V1, {"vehicleId": V1, "companyId": CO_A, "groupIds": groups})
