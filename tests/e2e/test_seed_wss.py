"""WSS as in the seed (§1: 8090 WS, 8091 WSS; issue 10 point 14).

A worker started with TRACKER_WS_TLS_CERT/_KEY (a throwaway CA made here signs its
certificate) serves the public routes over TLS too: the seed's JavaScript client connects over
wss:// in Node, trusting the CA through NODE_EXTRA_CA_CERTS, and receives positions; a Python
ssl client gets /health and a WebSocket; plain HTTP on that port gets nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from tests.conftest import start_cluster
from tests.support.checks import at_lat, registered_company, wait_position
from tests.support.client import WsClient
from tests.support.fleet import FleetDriver
from tests.support.node_seed import NodeSeedClient, requires_node_seed
from tests.support.tls import Pki, make_pki
from tracker_ws_dev.stack import Worker, free_port

TLS_DB = 12  # the module's own instance (the session worker uses 0, cluster3 1, …)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_worker(
    topics: str, redis_url: str, devstack_dir: Path, pki: Pki
) -> Iterator[tuple[Worker, int]]:
    """One instance of its own group with a TLS listener; (worker, TLS port)."""
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{TLS_DB}").flushdb()
    tls_port = free_port()
    cluster = start_cluster(
        1,
        broker_url=topics,
        redis_base_url=redis_url,
        log_dir=devstack_dir,
        db=TLS_DB,
        env={
            "TRACKER_WS_TLS_CERT": str(pki.server_cert),
            "TRACKER_WS_TLS_KEY": str(pki.server_key),
            "TRACKER_WS_TLS_PORT": str(tls_port),
            "TRACKER_WS_REQUEST_TIMEOUT": "1",
        },
    )
    try:
        yield cluster.workers[0], tls_port
    finally:
        cluster.stop()


async def test_python_ssl_client_gets_health_and_a_websocket_over_tls(
    tls_worker: tuple[Worker, int], pki: Pki, fleet: FleetDriver
) -> None:
    worker, tls_port = tls_worker
    company = await registered_company(fleet, worker, 1)
    vid = company.vehicles[0]

    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"https://127.0.0.1:{tls_port}/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "healthy"
        async with session.get(f"https://127.0.0.1:{tls_port}/static/tracker-ws.js") as resp:
            assert resp.status == 200 and "class TrackerWebSocket" in await resp.text()
        # Plain HTTP on the TLS port is not served.
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{tls_port}/health") as resp:
                await resp.read()

    client = await WsClient.connect(
        f"wss://localhost:{tls_port}/ws", company.token(), ssl=pki.client_context()
    )
    try:
        assert (await client.subscribe("vehicles", {"type": "all"}))["type"] == "subscribed"
        await fleet.send_fix(vid, lat=47.5)
        await wait_position(client, vid, at_lat(47.5), timeout=15.0)
    finally:
        await client.close()


async def test_tls_handshake_that_never_starts_is_closed(tls_worker: tuple[Worker, int]) -> None:
    _, tls_port = tls_worker
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
    start = time.monotonic()
    try:
        async with asyncio.timeout(20.0):
            while await reader.read(4096):
                pass
    except TimeoutError:
        pytest.fail("a socket that never starts its TLS handshake is open after 20 s")
    except ConnectionError:
        pass
    finally:
        writer.close()
    print(f"\nsilent socket on the TLS port closed after {time.monotonic() - start:.1f} s")


@requires_node_seed
async def test_seed_js_client_receives_positions_over_wss(
    tls_worker: tuple[Worker, int], pki: Pki, fleet: FleetDriver
) -> None:
    worker, tls_port = tls_worker
    company = await registered_company(fleet, worker, 2)
    a, b = company.vehicles
    node = await NodeSeedClient.start(
        f"wss://localhost:{tls_port}/ws",
        company.token(),
        vehicle_ids=[a],
        env={"NODE_EXTRA_CA_CERTS": str(pki.ca_cert)},
    )
    try:
        await node.wait_for(lambda line: line.get("ready") is True, 20.0, "the ready line")
        await fleet.send_fix(b, lat=46.1)
        await fleet.send_fix(a, lat=46.2)
        got = await node.wait_for(
            lambda line: line.get("cb") == "position" and line["position"]["lat"] == 46.2,
            15.0,
            "the position callback over wss",
        )
        assert got["vehicleId"] == a
    finally:
        code = await node.stop()
    assert code == 0, node.stderr[-10:]
    assert {line["vehicleId"] for line in node.lines if line.get("cb") == "position"} == {a}
