"""Who may receive a replayable event (tracker_ws/domain/audience.py): the rules, and one
answer for live delivery (Hub.recipients, through the subscription index) and for replay
(`entitled`, one connection and its own keys), over generated users, subscriptions and
events."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from tracker_ws.domain import envelope
from tracker_ws.domain.audience import Audience, admits, audience_of, entitled
from tracker_ws.domain.models import (
    FilterKind,
    Subscription,
    SubscriptionFilter,
    SubscriptionType,
    UserContext,
    Vehicle,
)
from tracker_ws.domain.permissions import Permissions
from tracker_ws.domain.registry import VehicleRegistry
from tracker_ws.domain.subscriptions import SubscriptionSet
from tracker_ws.metrics import Metrics
from tracker_ws.web.hub import Hub

C1 = "c0000000-0000-4000-8000-000000000001"
C2 = "c0000000-0000-4000-8000-000000000002"
U1 = "a0000000-0000-4000-8000-000000000001"
U2 = "a0000000-0000-4000-8000-000000000002"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
G1 = "99999999-9999-4999-8999-999999999991"
G2 = "99999999-9999-4999-8999-999999999992"
Z1 = "88888888-8888-4888-8888-888888888881"

REGISTRY = {V1: Vehicle(V1, C1, "truck 1", frozenset({G1})), V2: Vehicle(V2, C1, "truck 2")}


def perms(user: str = U1, company: str = C1, **narrow: Any) -> Permissions:
    return Permissions(UserContext(user, company, **narrow))


def geo(vehicle: str = V1, company: str = C1) -> dict[str, Any]:
    return {"t": envelope.GEO, "v": vehicle, "c": company, "z": Z1, "e": {"id": 1}}


def test_a_vehicle_event_belongs_to_the_registry_company_not_the_producer_claim() -> None:
    a = audience_of(geo(V1, C2), REGISTRY.get)
    assert a is not None and a.company == C1 and a.groups == {G1}
    assert admits(a, perms(company=C1)) and not admits(a, perms(company=C2))


def test_an_unknown_vehicle_keeps_the_envelope_company_and_no_groups() -> None:
    a = audience_of(geo("33333333-3333-4333-8333-333333333333", C2), REGISTRY.get)
    assert a is not None and a.company == C2 and a.groups == frozenset()


def test_narrowed_users_get_events_of_their_vehicles_or_groups_only() -> None:
    a1 = audience_of(geo(V1), REGISTRY.get)
    a2 = audience_of(geo(V2), REGISTRY.get)
    assert a1 is not None and a2 is not None
    by_group = perms(group_ids=frozenset({G1}))
    assert admits(a1, by_group) and not admits(a2, by_group)
    by_id = perms(vehicle_ids=frozenset({V2}))
    assert admits(a2, by_id) and not admits(a1, by_id)


def test_a_notification_reaches_its_own_user_only() -> None:
    a = audience_of({"t": envelope.NOTIFICATION, "u": U1, "n": {}}, REGISTRY.get)
    assert a is not None and a.keys == ("notifications/user:" + U1,)
    assert admits(a, perms(U1)) and not admits(a, perms(U2))


@pytest.mark.parametrize(
    ("companies", "subscribers_only", "company", "has_type", "expected"),
    [
        (None, False, C2, False, True),  # an admin broadcast to everyone
        ([C1], False, C2, True, False),  # out of scope
        ([C1], False, C1, False, True),
        (None, True, C1, False, False),  # the alerts stream: systemAlerts subscribers only
        (None, True, C1, True, True),
    ],
)
def test_alerts_by_scope_and_subscription(
    companies: list[str] | None,
    subscribers_only: bool,
    company: str,
    has_type: bool,
    expected: bool,
) -> None:
    env: dict[str, object] = {
        "t": envelope.ALERT,
        "level": "info",
        "message": "m",
        "companies": companies,
    }
    if subscribers_only:
        env["subscribers_only"] = True
    a = audience_of(env, REGISTRY.get)
    assert a is not None and a.keys is None
    assert admits(a, perms(company=company), has_type) is expected


def test_positions_and_unknown_kinds_have_no_audience() -> None:
    assert audience_of({"t": envelope.POSITION, "v": V1}, REGISTRY.get) is None
    assert audience_of({"t": "later-kind"}, REGISTRY.get) is None


def test_entitled_needs_one_of_the_keys() -> None:
    a = Audience(("k1", "k2"), user=U1)
    assert entitled(a, perms(U1), {"k2", "x"}, frozenset())
    assert not entitled(a, perms(U1), {"x"}, frozenset())


# ------------------------------------------------------------ live and replay agree


def random_filter(rng: random.Random, stype: SubscriptionType) -> SubscriptionFilter:
    kind = rng.choice(list(FilterKind))
    if stype is SubscriptionType.NOTIFICATIONS or kind is FilterKind.ALL:
        return SubscriptionFilter(FilterKind.ALL)
    if kind is FilterKind.BY_IDS:
        return SubscriptionFilter(kind, frozenset(rng.sample([V1, V2], rng.randint(1, 2))))
    if kind is FilterKind.BY_GROUP:
        return SubscriptionFilter(kind, target=rng.choice([G1, G2]))
    return SubscriptionFilter(kind, target=Z1)


class Conn:
    """What Hub.recipients and the index read of a Session (hashable by identity)."""

    def __init__(self, conn_id: str, user: UserContext, subs: SubscriptionSet) -> None:
        self.conn_id = conn_id
        self.user = user
        self.perms = Permissions(user)
        self.subs = subs
        self.info = SimpleNamespace(platform="web")
        self.stream = None  # the Hub keeps its position stream here
        self.shared = False


def random_session(rng: random.Random, n: int) -> Conn:
    company = rng.choice([C1, C2])
    narrow: dict[str, Any] = {}
    if rng.random() < 0.3:
        narrow["vehicle_ids"] = frozenset(rng.sample([V1, V2], 1))
    if rng.random() < 0.3:
        narrow["group_ids"] = frozenset({rng.choice([G1, G2])})
    user = UserContext(rng.choice([U1, U2]), company, **narrow)
    subs = SubscriptionSet(company, user.user_id)
    for _ in range(rng.randint(0, 4)):
        stype = rng.choice(list(SubscriptionType))
        subs.add(Subscription(stype, random_filter(rng, stype)))
    return Conn(f"conn-{n}", user, subs)


def random_event(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice([envelope.GEO, envelope.MAINTENANCE, envelope.NOTIFICATION, envelope.ALERT])
    if kind in (envelope.GEO, envelope.MAINTENANCE):
        env: dict[str, Any] = geo(rng.choice([V1, V2, "33333333-3333-4333-8333-333333333333"]))
        env["c"] = rng.choice([C1, C2])
        env["t"] = kind
        env["n"] = {"id": 2}
        return env
    if kind == envelope.NOTIFICATION:
        return {"t": kind, "u": rng.choice([U1, U2]), "n": {"id": 3}}
    env = {"t": kind, "level": "info", "message": "m", "companies": None}
    if rng.random() < 0.5:
        env["companies"] = [rng.choice([C1, C2])]
    if rng.random() < 0.5:
        env["subscribers_only"] = True
    return env


def untimed(frame: bytes) -> dict[str, Any]:
    """A frame without its send time."""
    out: dict[str, Any] = orjson.loads(frame)
    out.pop("timestamp")
    return out


@pytest.mark.parametrize("seed", range(20))
def test_live_delivery_and_replay_pick_the_same_connections(seed: int) -> None:
    rng = random.Random(seed)
    registry = VehicleRegistry()
    for vehicle in REGISTRY.values():
        registry.upsert(vehicle)
    hub = Hub(Metrics("test"), registry)
    sessions = [random_session(rng, n) for n in range(12)]
    for s in sessions:
        hub.register(s)  # type: ignore[arg-type]
        hub.subscribe(s, s.subs.keys())  # type: ignore[arg-type]
    for event_id in range(1, 60):
        env = random_event(rng)
        found = hub.recipients(event_id, env)
        assert found is not None
        frame, live = found
        assert untimed(frame) == untimed(envelope.event_frame(event_id, env))
        audience = audience_of(env, registry.get)
        assert audience is not None
        replayed = [
            s
            for s in sessions
            if entitled(
                audience,
                s.perms,
                s.subs.keys(),
                frozenset(t for t in SubscriptionType if s.subs.has(t)),
            )
        ]
        assert sorted(s.conn_id for s in live) == sorted(s.conn_id for s in replayed), env
