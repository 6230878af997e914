"""Inbound abuse and bad input (issue 10): the subscription cap, every frame type against the
rate limit, `lastEventId` and token claims checked before the upgrade, admin field types, and
the frame size limit itself allowed. In-process (was in tests/integration/)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.support.bad_input import BAD_LAST_EVENT_IDS
from tests.support.client import Msg, WsClient, upgrade_response
from tests.support.fleet import Company, new_id
from tests.support.inproc import Instance, running, settings
from tracker_ws.config import DEV_JWT_SECRET

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
MAX_FRAME = 64 * 1024  # TRACKER_WS_MAX_FRAME_BYTES default
CAP = 10  # TRACKER_WS_MAX_SUBSCRIPTIONS of capped_inst


@pytest.fixture
async def capped_inst() -> AsyncIterator[Instance]:
    """An instance with a cap of CAP subscriptions per connection."""
    async with running(settings(max_subscriptions=CAP)) as instance:
        yield instance


def _zone(zid: str) -> Msg:
    return {"type": "byGeozone", "geozoneId": zid}


def _is_reply(m: Msg) -> bool:
    return m.get("type") in ("subscribed", "error", "pong")


# ------------------------------------------------------------------ 7. subscriptions per connection


async def test_subscriptions_past_the_cap_are_refused_with_subscription_limit(
    capped_inst: Instance,
) -> None:
    client = await capped_inst.connect(Company().token())
    try:
        zones = [new_id() for _ in range(CAP)]
        for z in zones:  # unknown geozones: accepted, and each counts
            assert (await client.subscribe("vehicles", _zone(z)))["type"] == "subscribed"
        refused = await client.subscribe("geoEvents", _zone(new_id()))
        assert refused["type"] == "error", refused
        assert refused["code"] == "SUBSCRIPTION_LIMIT", refused
        assert refused["limit"] == CAP and str(CAP) in refused["message"], refused
        assert refused["subscriptionType"] == "geoEvents"
        # Nothing of the refused one was added; the same subscription again adds nothing.
        again = await client.subscribe("vehicles", _zone(zones[0]))
        assert again["type"] == "subscribed", again
        await client.send(
            {"type": "unsubscribe", "subscriptionType": "vehicles", "filter": _zone(zones[1])}
        )
        assert (await client.next_of("unsubscribed"))["count"] == 1
        assert (await client.subscribe("notifications", {"type": "all"}))["type"] == "subscribed"
        assert client.closed_code is None
    finally:
        await client.close()


async def test_restored_subscriptions_respect_the_cap(
    capped_inst: Instance,
) -> None:
    """A saved state with more than the cap (saved under a higher cap, or by an older
    version) restores at most CAP keys; the rest is reported in SUBSCRIPTION_REVOKED."""
    company, user = Company(), new_id()
    zones = sorted(new_id() for _ in range(CAP + 5))
    state = {
        "subscriptions": [{"subscriptionType": "vehicles", "filter": _zone(z)} for z in zones],
        "lastEventId": 1,
        "ackedEventId": 0,
        "savedAt": "2026-01-01T00:00:00.000Z",
        "companyId": company.company_id,
    }
    await capped_inst.rt.bus.store.save_state(user, orjson.dumps(state), 300)
    client = await capped_inst.connect(company.token(user), query="lastEventId=1")
    try:
        revoked = await client.wait_for(lambda m: m.get("code") == "SUBSCRIPTION_REVOKED")
        assert sorted(revoked["revoked"]) == zones[CAP:], revoked
        [conn] = (await capped_inst.admin_get(f"/api/v1/ws/users/{user}/connections"))[
            "connections"
        ]
        restored = sorted(f["filter"]["geozoneId"] for f in conn["subscriptionFilters"])
        assert restored == zones[:CAP], conn
        refused = await client.subscribe("systemAlerts", {"type": "all"})
        assert refused.get("code") == "SUBSCRIPTION_LIMIT", refused
    finally:
        await client.close()


# ------------------------------------------------------------------ 8. every frame is rate limited


async def _flood(client: WsClient, send: Any, n: int) -> int:
    sent = 0
    for _ in range(n):
        try:
            await send()
        except (ConnectionError, RuntimeError):  # the server closed on us mid-burst
            break
        sent += 1
    return sent


@pytest.mark.parametrize("kind", ["binary", "ping"])
async def test_a_burst_of_binary_frames_or_pings_closes_with_1008(
    inst: Instance, kind: str
) -> None:
    client = await inst.connect(Company().token())
    try:
        send = (
            (lambda: client.ws.send_bytes(b'{"type": "ping"}'))
            if kind == "binary"
            else (lambda: client.ws.ping(b"x"))
        )
        sent = await _flood(client, send, 2000)
        assert await client.wait_closed(20) == CLOSE_POLICY, (sent, client.received[-3:])
        errors = [m["code"] for m in client.received if m.get("type") == "error"]
        # About 20 (the burst) answered, about 50 refused, then closed: not 2,000 replies.
        assert "RATE_LIMITED" in errors and len(client.received) < 200, (sent, len(errors))
    finally:
        await client.close()


async def test_sustained_binary_frames_close_with_1008(inst: Instance) -> None:
    """The issue's run: 50 binary frames a second (5x the limit) until closed, at most 20 s."""
    client = await inst.connect(Company().token())
    reader = asyncio.create_task(client.wait_closed(25))
    sent = 0
    try:
        deadline = time.monotonic() + 20
        while not reader.done() and time.monotonic() < deadline:
            try:
                await client.ws.send_bytes(b"\x00\x01")
            except (ConnectionError, RuntimeError):
                break
            sent += 1
            await asyncio.sleep(0.02)  # the pace of the load, not a wait for a condition
        assert await reader == CLOSE_POLICY, sent
        assert sent < 500, sent  # closed within seconds, not after 20 s of replies
    finally:
        reader.cancel()
        await client.close()


