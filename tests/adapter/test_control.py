"""Admin actions through the control handler, ping/pong, the heartbeat sweep, live permission
changes and the drain, in-process. Across instances: tests/integration/test_admin.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest

from tests.support.checks import reach_event_id
from tests.support.client import Msg, WsClient
from tests.support.fleet import Company, new_id
from tests.support.inproc import Instance, until
from tracker_ws.domain.close import CloseCode


def alerts(client: WsClient, message: str) -> list[Msg]:
    return [
        m for m in client.received if m.get("type") == "systemAlert" and m["message"] == message
    ]


async def broadcast(inst: Instance, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await inst.request(
        "POST", "/api/v1/ws/broadcast", token=inst.admin_token(), body=body
    )
    assert status == 200, (status, reply)
    assert reply["instances"] == 1 and reply["unreachable"] == [], reply
    assert isinstance(reply["eventId"], int) and reply["eventId"] > 0, reply
    return dict(reply)


async def connection_ids(inst: Instance, user: str) -> list[str]:
    body = await inst.admin_get(f"/api/v1/ws/users/{user}/connections")
    return [row["id"] for row in body["connections"]]


async def test_client_ping_gets_pong_with_event_id_0(inst: Instance) -> None:
    client = await inst.connect(Company().token())
    pong = await client.request({"type": "ping"}, "pong", 5)
    assert set(pong) == {"type", "eventId", "timestamp"}, pong
    assert pong["eventId"] == 0
    assert isinstance(pong["timestamp"], str) and pong["timestamp"].endswith("Z")


async def test_kick_closes_with_4010_and_leaves_the_others(inst: Instance) -> None:
    user = new_id()
    company = Company()
    target = await inst.connect(company.token(user))
    bystander = await inst.connect(company.token(user))
    target_id = target.received[0]["connectionId"]
    assert sorted(await connection_ids(inst, user)) == sorted(
        [target_id, bystander.received[0]["connectionId"]]
    )
    status, body = await inst.request(
        "DELETE", f"/api/v1/ws/connections/{target_id}", token=inst.admin_token()
    )
    assert (status, body) == (204, None)
    # A clean closing handshake: the frame's code, and aiohttp's code once it completed.
    assert await target.wait_closed(5) == CloseCode.KICKED
    assert target.close_frame_code == CloseCode.KICKED
    assert (await bystander.request({"type": "ping"}, "pong"))["eventId"] == 0
    await until(lambda: target_id not in inst.rt.hub.sessions, "the kicked session to go")
    assert await connection_ids(inst, user) == [bystander.received[0]["connectionId"]]
    for conn_id in (target_id, str(uuid.uuid4())):
        status, body = await inst.request(
            "DELETE", f"/api/v1/ws/connections/{conn_id}", token=inst.admin_token()
        )
        assert status == 404 and body["code"] == "NOT_FOUND", body


async def test_broadcast_counts_what_clients_received(inst: Instance) -> None:
    """An admin broadcast reaches every connection of its target companies (everyone without
    targets), subscribed to systemAlerts or not, and says how many it reached."""
    x, y, z = Company(), Company(), Company()
    clients: dict[WsClient, Company] = {}
    for company, n in ((x, 2), (y, 1), (z, 1)):
        for _ in range(n):
            clients[await inst.connect(company.token())] = company
    subscribed = next(iter(clients))
    assert (await subscribed.subscribe("systemAlerts", {"type": "all"}))["type"] == "subscribed"

    message = f"to everyone {uuid.uuid4()}"
    reply = await broadcast(inst, {"level": "warning", "message": message})
    assert reply["delivered"] == 4, reply
    for c in clients:
        await c.wait_for(lambda m: m.get("message") == message, 5, message)
        [alert] = alerts(c, message)
        assert alert["eventId"] == reply["eventId"] and alert["level"] == "warning"

    message = f"to x and z {uuid.uuid4()}"
    targets = [x, z]
    reply = await broadcast(
        inst,
        {
            "level": "critical",
            "message": message,
            "targetCompanyIds": [c.company_id for c in targets],
        },
    )
    assert reply["delivered"] == 3, reply
    # Exact negative check: a later alert reaches everyone; y's client never got this one.
    marker = await broadcast(inst, {"message": f"marker {uuid.uuid4()}"})
    for c, company in clients.items():
        await reach_event_id(c, marker["eventId"])
        assert len(alerts(c, message)) == (1 if company in targets else 0), company

    nobody = await broadcast(inst, {"message": "no one", "targetCompanyIds": [new_id()]})
    assert nobody["delivered"] == 0, nobody


async def test_stats_and_connection_details(inst: Instance) -> None:
    company = inst.company(3)
    user = new_id()
    client = await inst.connect(company.token(user), query="platform=mobile&version=2.1")
    await client.subscribe("vehicles", {"type": "byIds", "ids": company.vehicles[:2]})
    await client.subscribe("notifications", {"type": "all"})
    await inst.connect(Company().token())
    stats = await inst.admin_get("/api/v1/ws/stats")
    assert stats["totalConnections"] == 2, stats
    assert stats["connectionsByPlatform"] == {"mobile": 1, "web": 1}, stats
    assert stats["activeSubscriptions"] == {"vehicles": 2, "notifications": 1}, stats
    [row] = (await inst.admin_get(f"/api/v1/ws/users/{user}/connections"))["connections"]
    assert row["id"] == client.received[0]["connectionId"]
    assert row["instanceId"] == inst.rt.settings.instance_id
    assert row["clientInfo"]["platform"] == "mobile" and row["clientInfo"]["version"] == "2.1"
    assert row["subscriptions"] == [
        {"type": "notifications", "count": 1},
        {"type": "vehicles", "count": 2},
    ], row


async def test_registry_change_revokes_a_vehicle_from_live_subscriptions(inst: Instance) -> None:
    """A vehicle moved to another company: its subscribers are told and stop receiving it;
    a vehicle that joins a subscribed group flows without resubscribing."""
    company = inst.company(2, groups=1)
    (group,) = company.groups
    v1, v2 = company.vehicles
    joiner = new_id()
    inst.register(company.company_id, joiner)  # in no group yet
    client = await inst.connect(company.token())
    await client.subscribe("vehicles", {"type": "byIds", "ids": [v1, v2]})
    await client.subscribe("vehicles", {"type": "byGroup", "groupId": group})
    other = Company()
    inst.register(other.company_id, v1)
    revoked = await client.next_of("error")
    assert revoked["code"] == "SUBSCRIPTION_REVOKED" and revoked["revoked"] == [v1], revoked
    assert revoked["subscriptionTypes"] == ["vehicles"], revoked
    inst.register(company.company_id, joiner, groups=[group])
    watcher = await inst.connect(other.token())
    await watcher.subscribe("vehicles", {"type": "byIds", "ids": [v1]})
    await inst.send_fix(v1, lat=1.0)  # now the other company's: the watcher gets it
    await watcher.wait_for(lambda m: m.get("type") in ("position", "positionBatch"), 5, "v1")
    await inst.send_fix(joiner, lat=2.0)
    await client.wait_for(lambda m: m.get("type") in ("position", "positionBatch"), 5, "joiner")
    assert client.vehicles_seen() == {joiner}


async def test_silent_peer_is_closed_1001_by_the_heartbeat_sweep(inst: Instance) -> None:
    """The worker sweeps on a timer (app.py); here the sweep runs as if that much time had
    passed since the peer was last heard."""
    s = inst.rt.settings
    async with aiohttp.ClientSession() as http:
        # autoping=False: the client neither answers the server's pings nor sends anything.
        ws = await http.ws_connect(f"{inst.ws_url}?token={Company().token()}", autoping=False)
        client = WsClient(ws, http)
        await client.next_of("connected", 5)
        [session] = inst.rt.hub.sessions.values()
        inst.rt.hub.sweep(
            session.last_seen + s.server_ping_interval_s,
            s.server_ping_interval_s,
            s.heartbeat_timeout_s,
        )
        ping = await ws.receive(timeout=5)
        assert ping.type is aiohttp.WSMsgType.PING, ping
        inst.rt.hub.sweep(
            session.last_seen + s.heartbeat_timeout_s,
            s.server_ping_interval_s,
            s.heartbeat_timeout_s,
        )
        assert await client.wait_closed(5) == CloseCode.GOING_AWAY
        await until(lambda: not inst.rt.hub.sessions, "the session to go")


async def test_peer_answering_pings_stays_open(inst: Instance) -> None:
    s = inst.rt.settings
    client = await inst.connect(Company().token())  # autoping=True: answers pings itself
    [session] = inst.rt.hub.sessions.values()
    # The client answers pings while it reads: read until it closes (it must not).
    reader = asyncio.create_task(client.wait_closed(30))
    try:
        for _ in range(3):
            heard = session.last_seen
            inst.rt.hub.sweep(
                heard + s.server_ping_interval_s, s.server_ping_interval_s, s.heartbeat_timeout_s
            )

            def answered(heard: float = heard) -> bool:
                return session.last_seen > heard

            await until(answered, "the pong")
        assert not reader.done() and session.conn_id in inst.rt.hub.sessions
    finally:
        reader.cancel()
    assert [m["type"] for m in client.received] == ["connected"]


async def test_a_sliced_sweep_pings_each_quiet_connection_in_its_slice_only(
    inst: Instance,
) -> None:
    """The worker sweeps one slice of the connections a second (hub.heartbeat_plan): a
    connection is pinged by the sweep of its own slice and by no other."""
    s = inst.rt.settings
    parts = 3
    async with aiohttp.ClientSession() as http:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for _ in range(6):
            # autoping=False: the pings stay in the stream for the test to see.
            ws = await http.ws_connect(f"{inst.ws_url}?token={Company().token()}", autoping=False)
            await WsClient(ws, http).next_of("connected", 5)
            sockets.append(ws)
        sessions = list(inst.rt.hub.sessions.values())  # in the order they connected
        assert len(sessions) == len(sockets)
        pinged: list[int] = []
        for turn in range(parts):
            now = max(x.last_seen for x in sessions) + s.server_ping_interval_s
            inst.rt.hub.sweep(now, s.server_ping_interval_s, s.heartbeat_timeout_s, turn, parts)
            for i, (ws, session) in enumerate(zip(sockets, sessions, strict=True)):
                # Whatever the sweep wrote comes before the answer to this ping.
                await ws.send_str('{"type": "ping"}')
                kinds = []
                while True:
                    msg = await ws.receive(timeout=5)
                    if msg.type is aiohttp.WSMsgType.TEXT and '"pong"' in msg.data:
                        break
                    kinds.append(msg.type)
                mine = hash(session.conn_id) % parts == turn
                assert kinds == ([aiohttp.WSMsgType.PING] if mine else []), (turn, i, kinds)
                pinged += [i] if mine else []
        assert sorted(pinged) == list(range(len(sockets)))
        for ws in sockets:
            await ws.close()


async def test_drain_alerts_and_closes_1012_saves_state_and_refuses_new_clients(
    inst: Instance,
) -> None:
    users = [new_id(), new_id()]
    company = Company()
    clients = [await inst.connect(company.token(u)) for u in users]
    for c in clients:
        await c.subscribe("notifications", {"type": "all"})
    # Clients read on their own: the closing handshake needs their answer.
    closing = [asyncio.create_task(c.wait_closed(5)) for c in clients]
    started = time.monotonic()
    await inst.drain()
    assert await asyncio.gather(*closing) == [CloseCode.RESTART] * 2
    for c in clients:
        alert = c.received[-1]
        assert alert["type"] == "systemAlert" and alert["eventId"] == 0, c.received
        assert alert["level"] == "info" and "restart" in alert["message"], alert
    assert not inst.rt.hub.sessions
    assert time.monotonic() - started < inst.rt.settings.drain_timeout_s
    for u in users:
        state, _ = await inst.rt.bus.store.load_state(u)
        assert state is not None and b'"notifications"' in state, state
    status, body = await inst.request("GET", "/health")
    assert status == 503 and body["status"] == "draining", body
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await inst.connect(company.token())
    assert refused.value.status == 503
