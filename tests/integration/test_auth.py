"""JWT authentication at the WebSocket upgrade and while connected (ARCHITECTURE §5, §6)."""

from __future__ import annotations

import base64
import os
import re
import time
import urllib.request
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from tests.support.checks import registered_company
from tests.support.client import WsClient
from tests.support.fleet import Company, FleetDriver, new_id
from tracker_ws.auth import mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws_dev.stack import Worker

OTHER_SECRET = "not-the-secret-of-this-service-0123456789abcdef"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none_token(company: Company) -> str:
    header = _b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    now = int(time.time())
    claims = {"sub": new_id(), "companyId": company.company_id, "iat": now, "exp": now + 3600}
    return f"{header}.{_b64url(orjson.dumps(claims))}."


def _connections_counter(worker: Worker, status: str) -> float:
    """ws_connections_total{status=…} of the worker (seed §7), 0 when not yet exported."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = re.compile(r"^ws_connections_total\{([^}]*)\} (\S+)$", re.M)
    return sum(
        float(value) for labels, value in pattern.findall(text) if f'status="{status}"' in labels
    )


async def _assert_rejected(
    worker: Worker,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    protocols: tuple[str, ...] = (),
) -> dict[str, object]:
    """The upgrade is refused with 401; returns the JSON body of the refusal."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        client = await WsClient.connect(worker.ws_url, token, headers=headers, protocols=protocols)
        await client.close()  # only reached when the server wrongly accepted
    assert info.value.status == 401, info.value
    # The same upgrade request again, read as plain HTTP to see the body.
    raw_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **(headers or {}),
    }
    if protocols:
        raw_headers["Sec-WebSocket-Protocol"] = ", ".join(protocols)
    url = f"{worker.url}/ws" + (f"?token={token}" if token else "")
    async with aiohttp.ClientSession() as session, session.get(url, headers=raw_headers) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        body: dict[str, object] = await resp.json()
    assert isinstance(body.get("message"), str) and body["message"]
    return body


# ------------------------------------------------------------------------------ accepted


def _by_query(token: str) -> dict[str, object]:
    return {"token": token}


def _by_authorization(token: str) -> dict[str, object]:
    return {"token": None, "headers": {"Authorization": f"Bearer {token}"}}


def _by_protocol_pair(token: str) -> dict[str, object]:
    return {"token": None, "protocols": ("bearer", token)}


def _by_protocol_entry(token: str) -> dict[str, object]:
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
    worker: Worker,
    fleet: FleetDriver,
    how: Callable[[str], dict[str, object]],
    echoed: str | None,
) -> None:
    company = await registered_company(fleet, worker, 2)
    token = company.token()
    client = await WsClient.connect(worker.ws_url, **how(token))  # type: ignore[arg-type]
    try:
        hello = client.received[0]
        assert hello["type"] == "connected"
        assert hello["eventId"] == 0
        assert re.fullmatch(r"[0-9a-f-]{36}", hello["connectionId"])
        if echoed is None:
            assert client.ws.protocol is None
        else:
            assert client.ws.protocol == echoed.format(token=token)
        # Authenticated as a user of this very company: `all` covers its two vehicles.
        sub = await client.subscribe("vehicles", {"type": "all"})
        assert sub["type"] == "subscribed", sub
        assert sub["count"] == 2
    finally:
        await client.close()


async def test_offered_bearer_subprotocol_is_echoed_when_query_also_has_the_token(
    worker: Worker,
) -> None:
    # A browser that offers subprotocols fails the connection unless the server selects one
    # (WHATWG WebSocket "establish a WebSocket connection"); aiohttp's client does not, so
    # check what the server selected.
    token = Company().token()
    client = await WsClient.connect(worker.ws_url, token, protocols=("bearer", token))
    try:
        assert client.ws.protocol == "bearer"
    finally:
        await client.close()


# ------------------------------------------------------------------------------ rejected


def _expired(c: Company) -> dict[str, object]:
    return {"token": c.token(ttl_s=-120)}


def _forged(c: Company) -> dict[str, object]:
    return {"token": mint_token(new_id(), c.company_id, secret=OTHER_SECRET)}


def _forged_in_header(c: Company) -> dict[str, object]:
    forged = mint_token(new_id(), c.company_id, secret=OTHER_SECRET)
    return {"headers": {"Authorization": f"Bearer {forged}"}}


def _forged_in_protocol(c: Company) -> dict[str, object]:
    return {"protocols": ("bearer", mint_token(new_id(), c.company_id, secret=OTHER_SECRET))}


def _alg_none(c: Company) -> dict[str, object]:
    return {"token": _alg_none_token(c)}


def _missing(c: Company) -> dict[str, object]:
    return {}


def _non_uuid_sub(c: Company) -> dict[str, object]:
    return {"token": mint_token("user-42", c.company_id, secret=DEV_JWT_SECRET)}


def _garbage(c: Company) -> dict[str, object]:
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
    worker: Worker, attempt: Callable[[Company], dict[str, object]], code: str
) -> None:
    company = Company()
    connections = worker.health()["connections"]
    opened = _connections_counter(worker, "opened")
    rejected = _connections_counter(worker, "rejected")

    body = await _assert_rejected(worker, **attempt(company))  # type: ignore[arg-type]

    assert body["code"] == code, body
    assert worker.health()["connections"] == connections
    assert _connections_counter(worker, "opened") == opened
    # Both the WebSocket attempt and the raw upgrade request were counted as rejected.
    assert _connections_counter(worker, "rejected") == rejected + 2


# ------------------------------------------------------------------------------ expiry


async def test_token_expiring_while_connected_closes_with_4002(worker: Worker) -> None:
    company = Company()
    token = company.token(ttl_s=2)
    exp = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    client = await WsClient.connect(worker.ws_url, token)
    try:
        # Alive and serving while the token is valid.
        pong = await client.request({"type": "ping"}, "pong")
        assert pong["eventId"] == 0
        assert time.time() < exp
        code = await client.wait_closed(timeout=10)
        assert code == 4002
        # Not before the token actually expired (small allowance for clock granularity).
        assert time.time() >= exp - 0.05
    finally:
        await client.close()