async def test_binary_frames_use_up_the_tokens_text_needs(inst: Instance) -> None:
    client = await inst.connect(Company().token())
    try:
        for _ in range(25):  # more than the burst of 20
            await client.send(b"\xff")
        await client.send({"type": "ping"})
        replies = [await client.wait_for(_is_reply, 10) for _ in range(26)]
        codes = [m.get("code", m["type"]) for m in replies]
        assert "RATE_LIMITED" in codes, codes
        assert codes.count("UNSUPPORTED_FRAME") < 25, codes
    finally:
        await client.close()


# ------------------------------------------------------------------ 10. lastEventId


# An empty value means "no lastEventId" (a fresh connection), not a bad one.
BAD_VALUES = [v for v in BAD_LAST_EVENT_IDS if v]


@pytest.mark.parametrize("raw", BAD_VALUES, ids=[v[:24] for v in BAD_VALUES])
async def test_bad_last_event_id_is_refused_with_400_before_the_upgrade(
    inst: Instance, raw: str
) -> None:
    target = f"/ws?token={Company().token()}&lastEventId={quote(raw, safe='')}"
    status, body = await upgrade_response(inst.url, target)
    assert status == 400, (status, body)
    assert body is not None and body["code"] == "INVALID_MESSAGE", body
    assert "lastEventId" in body["message"] and len(body["message"]) < 200, body


@pytest.mark.parametrize("raw", ["0", "00042", str(2**63 - 1)])
async def test_largest_last_event_id_is_accepted(inst: Instance, raw: str) -> None:
    client = await inst.connect(Company().token(), query=f"lastEventId={raw}")
    try:
        await client.send({"type": "ping"})
        assert (await client.wait_for(_is_reply, 10))["type"] == "pong"
    finally:
        await client.close()


# ------------------------------------------------------------------ 11. tokens and admin fields


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_HS256_HEADER = _b64url(b'{"alg":"HS256","typ":"JWT"}')


def _signed(claims_json: str, secret: str = DEV_JWT_SECRET) -> str:
    """An HS256 token over a hand-written JSON payload (numbers no JSON encoder writes)."""
    signing = f"{_HS256_HEADER}.{_b64url(claims_json.encode())}"
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64url(sig)}"


HUGE = ["1e400", "-1e400", "1" + "0" * 400]


def _huge_claim_tokens(roles: list[str]) -> list[tuple[str, str]]:
    out = []
    for claim in ("exp", "nbf", "iat"):
        for value in HUGE:
            times = {"exp": str(int(time.time()) + 3600), claim: value}
            body = (
                f'{{"sub":"{new_id()}","companyId":"{new_id()}","roles":{orjson.dumps(roles).decode()},'
                + ",".join(f'"{k}":{v}' for k, v in times.items())
                + "}"
            )
            out.append((f"{claim}={value[:6]}", _signed(body)))
    return out


