"""Unit tests of the WebSocket protocol codec (seed §3, ARCHITECTURE §5)."""

from __future__ import annotations

import random
import re
import time
import uuid
from typing import Any

import orjson
import pytest

from tracker_ws.domain.errors import InvalidMessage
from tracker_ws.domain.models import (
    Ack,
    FilterKind,
    GetState,
    GpsFix,
    Ping,
    Sensors,
    Subscribe,
    Subscription,
    SubscriptionFilter,
    SubscriptionType,
    Unsubscribe,
    VehicleStatus,
)
from tracker_ws.domain.protocol import (
    ALLOWED_FILTERS,
    encode_batch_fragment,
    encode_connected,
    encode_error,
    encode_geo_event,
    encode_notification,
    encode_pong,
    encode_position,
    encode_position_batch,
    encode_subscribed,
    encode_system_alert,
    encode_unsubscribed,
    iso_from_ms,
    now_ms,
    parse_client_message,
    parse_timestamp_ms,
    position_dict,
)

V1 = "5b0c3a51-8f6e-4c1e-9a53-0f0e6c1d2a01"
V2 = "5b0c3a51-8f6e-4c1e-9a53-0f0e6c1d2a02"
V3 = "5b0c3a51-8f6e-4c1e-9a53-0f0e6c1d2a03"
GROUP = "9d2f7c44-1b3a-4e5f-8a6b-7c8d9e0f1a2b"
ZONE = "c1e2d3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
CONN = "0f1e2d3c-4b5a-4968-8776-655443322110"

T0_MS = 1_737_367_200_000  # 2025-01-20T10:00:00.000Z
ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

ST = SubscriptionType
FK = FilterKind


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def parse(obj: Any, **kw: Any) -> Any:
    return parse_client_message(dumps(obj), **kw)


# ============================================================================== parsing: valid


def test_seed_subscribe_by_ids() -> None:
    msg = {
        "type": "subscribe",
        "subscriptionType": "vehicles",
        "filter": {"type": "byIds", "ids": [V1, V2, V3]},
    }
    assert parse(msg) == Subscribe(
        ST.VEHICLES, SubscriptionFilter(FK.BY_IDS, ids=frozenset({V1, V2, V3}))
    )


def test_seed_subscribe_geo_events_all() -> None:
    msg = {"type": "subscribe", "subscriptionType": "geoEvents", "filter": {"type": "all"}}
    assert parse(msg) == Subscribe(ST.GEO_EVENTS, SubscriptionFilter(FK.ALL))


def test_seed_unsubscribe_by_ids() -> None:
    msg = {
        "type": "unsubscribe",
        "subscriptionType": "vehicles",
        "filter": {"type": "byIds", "ids": [V1]},
    }
    assert parse(msg) == Unsubscribe(
        ST.VEHICLES, SubscriptionFilter(FK.BY_IDS, ids=frozenset({V1}))
    )


def test_seed_get_state() -> None:
    assert parse({"type": "getState", "vehicleIds": [V1, V2]}) == GetState(frozenset({V1, V2}))


def test_seed_ping() -> None:
    assert parse({"type": "ping"}) == Ping()


def test_seed_ack() -> None:
    assert parse({"type": "ack", "eventId": 12345}) == Ack(12345)


def test_seed_js_client_null_fields() -> None:
    # The seed JS client sends `filter: null` and `vehicleIds: null` for "everything".
    raw_unsub = '{"type":"unsubscribe","subscriptionType":"vehicles","filter":null}'
    assert parse_client_message(raw_unsub) == Unsubscribe(ST.VEHICLES, None)
    raw_state = '{"type":"getState","vehicleIds":null}'
    assert parse_client_message(raw_state) == GetState(None)


def test_optional_fields_may_be_absent() -> None:
    assert parse({"type": "unsubscribe", "subscriptionType": "geoEvents"}) == Unsubscribe(
        ST.GEO_EVENTS, None
    )
    assert parse({"type": "getState"}) == GetState(None)


def test_get_state_empty_list() -> None:
    assert parse({"type": "getState", "vehicleIds": []}) == GetState(frozenset())


