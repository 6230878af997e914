"""Hostile and malformed client input (ARCHITECTURE §5): every bad frame gets an `error` with a
code and the connection lives, except abuse (close 1008) and oversize frames (close 1009).
In-process (was tests/integration/test_bad_input.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Msg, WsClient
from tests.support.fleet import Company
from tests.support.inproc import Instance

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def uid() -> str:
    return str(uuid.uuid4())


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _sub(stype: Any = "vehicles", flt: Any = None, **extra: Any) -> str:
    msg: dict[str, Any] = {"type": "subscribe", "subscriptionType": stype, **extra}
    if flt is not None:
        msg["filter"] = flt
    return _j(msg)


# (case id, raw text frame, substrings the error message must contain)
MALFORMED: list[tuple[str, str, tuple[str, ...]]] = [
    ("not-json", "hello, server", ("not valid JSON",)),
    ("empty-frame", "", ("not valid JSON",)),
    ("truncated-json", '{"type": "ping"', ("not valid JSON",)),
    ("nan-literal", '{"type": "ack", "eventId": NaN}', ("not valid JSON",)),
    ("json-array", '[{"type": "ping"}]', ("JSON object", "array")),
    ("json-number", "42", ("JSON object", "number")),
    ("json-null", "null", ("JSON object", "null")),
    ("json-string", '"ping"', ("JSON object", "string")),
    ("empty-object", "{}", ("'type'", "required")),
    ("type-not-string", _j({"type": 7}), ("'type'", "number")),
    ("unknown-type", _j({"type": "hello"}), ("'type'", "'hello'")),
    ("type-wrong-case", _j({"type": "PING"}), ("'type'", "'PING'")),
    ("unknown-top-level-field", _j({"type": "ping", "foo": 1}), ("unknown field", "'foo'")),
    (
        "subscribe-without-subscriptionType",
        _j({"type": "subscribe", "filter": {"type": "all"}}),
        ("'subscriptionType'", "required"),
    ),
    ("unknown-subscriptionType", _sub("cars", {"type": "all"}), ("'subscriptionType'", "'cars'")),
    ("subscriptionType-not-string", _sub(3, {"type": "all"}), ("'subscriptionType'", "number")),
    ("filter-missing", _sub("vehicles"), ("'filter'", "required")),
    (
        "filter-null",
        _j({"type": "subscribe", "subscriptionType": "vehicles", "filter": None}),
        ("'filter'", "required"),
    ),
    ("filter-not-object", _sub("vehicles", "all"), ("'filter'", "object", "string")),
    ("filter-without-type", _sub("vehicles", {"ids": [uid()]}), ("'filter.type'", "required")),
    ("unknown-filter-type", _sub("vehicles", {"type": "byColor"}), ("'filter.type'", "byColor")),
    (
        "unknown-filter-field",
        _sub("vehicles", {"type": "all", "ids": [uid()]}),
        ("unknown field", "'ids'", "filter"),
    ),
    ("byIds-missing-ids", _sub("vehicles", {"type": "byIds"}), ("'filter.ids'", "required")),
    ("byIds-empty", _sub("vehicles", {"type": "byIds", "ids": []}), ("filter.ids", "empty")),
    (
        "byIds-not-list",
        _sub("vehicles", {"type": "byIds", "ids": uid()}),
        ("filter.ids", "array", "string"),
    ),
    (
        "byIds-non-uuid",
        _sub("vehicles", {"type": "byIds", "ids": [uid(), "not-a-uuid"]}),
        ("filter.ids[1]", "UUID", "not-a-uuid"),
    ),
    (
        "byIds-number",
        _sub("vehicles", {"type": "byIds", "ids": [17]}),
        ("filter.ids[0]", "UUID", "number"),
    ),
    (
        "byIds-braced-uuid",
        _sub("vehicles", {"type": "byIds", "ids": ["{" + uid() + "}"]}),
        ("filter.ids[0]", "UUID"),
    ),
    (
        "byIds-1001-ids",
        _sub("vehicles", {"type": "byIds", "ids": [uid() for _ in range(1001)]}),
        ("1001", "1000"),
    ),
    ("byGroup-without-groupId", _sub("vehicles", {"type": "byGroup"}), ("'filter.groupId'",)),
    (
        "byGroup-non-uuid",
        _sub("geoEvents", {"type": "byGroup", "groupId": "group-1"}),
        ("filter.groupId", "UUID"),
    ),
    (
        "byGeozone-for-notifications",
        _sub("notifications", {"type": "byGeozone", "geozoneId": uid()}),
        ("byGeozone", "notifications"),
    ),
    (
        "byIds-for-systemAlerts",
        _sub("systemAlerts", {"type": "byIds", "ids": [uid()]}),
        ("byIds", "systemAlerts"),
    ),
    (
        "unsubscribe-unknown-subscriptionType",
        _j({"type": "unsubscribe", "subscriptionType": "everything"}),
        ("'subscriptionType'", "'everything'"),
    ),
    ("ack-missing-eventId", _j({"type": "ack"}), ("'eventId'", "required")),
    ("ack-bool", _j({"type": "ack", "eventId": True}), ("'eventId'", "integer", "boolean")),
    ("ack-negative", _j({"type": "ack", "eventId": -5}), ("'eventId'", "-5")),
    ("ack-string", _j({"type": "ack", "eventId": "12"}), ("'eventId'", "integer", "string")),
    ("ack-float", _j({"type": "ack", "eventId": 1.5}), ("'eventId'", "integer")),
    ("ack-above-2**53", _j({"type": "ack", "eventId": 2**53 + 1}), ("'eventId'", "2**53")),
    (
        "getState-vehicleIds-not-list",
        _j({"type": "getState", "vehicleIds": uid()}),
        ("vehicleIds", "array"),
    ),
    (
        "getState-vehicleIds-object",
        _j({"type": "getState", "vehicleIds": {"id": uid()}}),
        ("vehicleIds", "array", "object"),
    ),
    (
        "getState-non-uuid",
        _j({"type": "getState", "vehicleIds": ["x"]}),
        ("vehicleIds[0]", "UUID"),
    ),
    (
        "getState-1001-ids",
        _j({"type": "getState", "vehicleIds": [uid() for _ in range(1001)]}),
        ("1001", "1000"),
    ),
    ("huge-type-string", _j({"type": "x" * 50_000}), ("'type'", "...")),
    (
        "huge-subscriptionType-string",
        _sub("v" * 50_000, {"type": "all"}),
        ("'subscriptionType'", "..."),
    ),
    (
        "huge-non-uuid-id",
        _sub("vehicles", {"type": "byIds", "ids": ["z" * 50_000]}),
        ("filter.ids[0]", "UUID", "..."),
    ),
    (
        "nested-500-deep",
        '{"type": "ping", "deep": ' + "[" * 500 + "]" * 500 + "}",
        ("unknown field", "'deep'"),
    ),
    ("nested-20000-deep", "[" * 20_000 + "]" * 20_000, ("not valid JSON",)),
]


async def _connect(inst: Instance) -> WsClient:
    return await inst.connect(Company().token())


async def _ping_pong(client: WsClient) -> None:
    await client.send({"type": "ping"})
    pong = await client.wait_for(lambda m: m.get("type") in ("pong", "error"), 5, "pong")
    assert pong["type"] == "pong", pong
    assert pong["eventId"] == 0


def _is_reply(m: Msg) -> bool:
    return m.get("type") in ("error", "subscribed", "unsubscribed", "positionBatch", "pong")


@pytest.mark.parametrize(
    ("frame", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
async def test_malformed_frame_gets_invalid_message_and_connection_lives(
    inst: Instance, frame: str, expected: tuple[str, ...]
) -> None:
    assert len(frame.encode()) < 64 * 1024  # below the frame limit: a schema error, not 1009
    client = await _connect(inst)
    try:
        await client.send(frame)
        reply = await client.wait_for(_is_reply, 5, "reply to the malformed frame")
        assert reply["type"] == "error", reply
        assert reply["code"] == "INVALID_MESSAGE", reply
        assert reply["eventId"] == 0
        message = reply["message"]
        for part in expected:
            assert part in message, f"{part!r} not in {message!r}"
        # Error messages never echo megabytes of client input back.
        assert len(message) < 500, len(message)
        await _ping_pong(client)
        # Exactly one error for the one bad frame.
        assert [m["type"] for m in client.received] == ["connected", "error", "pong"]
    finally:
        await client.close()


async def test_binary_frame_gets_unsupported_frame_and_connection_lives(inst: Instance) -> None:
    client = await _connect(inst)
    try:
        await client.send(b'{"type": "ping"}')
        reply = await client.wait_for(_is_reply, 5, "reply to the binary frame")
        assert reply["type"] == "error", reply
        assert reply["code"] == "UNSUPPORTED_FRAME", reply
        assert "binary" in reply["message"]
        await _ping_pong(client)
    finally:
        await client.close()


async def test_oversize_frame_closes_with_1009(inst: Instance) -> None:
    client = await _connect(inst)
    try:
        big = _j({"type": "ping", "pad": "x" * (100 * 1024)})
        assert len(big) > 100 * 1024
        await client.send(big)
        assert await client.wait_closed(10) == CLOSE_TOO_BIG
        assert not any(m.get("type") == "pong" for m in client.received)
    finally:
        await client.close()


async def _burst(client: WsClient, n: int) -> list[Msg]:
    """Send `n` pings back-to-back and collect the `n` replies (pong or error)."""
    for _ in range(n):
        await client.send({"type": "ping"})
    return [
        await client.wait_for(lambda m: m.get("type") in ("pong", "error"), 10, f"reply {i}")
        for i in range(n)
    ]


async def test_rate_limit_answers_rate_limited_with_retry_after(inst: Instance) -> None:
    client = await _connect(inst)
    try:
        replies = await _burst(client, 40)
        pongs = [m for m in replies if m["type"] == "pong"]
        limited = [m for m in replies if m["type"] == "error"]
        assert limited, "40 back-to-back pings with burst 20 must be rate limited"
        assert all(m["code"] == "RATE_LIMITED" for m in limited), limited
        # Burst 20 plus whatever refilled (10/s) while the frames were arriving.
        assert 20 <= len(pongs) < 40, len(pongs)
        for m in limited:
            assert isinstance(m["retryAfter"], int | float)
            assert 0 < m["retryAfter"] <= 0.1 + 1e-6, m  # one token at 10/s
            assert m["eventId"] == 0
        # A rate limit is not abuse: after waiting as told, the connection answers again.
        await asyncio.sleep(limited[-1]["retryAfter"])
        await _ping_pong(client)
        assert client.closed_code is None
    finally:
        await client.close()


async def test_abusive_burst_closes_with_1008(inst: Instance) -> None:
    client = await _connect(inst)
    try:
        sent = 0
        frame = _j({"type": "ping"})
        for _ in range(400):
            try:
                await client.ws.send_str(frame)
            except ConnectionError:  # the server closed on us mid-burst
                break
            sent += 1
        assert await client.wait_closed(10) == CLOSE_POLICY
        errors = [m for m in client.received if m.get("type") == "error"]
        assert errors and all(m["code"] == "RATE_LIMITED" for m in errors)
        # Closed after about 20 accepted + 50 rejected frames, not after the whole burst.
        assert len(client.received) < 200, (sent, len(client.received))
    finally:
        await client.close()


async def _error_counts(inst: Instance) -> dict[str, float]:
    resp = await inst.http.get("/metrics")
    text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ws_errors_total":
                code = sample.labels["error_type"]
                out[code] = out.get(code, 0.0) + sample.value
    return out


async def test_metrics_count_invalid_and_rate_limited_errors(inst: Instance) -> None:
    before = await _error_counts(inst)
    client = await _connect(inst)
    try:
        await client.send("{not json")
        err = await client.next_of("error", 5)
        assert err["code"] == "INVALID_MESSAGE"
        replies = await _burst(client, 30)
        n_limited = sum(1 for m in replies if m["type"] == "error")
        assert n_limited > 0
    finally:
        await client.close()
    after = await _error_counts(inst)
    assert after.get("INVALID_MESSAGE", 0) >= before.get("INVALID_MESSAGE", 0) + 1, after
    assert after.get("RATE_LIMITED", 0) >= before.get("RATE_LIMITED", 0) + n_limited, after


async def test_unknown_message_keeps_subscriptions_working(inst: Instance) -> None:
    """A bad frame in the middle of a session changes nothing: a valid subscribe still works."""
    client = await _connect(inst)
    try:
        await client.send(_sub("vehicles", {"type": "byIds", "ids": []}))
        assert (await client.next_of("error", 5))["code"] == "INVALID_MESSAGE"
        sub = await client.subscribe("systemAlerts", {"type": "all"})
        assert sub["type"] == "subscribed", sub
        assert sub["subscriptionType"] == "systemAlerts"
    finally:
        await client.close()
