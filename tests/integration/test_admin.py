"""Admin REST API across three instances (seed §6, ARCHITECTURE §5): every route from every
instance, cluster-wide stats, a user's connections wherever they live, kicking a connection on
another instance, and broadcast counts that match what clients actually received."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from tests.conftest import Cluster
from tests.support.checks import reach_event_id
from tests.support.client import Msg, WsClient, gather_close
from tests.support.cluster import (
    TimedClient,
    admin_get,
    admin_token,
    ahttp,
    http,
    register_company,
    send_round,
    spread_ids,
    until,
)
from tests.support.fleet import Company, FleetDriver, new_id
from tracker_ws.auth import mint_token
from tracker_ws.config import DEV_JWT_SECRET
from tracker_ws_dev.stack import Worker, wait_for

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def routes() -> list[tuple[str, str, Any]]:
    """(method, path, body) of every admin route, with valid arguments."""
    return [
        ("GET", "/api/v1/ws/stats", None),
        ("GET", f"/api/v1/ws/users/{new_id()}/connections", None),
        ("DELETE", f"/api/v1/ws/connections/{new_id()}", None),
        ("POST", "/api/v1/ws/broadcast", {"level": "info", "message": "hello"}),
        ("GET", "/api/v1/ws/interest", None),
        ("GET", "/api/v1/ws/consumer", None),
    ]


def assert_error(status: int, body: Any, want_status: int, want_code: str | None = None) -> None:
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert isinstance(body.get("code"), str) and body["code"], body
    if want_code is not None:
        assert body["code"] == want_code, body


def stats(worker: Worker) -> dict[str, Any]:
    status, body = http("GET", worker.url + "/api/v1/ws/stats", token=admin_token())
    assert status == 200, (status, body)
    return dict(body)


def per_instance(body: dict[str, Any]) -> dict[str, int]:
    return {row["instanceId"]: row["connections"] for row in body["instanceStats"]}


async def settle(cluster: Cluster, expected: dict[str, int]) -> None:
    """Every instance's stats show exactly `expected` connections per instance (connections
    of earlier tests are gone, new ones registered)."""

    def ok() -> bool:
        return all(
            per_instance(b) == expected and b["totalConnections"] == sum(expected.values())
            for b in (stats(w) for w in cluster.workers)
        )

    await until(ok, 15, f"stats showing {expected}")


def connection_ids(url: str) -> list[str]:
    status, body = http("GET", url, token=admin_token())
    assert status == 200, (status, body)
    return [r["id"] for r in body["connections"]]


def is_alert(message: str) -> Any:
    return lambda m: m.get("type") == "systemAlert" and m.get("message") == message


def alerts(client: WsClient, message: str) -> list[Msg]:
    return [m for m in client.received if is_alert(message)(m)]


async def test_every_admin_route_needs_an_admin_token_on_every_instance(cluster3: Cluster) -> None:
    company = Company()
    user = company.token()
    expired = mint_token(new_id(), new_id(), secret=DEV_JWT_SECRET, roles=["admin"], ttl_s=-60)
    forged = mint_token(
        new_id(), new_id(), secret="not-the-secret-of-this-service-at-all", roles=["admin"]
    )
    for w in cluster3.workers:
        for method, path, body in routes():
            url = w.url + path
            assert_error(*await ahttp(method, url, body=body), 401, "UNAUTHORIZED")
            assert_error(*await ahttp(method, url, body=body, token="garbage"), 401)
            assert_error(*await ahttp(method, url, body=body, token=forged), 401)
            assert_error(*await ahttp(method, url, body=body, token=expired), 401)
            assert_error(*await ahttp(method, url, body=body, token=user), 403, "FORBIDDEN")
            status, _ = await ahttp(method, url, body=body, token=admin_token())
            assert status in (200, 204, 404), (w.instance_id, method, path, status)


BAD_BROADCASTS: list[bytes | dict[str, Any] | list[Any]] = [
    b"",
    b"not json",
    b"{",
    [],
    ["message"],
    {},
    {"message": ""},
    {"message": "   "},
    {"message": 42},
    {"message": None},
    {"message": "x" * 2001},
    {"message": "hi", "level": "panic"},
    {"message": "hi", "level": 3},
    {"message": "hi", "extra": 1},
    {"message": "hi", "targetCompanyIds": []},
    {"message": "hi", "targetCompanyIds": "all"},
    {"message": "hi", "targetCompanyIds": ["not-a-uuid"]},
    {"message": "hi", "targetCompanyIds": [42]},
    {"message": "hi", "targetCompanyIds": {"a": 1}},
]


async def test_invalid_ids_and_bodies_get_400_with_a_json_error(cluster3: Cluster) -> None:
    token = admin_token()
    for w in cluster3.workers:
        for bad in ("not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"):
            got = await ahttp("GET", f"{w.url}/api/v1/ws/users/{bad}/connections", token=token)
            assert_error(*got, 400, "INVALID_MESSAGE")
            got = await ahttp("DELETE", f"{w.url}/api/v1/ws/connections/{bad}", token=token)
            assert_error(*got, 400, "INVALID_MESSAGE")
        for body in BAD_BROADCASTS:
            got = await ahttp("POST", f"{w.url}/api/v1/ws/broadcast", token=token, body=body)
            assert_error(*got, 400, "INVALID_MESSAGE")


async def test_stats_count_connections_on_all_three_instances(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids()[:2])
    workers = cluster3.workers
    spread = {workers[0]: 1, workers[1]: 2, workers[2]: 3}
    platforms = ["web", "mobile", "desktop"]
    clients: list[WsClient] = []
    want_platform: dict[str, int] = {}
    try:
        await settle(cluster3, {w.instance_id: 0 for w in workers})
        for w, n in spread.items():
            for i in range(n):
                platform = platforms[(len(clients) + i) % 3]
                c = await WsClient.connect(w.ws_url, company.token(), query=f"platform={platform}")
                want_platform[platform] = want_platform.get(platform, 0) + 1
                clients.append(c)
        # Subscriptions: 2 byIds entries on one connection per instance, plus one `all`.
        for c in clients[::2]:
            sub = await c.subscribe("vehicles", {"type": "byIds", "ids": company.vehicles})
            assert sub["type"] == "subscribed", sub
        sub = await clients[1].subscribe("vehicles", {"type": "all"})
        assert sub["type"] == "subscribed", sub
        want_vehicles = 2 * len(clients[::2]) + 1
        expected = {w.instance_id: n for w, n in spread.items()}
        await settle(cluster3, expected)
        for w in workers:
            body = stats(w)
            assert body["totalConnections"] == 6, body
            assert per_instance(body) == expected, body
            assert len(body["instanceStats"]) == 3 and body["unreachable"] == [], body
            assert body["connectionsByPlatform"] == want_platform, body
            assert body["activeSubscriptions"].get("vehicles") == want_vehicles, body
            assert set(body["messagesPerSecond"]) == {"inbound", "outbound"}, body
            for row in body["instanceStats"]:
                assert isinstance(row["queueDepth"], int), row
                assert row["partitions"], row
            owned = sorted(p for row in body["instanceStats"] for p in row["partitions"])
            assert owned == list(range(12)), body

        # Closing connections is counted everywhere too.
        await gather_close(*clients[3:])
        await settle(cluster3, {**expected, workers[2].instance_id: 0})
    finally:
        await gather_close(*clients)


async def test_consumer_view_covers_every_input_partition_once_and_sees_it_consumed(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids())

    def views() -> list[dict[str, Any]]:
        out = []
        for w in cluster3.workers:
            body = admin_get(w, "/api/v1/ws/consumer")
            assert body["instanceId"] == w.instance_id and body["flowActive"] is True, body
            out.append(body)
        return out

    rows = [r for b in views() for r in b["partitions"]]
    gps = sorted(r["partition"] for r in rows if r["topic"] == "gps-events")
    assert gps == list(range(12)), rows  # each owned by exactly one worker
    assert not any(r["topic"].endswith("-changelog") for r in rows), rows
    before = {r["partition"]: r["end"] for r in rows if r["topic"] == "gps-events"}
    await send_round(fleet, company.vehicles)

    def consumed() -> bool:
        now = [r for b in views() for r in b["partitions"] if r["topic"] == "gps-events"]
        return all(r["end"] > before[r["partition"]] and r["lag"] == 0 for r in now)

    await asyncio.to_thread(wait_for, consumed, 20.0, 0.2, "every gps-events partition consumed")
    for w in cluster3.workers:
        assert w.health()["stalledPartitions"] == []


async def test_user_connections_lists_every_instance(cluster3: Cluster, fleet: FleetDriver) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids()[:3])
    user = new_id()
    token = company.token(user)
    w0, w1, w2 = cluster3.workers
    clients: list[TimedClient] = []
    try:
        a = await TimedClient.open(w0, token, "platform=mobile")
        clients.append(a)
        b = await TimedClient.open(w1, token)
        clients.append(b)
        c = await TimedClient.open(w2, token, "platform=desktop")
        clients.append(c)
        for client, stype, flt in (
            (a, "vehicles", {"type": "byIds", "ids": company.vehicles[:2]}),
            (b, "vehicles", {"type": "all"}),
            (b, "systemAlerts", {"type": "all"}),
        ):
            sub = await client.subscribe(stype, flt)
            assert sub["type"] == "subscribed", sub
        other = await TimedClient.open(w0, company.token())  # another user: never listed
        clients.append(other)
        want = {
            a.connection_id: (w0, "mobile", [{"type": "vehicles", "count": 2}]),
            b.connection_id: (
                w1,
                "web",
                [{"type": "systemAlerts", "count": 1}, {"type": "vehicles", "count": 1}],
            ),
            c.connection_id: (w2, "desktop", []),
        }
        path = f"/api/v1/ws/users/{user}/connections"

        def listed_everywhere() -> bool:
            # Registry entries are written behind (bus/writeback.py): a few ms after connect.
            for w in cluster3.workers:
                status, body = http("GET", w.url + path, token=admin_token())
                if status != 200 or {r["id"] for r in body["connections"]} != set(want):
                    return False
            return True

        await asyncio.to_thread(wait_for, listed_everywhere, 5.0, 0.05, "all three listed")
        for w in cluster3.workers:
            status, body = await ahttp("GET", w.url + path, token=admin_token())
            assert status == 200, body
            rows = body["connections"]
            assert {r["id"] for r in rows} == set(want), (w.instance_id, rows)
            for r in rows:
                owner, platform, subs = want[r["id"]]
                assert r["instanceId"] == owner.instance_id, r
                assert r["userId"] == user and r["companyId"] == company.company_id, r
                assert r["clientInfo"]["platform"] == platform, r
                assert r["subscriptions"] == subs, r
                assert isinstance(r["queueDepth"], int) and r["queueDepth"] >= 0, r
                assert isinstance(r["lastEventId"], int), r
                assert ISO_MS.match(r["connectedAt"]) and ISO_MS.match(r["lastSeen"]), r
            assert [r["connectedAt"] for r in rows] == sorted(r["connectedAt"] for r in rows)

        status, body = await ahttp("GET", f"{w2.url}/api/v1/ws/users/{new_id()}/connections")
        assert status == 401
        status, body = await ahttp(
            "GET", f"{w2.url}/api/v1/ws/users/{new_id()}/connections", token=admin_token()
        )
        assert (status, body) == (200, {"connections": []})

        # A closed connection leaves the registry.
        await b.close()

        def gone() -> bool:
            _, body = http("GET", w2.url + path, token=admin_token())
            return {r["id"] for r in body["connections"]} == {a.connection_id, c.connection_id}

        await until(gone, 10, "the closed connection to leave the list")
    finally:
        await gather_close(*clients)


async def test_kick_reaches_a_connection_on_another_instance(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await fleet.company(1)
    user = new_id()
    workers = cluster3.workers
    for i, admin_on in enumerate(workers):
        target_on = workers[(i + 1) % 3]
        target = await TimedClient.open(target_on, company.token(user))
        bystander = await TimedClient.open(admin_on, company.token(user))
        try:
            url = f"{admin_on.url}/api/v1/ws/connections/{target.connection_id}"
            status, body = await ahttp("DELETE", url, token=admin_token())
            assert (status, body) == (204, None)
            await target.wait_closed(10)
            assert target.close_frame_code == 4010, target.closed_code
            pong = await bystander.request({"type": "ping"}, "pong")
            assert pong["eventId"] == 0

            listed = f"{admin_on.url}/api/v1/ws/users/{user}/connections"
            left = [bystander.connection_id]

            def kicked_left(url: str = listed, left: list[str] = left) -> bool:
                return connection_ids(url) == left

            await until(
                kicked_left,
                10,
                "the kicked connection to leave the registry",
            )
            assert_error(*await ahttp("DELETE", url, token=admin_token()), 404, "NOT_FOUND")
            unknown = f"{admin_on.url}/api/v1/ws/connections/{uuid.uuid4()}"
            assert_error(*await ahttp("DELETE", unknown, token=admin_token()), 404, "NOT_FOUND")
        finally:
            await gather_close(target, bystander)


async def _broadcast(worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await ahttp(
        "POST", worker.url + "/api/v1/ws/broadcast", token=admin_token(), body=body
    )
    assert status == 200, (status, reply)
    assert reply["instances"] == 3 and reply["unreachable"] == [], reply
    assert isinstance(reply["eventId"], int) and reply["eventId"] > 0, reply
    return dict(reply)


async def test_broadcast_delivered_counts_match_what_clients_received(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    x, y, z = await fleet.company(1), await fleet.company(1), await fleet.company(1)
    workers = cluster3.workers
    layout = [(x, [0, 0, 1, 2]), (y, [0, 1, 2]), (z, [2])]  # company, instance of each client
    clients: dict[WsClient, Company] = {}
    try:
        await settle(cluster3, {w.instance_id: 0 for w in workers})
        for company, where in layout:
            for i in where:
                clients[await WsClient.connect(workers[i].ws_url, company.token())] = company
        await settle(cluster3, {w.instance_id: n for w, n in zip(workers, (3, 2, 3), strict=True)})

        async def received_by(message: str, among: list[WsClient]) -> list[WsClient]:
            got = []
            for c in among:
                await c.wait_for(is_alert(message), 10, message)
                got.append(c)
            return got

        for w in workers:
            message = f"to everyone from {w.instance_id} {uuid.uuid4()}"
            reply = await _broadcast(w, {"level": "warning", "message": message})
            receivers = await received_by(message, list(clients))
            assert reply["delivered"] == len(receivers) == 8, reply
            for c in receivers:
                [alert] = alerts(c, message)
                assert alert["eventId"] == reply["eventId"] and alert["level"] == "warning"

        for w, targets in zip(workers, ([x], [y, z], [x, y]), strict=True):
            message = f"to {len(targets)} companies from {w.instance_id} {uuid.uuid4()}"
            reply = await _broadcast(
                w,
                {
                    "level": "critical",
                    "message": message,
                    "targetCompanyIds": [c.company_id for c in targets],
                },
            )
            meant = [c for c, company in clients.items() if company in targets]
            receivers = await received_by(message, meant)
            assert reply["delivered"] == len(receivers), (reply, len(receivers))
            # Exact negative check: a later alert reaches everyone; the others never got it.
            marker = await _broadcast(w, {"message": f"marker {uuid.uuid4()}"})
            for c, company in clients.items():
                await reach_event_id(c, marker["eventId"])
                assert len(alerts(c, message)) == (1 if company in targets else 0), company

        nobody = await _broadcast(workers[1], {"message": "no one", "targetCompanyIds": [new_id()]})
        assert nobody["delivered"] == 0, nobody
    finally:
        await gather_close(*clients)


async def test_kicked_connection_gets_a_clean_closing_handshake(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await fleet.company(1)
    workers = cluster3.workers
    codes = []
    for i in range(6):
        admin_on, target_on = workers[i % 3], workers[(i + 1) % 3]
        target = await TimedClient.open(target_on, company.token())
        try:
            url = f"{admin_on.url}/api/v1/ws/connections/{target.connection_id}"
            assert (await ahttp("DELETE", url, token=admin_token()))[0] == 204
            await target.wait_closed(10)
            assert target.close_frame_code == 4010
            codes.append(target.closed_code)
        finally:
            await target.close()
    # aiohttp's close_code is the frame's code only once the handshake completed cleanly.
    assert codes == [4010] * 6, codes