def test_by_group_and_by_geozone() -> None:
    by_group = {"type": "byGroup", "groupId": GROUP}
    assert parse(
        {"type": "subscribe", "subscriptionType": "maintenance", "filter": by_group}
    ) == Subscribe(ST.MAINTENANCE, SubscriptionFilter(FK.BY_GROUP, target=GROUP))
    by_zone = {"type": "byGeozone", "geozoneId": ZONE}
    assert parse(
        {"type": "subscribe", "subscriptionType": "geoEvents", "filter": by_zone}
    ) == Subscribe(ST.GEO_EVENTS, SubscriptionFilter(FK.BY_GEOZONE, target=ZONE))


def test_ids_are_normalized_and_deduplicated() -> None:
    msg = {
        "type": "subscribe",
        "subscriptionType": "vehicles",
        "filter": {"type": "byIds", "ids": [V1.upper(), V1, V2.upper()]},
    }
    result = parse(msg)
    assert isinstance(result, Subscribe)
    assert result.filter.ids == frozenset({V1, V2})
    group = {"type": "byGroup", "groupId": GROUP.upper()}
    result = parse({"type": "subscribe", "subscriptionType": "vehicles", "filter": group})
    assert result.filter.target == GROUP


def test_accepts_str_and_bytes() -> None:
    text = '{"type": "ack", "eventId": 7}'
    assert parse_client_message(text) == parse_client_message(text.encode()) == Ack(7)


def test_ack_bounds_inclusive() -> None:
    assert parse({"type": "ack", "eventId": 0}) == Ack(0)
    assert parse({"type": "ack", "eventId": 2**53}) == Ack(2**53)


def test_max_ids_is_inclusive_and_configurable() -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(1, 6)]
    sub = {"type": "subscribe", "subscriptionType": "vehicles", "filter": _ids(*ids)}
    assert len(parse(sub, max_ids=5).filter.ids) == 5
    with pytest.raises(InvalidMessage, match=r"filter\.ids"):
        parse(sub, max_ids=4)
    assert parse({"type": "getState", "vehicleIds": ids}, max_ids=5) == GetState(frozenset(ids))
    with pytest.raises(InvalidMessage, match="vehicleIds"):
        parse({"type": "getState", "vehicleIds": ids}, max_ids=4)


def test_invalid_message_has_code() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_client_message("nope")
    assert info.value.code == "INVALID_MESSAGE"


# ============================================================================== parsing: invalid


def _sub(st: object = "vehicles", flt: Any = None, **extra: Any) -> bytes:
    msg: dict[str, Any] = {"type": "subscribe", "subscriptionType": st}
    if flt is not None:
        msg["filter"] = flt
    msg.update(extra)
    return dumps(msg)


def _ids(*ids: Any) -> dict[str, Any]:
    return {"type": "byIds", "ids": list(ids)}


MANY = [str(uuid.UUID(int=i)) for i in range(1, 1002)]

