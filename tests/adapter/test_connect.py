"""Authentication at the upgrade and while connected (was tests/integration/test_auth.py)."""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.fleet import Company, new_id
from tests.support.inproc import Instance
from tracker_ws.auth import LEEWAY_S, mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws.domain.close import CloseCode

OTHER_SECRET = "not-the-secret-of-this-service-0123456789abcdef"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none_token(company: Company) -> str:
    header = _b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    now = int(time.time())
    claims = {"sub": new_id(), "companyId": company.company_id, "iat": now, "exp": now + 3600}
    return f"{header}.{_b64url(orjson.dumps(claims))}."


def _by_query(token: str) -> dict[str, Any]:
    return {"token": token}


def _by_authorization(token: str) -> dict[str, Any]:
    return {"token": None, "headers": {"Authorization": f"Bearer {token}"}}


def _by_protocol_pair(token: str) -> dict[str, Any]:
    return {"token": None, "protocols": ("bearer", token)}


def _by_protocol_entry(token: str) -> dict[str, Any]:
    return {"token": None, "protocols": (f"bearer.{token}",)}


@pytest.mark.parametrize(
    ("how", "echoed"),
    [
        (_by_query, None),
        (_by_authorization, None),
        (_by_protocol_pair, "bearer"),
        (_by_protocol_entry, "bearer.{token}"),
    ],
    ids=["query", "authorization-bearer", "subprotocol-pair", "subprotocol-entry"],
)
async def test_valid_token_is_accepted(
    inst: Instance, how: Callable[[str], dict[str, Any]], echoed: str | None
) -> None:
    company = inst.company(2)
    token = company.token()
    client = await inst.connect(**how(token))
    hello = client.received[0]
    assert hello["type"] == "connected"
    assert hello["eventId"] == 0
    assert re.fullmatch(r"[0-9a-f-]{36}", hello["connectionId"])
    assert hello["connectionId"] in inst.rt.hub.sessions
    assert inst.metric("ws_connections_total", status="opened") == 1
    if echoed is None:
        assert client.ws.protocol is None
    else:
        assert client.ws.protocol == echoed.format(token=token)
    # Authenticated as a user of this very company: `all` covers its two vehicles.
    sub = await client.subscribe("vehicles", {"type": "all"})
    assert sub["type"] == "subscribed", sub
    assert sub["count"] == 2


async def test_offered_bearer_subprotocol_is_echoed_when_query_also_has_the_token(
    inst: Instance,
) -> None:
    token = Company().token()
    client = await inst.connect(token, protocols=("bearer", token))
    assert client.ws.protocol == "bearer"


def _expired(c: Company) -> dict[str, Any]:
    return {"token": c.token(ttl_s=-120)}


def _forged(c: Company) -> dict[str, Any]:
    return {"token": mint_token(new_id(), c.company_id, secret=OTHER_SECRET)}


def _forged_in_header(c: Company) -> dict[str, Any]:
    forged = mint_token(new_id(), c.company_id, secret=OTHER_SECRET)
    return {"headers": {"Authorization": f"Bearer {forged}"}}


def _forged_in_protocol(c: Company) -> dict[str, Any]:
    return {"protocols": ("bearer", mint_token(new_id(), c.company_id, secret=OTHER_SECRET))}


def _alg_none(c: Company) -> dict[str, Any]:
    return {"token": _alg_none_token(c)}


def _missing(c: Company) -> dict[str, Any]:
    return {}


def _non_uuid_sub(c: Company) -> dict[str, Any]:
    return {"token": mint_token("user-42", c.company_id, secret=DEV_JWT_SECRET)}


def _garbage(c: Company) -> dict[str, Any]:
    return {"token": "not-a-jwt"}


@pytest.mark.parametrize(
    ("attempt", "code"),
    [
        (_expired, "TOKEN_EXPIRED"),
        (_forged, "UNAUTHORIZED"),
        (_forged_in_header, "UNAUTHORIZED"),
        (_forged_in_protocol, "UNAUTHORIZED"),
        (_alg_none, "UNAUTHORIZED"),
        (_missing, "UNAUTHORIZED"),
        (_non_uuid_sub, "UNAUTHORIZED"),
        (_garbage, "UNAUTHORIZED"),
    ],
    ids=[
        "expired",
        "forged-signature",
        "forged-authorization-header",
        "forged-subprotocol",
        "alg-none",
        "missing",
        "non-uuid-sub",
        "garbage",
    ],
)
async def test_bad_token_is_refused_at_upgrade_and_registers_nothing(
    inst: Instance, attempt: Callable[[Company], dict[str, Any]], code: str
) -> None:
    kw = attempt(Company())
    token: str | None = kw.pop("token", None)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await inst.connect(token, **kw)
    assert info.value.status == 401, info.value
    # The same upgrade request as plain HTTP, to read the body of the refusal.
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        **kw.get("headers", {}),
    }
    if "protocols" in kw:
        headers["Sec-WebSocket-Protocol"] = ", ".join(kw["protocols"])
    resp = await inst.http.get("/ws", params={"token": token} if token else {}, headers=headers)
    assert resp.status == 401
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert not inst.rt.hub.sessions
    assert inst.metric("ws_connections_total", status="opened") == 0
    # Both the WebSocket attempt and the plain request were counted as rejected.
    assert inst.metric("ws_connections_total", status="rejected") == 2


async def test_token_expiring_while_connected_closes_with_4002(inst: Instance) -> None:
    # The verifier allows LEEWAY_S of clock skew past `exp` (whole seconds): choose the
    # earliest `exp` still valid now, so the expiry fires within about a second.
    now = time.time()
    exp = math.floor(now - LEEWAY_S + 0.1) + 1
    token = Company().token(now=exp, ttl_s=0)
    client = await inst.connect(token)
    pong = await client.request({"type": "ping"}, "pong")
    assert pong["eventId"] == 0
    assert await client.wait_closed(timeout=5) == CloseCode.TOKEN_EXPIRED
    # Not before the token (with the leeway) actually expired.
    assert time.time() >= exp + LEEWAY_S - 0.05