TRANSPORTS = ["query", "authorization", "subprotocol-pair", "subprotocol-entry"]


def _request_target(how: str, token: str) -> tuple[str, dict[str, str]]:
    if how == "query":
        return f"/ws?token={token}", {}
    if how == "authorization":
        return "/ws", {"Authorization": f"Bearer {token}"}
    if how == "subprotocol-pair":
        return "/ws", {"Sec-WebSocket-Protocol": f"bearer, {token}"}
    return "/ws", {"Sec-WebSocket-Protocol": f"bearer.{token}"}


@pytest.mark.parametrize("how", TRANSPORTS)
async def test_time_claims_beyond_any_float_get_401_on_every_transport(
    inst: Instance, how: str
) -> None:
    for name, token in _huge_claim_tokens([]):
        target, headers = _request_target(how, token)
        status, body = await upgrade_response(inst.url, target, headers)
        assert status == 401, (name, status, body)
        assert body is not None and body["code"] == "UNAUTHORIZED", (name, body)
        assert name.split("=")[0] in body["message"], (name, body)


async def test_time_claims_beyond_any_float_get_401_from_the_admin_api(inst: Instance) -> None:
    for name, token in _huge_claim_tokens(["admin"]):
        status, body = await inst.request("GET", "/api/v1/ws/stats", token=token)
        assert status == 401, (name, status, body)
        assert body["code"] == "UNAUTHORIZED", (name, body)


BAD_BROADCAST_TYPES: list[dict[str, Any]] = [
    {"message": "hi", "level": ["info"]},
    {"message": "hi", "level": {"info": 1}},
    {"message": "hi", "level": None},
    {"message": "hi", "level": True},
    {"message": ["hi"]},
    {"message": {"text": "hi"}},
    {"message": "hi", "targetCompanyIds": [[new_id()]]},
    {"message": "hi", "targetCompanyIds": [{"id": new_id()}]},
    {"message": "hi", "targetCompanyIds": [None]},
    {"message": "hi", "targetCompanyIds": new_id()},
    {"message": "hi", "targetCompanyIds": 7},
]


@pytest.mark.parametrize(
    "body", BAD_BROADCAST_TYPES, ids=[orjson.dumps(b).decode()[:40] for b in BAD_BROADCAST_TYPES]
)
async def test_broadcast_field_of_the_wrong_type_gets_400(
    inst: Instance, body: dict[str, Any]
) -> None:
    try:
        status, reply = await inst.request(
            "POST", "/api/v1/ws/broadcast", token=inst.admin_token(), body=body
        )
    except ValueError as exc:  # a non-JSON body: the 500 page
        pytest.fail(f"not a JSON answer: {exc}")
    assert status == 400, (status, reply)
    assert reply["code"] == "INVALID_MESSAGE", reply


# ------------------------------------------------------------------ 12. the frame size limit


def _ping_of(size: int) -> str:
    """A valid ping of exactly `size` bytes (JSON allows trailing whitespace)."""
    frame = '{"type":"ping"}'
    return frame + " " * (size - len(frame))


async def test_a_frame_of_exactly_the_limit_is_accepted(inst: Instance) -> None:
    client = await inst.connect(Company().token())
    try:
        frame = _ping_of(MAX_FRAME)
        assert len(frame.encode()) == MAX_FRAME
        await client.send(frame)
        assert (await client.wait_for(_is_reply, 10))["type"] == "pong"
        await client.send(frame.encode())  # binary of the same size: refused, not 1009
        assert (await client.wait_for(_is_reply, 10)).get("code") == "UNSUPPORTED_FRAME"
        assert client.closed_code is None
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_a_frame_one_byte_over_the_limit_closes_with_1009(inst: Instance, kind: str) -> None:
    client = await inst.connect(Company().token())
    try:
        frame = _ping_of(MAX_FRAME + 1)
        await client.send(frame if kind == "text" else frame.encode())
        assert await client.wait_closed(10) == CLOSE_TOO_BIG
        assert not any(m.get("type") == "pong" for m in client.received)
    finally:
        await client.close()