MALFORMED: list[tuple[str, str | bytes, str]] = [
    ("not json", "hello", "JSON"),
    ("empty frame", "", "JSON"),
    ("truncated json", '{"type": "ping"', "JSON"),
    ("trailing garbage", '{"type": "ping"} x', "JSON"),
    ("lone surrogate", b'{"type": "\\ud800"}', "JSON"),
    ("array", "[]", "object"),
    ("number", "42", "object"),
    ("null", "null", "object"),
    ("string", '"subscribe"', "object"),
    ("missing type", "{}", "'type'"),
    ("unknown type", '{"type": "subscribeAll"}', "'type'"),
    ("type not a string", '{"type": 5}', "'type'"),
    ("type null", '{"type": null}', "'type'"),
    (
        "missing subscriptionType",
        '{"type": "subscribe", "filter": {"type": "all"}}',
        "subscriptionType",
    ),
    ("unknown subscriptionType", _sub("cars", {"type": "all"}), "subscriptionType"),
    ("subscriptionType wrong case", _sub("Vehicles", {"type": "all"}), "subscriptionType"),
    ("subscriptionType number", _sub(1, {"type": "all"}), "subscriptionType"),
    ("missing filter", _sub(), "'filter'"),
    (
        "filter null on subscribe",
        '{"type":"subscribe","subscriptionType":"vehicles","filter":null}',
        "'filter'",
    ),
    ("filter is a string", _sub(flt="all"), "'filter'"),
    ("filter is an array", _sub(flt=[V1]), "'filter'"),
    ("filter without type", _sub(flt={"ids": [V1]}), "filter.type"),
    ("unknown filter type", _sub(flt={"type": "byName"}), "filter.type"),
    ("filter type not a string", _sub(flt={"type": True}), "filter.type"),
    ("byIds without ids", _sub(flt={"type": "byIds"}), "filter.ids"),
    ("byIds empty", _sub(flt=_ids()), "filter.ids"),
    ("byIds not a list", _sub(flt={"type": "byIds", "ids": V1}), "filter.ids"),
    ("byIds null", _sub(flt={"type": "byIds", "ids": None}), "filter.ids"),
    ("byIds not uuid", _sub(flt=_ids("uuid1")), "filter.ids[0]"),
    ("byIds number element", _sub(flt=_ids(V1, 5)), "filter.ids[1]"),
    ("byIds braces uuid", _sub(flt=_ids("{" + V1 + "}")), "filter.ids[0]"),
    ("byIds urn uuid", _sub(flt=_ids("urn:uuid:" + V1)), "filter.ids[0]"),
    ("byIds uuid without hyphens", _sub(flt=_ids(V1.replace("-", ""))), "filter.ids[0]"),
    ("byIds uuid with spaces", _sub(flt=_ids(f" {V1} ")), "filter.ids[0]"),
    ("byIds too many", _sub(flt={"type": "byIds", "ids": MANY}), "filter.ids"),
    ("byGroup without groupId", _sub(flt={"type": "byGroup"}), "filter.groupId"),
    ("byGroup bad groupId", _sub(flt={"type": "byGroup", "groupId": "g1"}), "filter.groupId"),
    ("byGroup list groupId", _sub(flt={"type": "byGroup", "groupId": [GROUP]}), "filter.groupId"),
    ("byGeozone without geozoneId", _sub(flt={"type": "byGeozone"}), "filter.geozoneId"),
    ("byGeozone number", _sub(flt={"type": "byGeozone", "geozoneId": 123}), "filter.geozoneId"),
    ("all with ids", _sub(flt={"type": "all", "ids": [V1]}), "'ids'"),
    ("byIds with groupId", _sub(flt={**_ids(V1), "groupId": GROUP}), "'groupId'"),
    (
        "byGroup with geozoneId",
        _sub(flt={"type": "byGroup", "groupId": GROUP, "geozoneId": ZONE}),
        "'geozoneId'",
    ),
    ("unknown top-level field", _sub(flt={"type": "all"}, extra=1), "'extra'"),
    (
        "camelCase typo",
        _sub(flt={"type": "all"}, subscriptiontype="vehicles"),
        "'subscriptiontype'",
    ),
    ("ping with payload", '{"type": "ping", "data": 1}', "'data'"),
    ("ack with extra", '{"type": "ack", "eventId": 1, "ts": 2}', "'ts'"),
    ("getState with filter", '{"type": "getState", "filter": null}', "'filter'"),
    ("unsubscribe without subscriptionType", '{"type": "unsubscribe"}', "subscriptionType"),
    (
        "unsubscribe bad filter",
        '{"type": "unsubscribe", "subscriptionType": "vehicles", "filter": 3}',
        "'filter'",
    ),
    (
        "unsubscribe filter bad ids",
        '{"type":"unsubscribe","subscriptionType":"vehicles","filter":{"type":"byIds","ids":["x"]}}',
        "filter.ids[0]",
    ),
    ("getState ids not a list", '{"type": "getState", "vehicleIds": "all"}', "vehicleIds"),
    ("getState ids object", '{"type": "getState", "vehicleIds": {}}', "vehicleIds"),
    ("getState bad id", f'{{"type": "getState", "vehicleIds": ["{V1}", "x"]}}', "vehicleIds[1]"),
    ("getState too many", dumps({"type": "getState", "vehicleIds": MANY}), "vehicleIds"),
    ("ack without eventId", '{"type": "ack"}', "eventId"),
    ("ack bool eventId", '{"type": "ack", "eventId": true}', "eventId"),
    ("ack null eventId", '{"type": "ack", "eventId": null}', "eventId"),
    ("ack string eventId", '{"type": "ack", "eventId": "12"}', "eventId"),
    ("ack float eventId", '{"type": "ack", "eventId": 1.5}', "eventId"),
    ("ack integral float eventId", '{"type": "ack", "eventId": 1e3}', "eventId"),
    ("ack negative eventId", '{"type": "ack", "eventId": -1}', "eventId"),
    ("ack eventId above 2**53", '{"type": "ack", "eventId": 9007199254740993}', "eventId"),
    ("ack huge eventId", '{"type": "ack", "eventId": 18446744073709551616}', "eventId"),
]


@pytest.mark.parametrize(
    ("frame", "needle"),
    [pytest.param(frame, needle, id=name) for name, frame, needle in MALFORMED],
)
def test_malformed_frames(frame: str | bytes, needle: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_client_message(frame)
    assert needle in info.value.message, info.value.message
    assert len(info.value.message) < 300  # never echoes a huge client value back


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 30


def test_error_does_not_echo_long_values() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse({"type": "x" * 10_000})
    assert len(info.value.message) < 300


# ============================================================================== filter/type pairs

EXPECTED_PAIRS = {
    ST.VEHICLES: {FK.ALL, FK.BY_IDS, FK.BY_GROUP, FK.BY_GEOZONE},
    ST.GEO_EVENTS: {FK.ALL, FK.BY_IDS, FK.BY_GROUP, FK.BY_GEOZONE},
    ST.NOTIFICATIONS: {FK.ALL},
    ST.MAINTENANCE: {FK.ALL, FK.BY_IDS, FK.BY_GROUP},
    ST.SYSTEM_ALERTS: {FK.ALL},
}

SAMPLE_FILTERS = {
    FK.ALL: SubscriptionFilter(FK.ALL),
    FK.BY_IDS: SubscriptionFilter(FK.BY_IDS, ids=frozenset({V1, V2})),
    FK.BY_GROUP: SubscriptionFilter(FK.BY_GROUP, target=GROUP),
    FK.BY_GEOZONE: SubscriptionFilter(FK.BY_GEOZONE, target=ZONE),
}


def test_allowed_filters_constant() -> None:
    assert set(ALLOWED_FILTERS) == set(SubscriptionType)
    assert {st: set(kinds) for st, kinds in ALLOWED_FILTERS.items()} == EXPECTED_PAIRS


@pytest.mark.parametrize("kind", list(FilterKind), ids=str)
@pytest.mark.parametrize("st", list(SubscriptionType), ids=str)
@pytest.mark.parametrize("mtype", ["subscribe", "unsubscribe"])
def test_filter_type_pairs(mtype: str, st: SubscriptionType, kind: FilterKind) -> None:
    flt = SAMPLE_FILTERS[kind]
    frame = dumps({"type": mtype, "subscriptionType": st.value, "filter": flt.to_json()})
    if kind in EXPECTED_PAIRS[st]:
        cls = Subscribe if mtype == "subscribe" else Unsubscribe
        assert parse_client_message(frame) == cls(st, flt)
    else:
        with pytest.raises(InvalidMessage) as info:
            parse_client_message(frame)
        assert f"filter {kind.value} does not apply to subscriptionType {st.value}" in (
            info.value.message
        )


# ============================================================================== property-style


def _random_uuid(rng: random.Random) -> str:
    text = str(uuid.UUID(int=rng.getrandbits(128)))
    return text.upper() if rng.random() < 0.2 else text


@pytest.mark.parametrize("seed", range(5))
def test_random_subscriptions_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        st = rng.choice(list(SubscriptionType))
        kind = rng.choice(sorted(ALLOWED_FILTERS[st]))
        if kind is FK.BY_IDS:
            ids = [_random_uuid(rng) for _ in range(rng.randint(1, 20))]
            ids += rng.sample(ids, rng.randint(0, len(ids)))  # duplicates collapse
            flt = SubscriptionFilter(kind, ids=frozenset(i.lower() for i in ids))
            raw_filter: dict[str, Any] = {"type": "byIds", "ids": ids}
        elif kind is FK.ALL:
            flt = SubscriptionFilter(kind)
            raw_filter = flt.to_json()
        else:
            target = _random_uuid(rng)
            flt = SubscriptionFilter(kind, target=target.lower())
            raw_filter = {**flt.to_json()}
            raw_filter["groupId" if kind is FK.BY_GROUP else "geozoneId"] = target
        sub = Subscription(st, flt)
        # Canonical form: to_json() -> parse -> the same Subscription.
        canonical = {"type": "subscribe", **sub.to_json()}
        items = list(canonical.items())
        rng.shuffle(items)  # field order must not matter
        parsed = parse_client_message(dumps(dict(items)))
        assert parsed == Subscribe(st, flt)
        # Client form (mixed case, duplicates) normalizes to the same value.
        client = {"type": "subscribe", "subscriptionType": st.value, "filter": raw_filter}
        assert parse(client) == Subscribe(st, flt)
        assert Subscription(parsed.subscription_type, parsed.filter).to_json() == sub.to_json()


# ============================================================================== time


@pytest.mark.parametrize(
    ("ms", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T0_MS, "2025-01-20T10:00:00.000Z"),
        (T0_MS + 4_123, "2025-01-20T10:00:04.123Z"),
        (T0_MS + 999, "2025-01-20T10:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    ],
)
def test_iso_from_ms(ms: int, iso: str) -> None:
    assert iso_from_ms(ms) == iso
    assert parse_timestamp_ms(iso) == ms


def test_now_ms() -> None:
    before = int(time.time() * 1000)
    value = now_ms()
    assert isinstance(value, int)
    assert before <= value <= int(time.time() * 1000)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2025-01-20T10:00:04Z", T0_MS + 4_000),
        ("2025-01-20T10:00:04.5Z", T0_MS + 4_500),
        ("2025-01-20T10:00:04.123Z", T0_MS + 4_123),
        ("2025-01-20T10:00:04.123999Z", T0_MS + 4_123),  # truncated, not rounded
        ("2025-01-20T10:00:04.123456789Z", T0_MS + 4_123),
        ("2025-01-20T13:00:04+03:00", T0_MS + 4_000),
        ("2025-01-20T05:00:04.250-05:00", T0_MS + 4_250),
        ("2025-01-20T10:00:04+00:00", T0_MS + 4_000),
        ("2025-01-20 10:00:04Z", T0_MS + 4_000),
        (T0_MS, T0_MS),
        (0, 0),
        (float(T0_MS) + 0.9, T0_MS),
        (1_737_367_204_000.0, T0_MS + 4_000),
    ],
)
def test_parse_timestamp_ms_valid(value: object, ms: int) -> None:
    assert parse_timestamp_ms(value) == ms


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        [T0_MS],
        {"ms": T0_MS},
        "",
        "yesterday",
        "1737367204000",
        "2025-01-20T10:00:04",  # no offset: ambiguous
        "2025-01-20",
        "2025-13-20T10:00:04Z",
        "2025-01-20T24:00:00Z",
        "2025-01-20T10:00:04Z" + " " * 100,
        float("nan"),
        float("inf"),
        10**20,
        -(10**20),
    ],
    ids=repr,
)
def test_parse_timestamp_ms_invalid(value: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_timestamp_ms(value)
    assert "timestamp" in info.value.message


def test_parse_timestamp_ms_names_field() -> None:
    with pytest.raises(InvalidMessage, match="savedAt"):
        parse_timestamp_ms("x", field="savedAt")


# ============================================================================== encoders: control


def loads(data: bytes) -> Any:
    assert isinstance(data, bytes)
    return orjson.loads(data)


def test_encode_connected_minimal() -> None:
    assert loads(encode_connected(CONN, server_time_ms=T0_MS)) == {
        "type": "connected",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
        "connectionId": CONN,
        "serverTime": "2025-01-20T10:00:00.000Z",
    }


def test_encode_connected_recovered() -> None:
    frame = encode_connected(
        CONN, server_time_ms=T0_MS, recovered=True, restored_subscriptions=3, last_event_id=17
    )
    assert loads(frame) == {
        "type": "connected",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
        "connectionId": CONN,
        "serverTime": "2025-01-20T10:00:00.000Z",
        "recovered": True,
        "restoredSubscriptions": 3,
        "lastEventId": 17,
    }


def test_encode_connected_not_recovered() -> None:
    frame = encode_connected(
        CONN, server_time_ms=T0_MS, recovered=False, reason="state expired", last_event_id=0
    )
    data = loads(frame)
    assert data["recovered"] is False
    assert data["reason"] == "state expired"
    assert data["lastEventId"] == 0
    assert "restoredSubscriptions" not in data


def test_encode_subscribed() -> None:
    assert loads(encode_subscribed(ST.VEHICLES, 3, ts_ms=T0_MS)) == {
        "type": "subscribed",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
        "subscriptionType": "vehicles",
        "count": 3,
    }
    data = loads(encode_subscribed(ST.GEO_EVENTS, 1, denied=(V2, V3), ts_ms=T0_MS))
    assert data["subscriptionType"] == "geoEvents"
    assert data["denied"] == [V2, V3]
    assert "denied" not in loads(encode_subscribed(ST.VEHICLES, 0, denied=[]))


def test_encode_unsubscribed() -> None:
    assert loads(encode_unsubscribed(ST.MAINTENANCE, 2, ts_ms=T0_MS)) == {
        "type": "unsubscribed",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
        "subscriptionType": "maintenance",
        "count": 2,
    }


def test_encode_pong() -> None:
    assert loads(encode_pong(ts_ms=T0_MS + 30_000)) == {
        "type": "pong",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:30.000Z",
    }


def test_default_timestamp_is_now() -> None:
    before = now_ms()
    data = loads(encode_pong())
    after = now_ms()
    assert ISO_RE.fullmatch(data["timestamp"])
    assert before - 1 <= parse_timestamp_ms(data["timestamp"]) <= after


def test_encode_error() -> None:
    assert loads(
        encode_error("SUBSCRIPTION_DENIED", f"Нет доступа к транспорту {V1}", ts_ms=T0_MS)
    ) == {
        "type": "error",
        "eventId": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
        "code": "SUBSCRIPTION_DENIED",
        "message": f"Нет доступа к транспорту {V1}",
    }
    data = loads(encode_error("RATE_LIMITED", "slow down", retryAfter=0.5, denied=(V1,)))
    assert data["retryAfter"] == 0.5
    assert data["denied"] == [V1]
    assert data["eventId"] == 0


@pytest.mark.parametrize("key", ["type", "eventId", "timestamp"])
def test_encode_error_rejects_reserved_extra(key: str) -> None:
    # (`code` and `message` cannot even be passed twice: Python raises TypeError itself.)
    with pytest.raises(ValueError):
        encode_error("X", "y", **{key: 1})


def test_control_messages_never_move_event_id() -> None:
    frames = [
        encode_connected(CONN, server_time_ms=T0_MS, recovered=True, last_event_id=99),
        encode_subscribed(ST.VEHICLES, 1),
        encode_unsubscribed(ST.VEHICLES, 1),
        encode_pong(),
        encode_error("INVALID_MESSAGE", "bad"),
    ]
    for frame in frames:
        data = loads(frame)
        assert data["eventId"] == 0
        assert ISO_RE.fullmatch(data["timestamp"])


# ============================================================================== encoders: events

FIX = GpsFix(
    vehicle_id=V1,
    lat=55.7558,
    lon=37.6173,
    speed=45.5,
    course=180,
    timestamp_ms=T0_MS + 4_000,
    altitude=150,
    satellites=12,
)
SEED_POSITION = {
    "lat": 55.7558,
    "lon": 37.6173,
    "speed": 45.5,
    "course": 180,
    "altitude": 150,
    "satellites": 12,
    "timestamp": "2025-01-20T10:00:04.000Z",
}


def test_position_dict() -> None:
    pos = position_dict(FIX)
    assert pos == SEED_POSITION
    assert list(pos) == list(SEED_POSITION)  # seed field order


def test_position_dict_omits_missing_optionals() -> None:
    fix = GpsFix(V1, lat=-33.5, lon=151.25, speed=0.0, course=0, timestamp_ms=T0_MS)
    assert position_dict(fix) == {
        "lat": -33.5,
        "lon": 151.25,
        "speed": 0.0,
        "course": 0,
        "timestamp": "2025-01-20T10:00:00.000Z",
    }


def test_encode_position_seed_example() -> None:
    pos = dumps(position_dict(FIX))
    frame = encode_position(100, V1, pos, ts_ms=T0_MS + 5_000)
    expected = {
        "type": "position",
        "eventId": 100,
        "timestamp": "2025-01-20T10:00:05.000Z",
        "vehicleId": V1,
        "position": SEED_POSITION,
    }
    assert loads(frame) == expected
    assert frame == dumps(expected)  # splicing yields the same bytes as encoding the dict


def test_encode_position_default_timestamp() -> None:
    data = loads(encode_position(1, V1, dumps(position_dict(FIX))))
    assert ISO_RE.fullmatch(data["timestamp"])
    assert data["eventId"] == 1


def test_encode_batch_fragment() -> None:
    pos = dumps(position_dict(FIX))
    sensors = Sensors(fuel=45.5, ignition=True)
    frag = encode_batch_fragment(V1, "А123BC", pos, VehicleStatus.MOVING, sensors)
    expected = {
        "vehicleId": V1,
        "vehicleName": "А123BC",
        "position": SEED_POSITION,
        "status": "moving",
        "sensors": {"fuel": 45.5, "ignition": True},
    }
    assert loads(frag) == expected
    assert frag == dumps(expected)
    plain = loads(encode_batch_fragment(V2, "В456DE", pos, "stopped", None))
    assert plain == {
        "vehicleId": V2,
        "vehicleName": "В456DE",
        "position": SEED_POSITION,
        "status": "stopped",
    }


def test_batch_fragment_escapes_names() -> None:
    name = 'Truck "7" \\ line\nbreak \u2028 🚚'
    frag = encode_batch_fragment(V1, name, b"{}", "parking", None)
    assert loads(frag)["vehicleName"] == name


def test_encode_position_batch_seed_example() -> None:
    pos = dumps(position_dict(FIX))
    frags = [
        encode_batch_fragment(V1, "А123BC", pos, "moving", Sensors(fuel=45.5, ignition=True)),
        encode_batch_fragment(V2, "В456DE", pos, "stopped", None),
    ]
    frame = encode_position_batch(200, frags, ts_ms=T0_MS + 10_000)
    expected = {
        "type": "positionBatch",
        "eventId": 200,
        "timestamp": "2025-01-20T10:00:10.000Z",
        "positions": [
            {
                "vehicleId": V1,
                "vehicleName": "А123BC",
                "position": SEED_POSITION,
                "status": "moving",
                "sensors": {"fuel": 45.5, "ignition": True},
            },
            {
                "vehicleId": V2,
                "vehicleName": "В456DE",
                "position": SEED_POSITION,
                "status": "stopped",
            },
        ],
    }
    assert loads(frame) == expected
    assert frame == dumps(expected)


def test_encode_position_batch_edge_sizes() -> None:
    assert loads(encode_position_batch(5, [], ts_ms=T0_MS))["positions"] == []
    pos = dumps(position_dict(FIX))
    one = encode_batch_fragment(V3, "X", pos, "offline", Sensors())
    assert loads(encode_position_batch(6, [one], ts_ms=T0_MS))["positions"] == [loads(one)]


def test_encode_geo_event_seed_example() -> None:
    event = {
        "vehicleId": V1,
        "vehicleName": "А123BC",
        "geozoneId": ZONE,
        "geozoneName": "Офис",
        "eventType": "entered",
        "position": SEED_POSITION,
        "timestamp": "2025-01-20T10:00:14.000Z",
    }
    assert loads(encode_geo_event(300, event, ts_ms=T0_MS + 15_000)) == {
        "type": "geoEvent",
        "eventId": 300,
        "timestamp": "2025-01-20T10:00:15.000Z",
        "event": event,
    }


def test_encode_notification_seed_example() -> None:
    notification = {
        "id": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "title": "Превышение скорости",
        "body": "Транспорт А123BC превысил скорость: 95 км/ч",
        "category": "speed",
        "priority": "high",
        "data": {"vehicleId": V1, "speed": "95"},
    }
    frame = encode_notification(400, notification, ts_ms=T0_MS + 20_000)
    assert loads(frame) == {
        "type": "notification",
        "eventId": 400,
        "timestamp": "2025-01-20T10:00:20.000Z",
        "notification": notification,
    }
    assert "Превышение".encode() in frame  # raw UTF-8, not \u escapes


def test_encode_system_alert_seed_example() -> None:
    frame = encode_system_alert(
        500, "warning", "Плановое обслуживание через 30 минут", ts_ms=T0_MS + 25_000
    )
    assert loads(frame) == {
        "type": "systemAlert",
        "eventId": 500,
        "timestamp": "2025-01-20T10:00:25.000Z",
        "level": "warning",
        "message": "Плановое обслуживание через 30 минут",
    }


def test_event_frames_field_order() -> None:
    # type, eventId, timestamp first: cheap to eyeball in logs and in the browser devtools.
    pos = dumps(position_dict(FIX))
    frames = [
        encode_position(1, V1, pos, ts_ms=T0_MS),
        encode_position_batch(2, [], ts_ms=T0_MS),
        encode_geo_event(3, {}, ts_ms=T0_MS),
        encode_notification(4, {}, ts_ms=T0_MS),
        encode_system_alert(5, "info", "m", ts_ms=T0_MS),
        encode_pong(ts_ms=T0_MS),
    ]
    for frame in frames:
        assert list(loads(frame))[:3] == ["type", "eventId", "timestamp"]
