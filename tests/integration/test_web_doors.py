"""The web server's doors (issue 10, points 1, 2, 9, 13; web/listeners.py).

Faust's views only on the internal listener; the advertised URL carries the configured host and
the internal port; half-sent request heads and idle keep-alive connections are closed while a
WebSocket stays open; a malformed request line is one INFO line without the request line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from tests.conftest import Cluster, start_cluster
from tests.support.checks import registered_company
from tests.support.client import WsClient
from tests.support.fleet import Company, FleetDriver
from tracker_ws_dev.stack import Worker, free_port, wait_for

DOORS_DB = 11  # the module's own instance (the session worker uses 0, cluster3 1, …)
ADVERTISED = "tracker-ws-7.doors.test"
REQUEST_TIMEOUT = 1.0
KEEPALIVE = 3.0
CLOSE_BOUND = 20.0  # generous: the machine is shared; the figures are seconds, not this bound
FAUST_VIEWS = ("/table/", "/router/")


@pytest.fixture(scope="module")
def doors(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Worker]:
    """One instance of its own group with short request/keep-alive timeouts."""
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DOORS_DB}").flushdb()
    cluster: Cluster = start_cluster(
        1,
        broker_url=topics,
        redis_base_url=redis_url,
        log_dir=devstack_dir,
        db=DOORS_DB,
        env={
            "TRACKER_WS_ADVERTISED_HOST": ADVERTISED,
            "TRACKER_WS_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
            "TRACKER_WS_KEEPALIVE_TIMEOUT": str(KEEPALIVE),
        },
    )
    try:
        yield cluster.workers[0]
    finally:
        cluster.stop()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def _get_sync(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


async def _closed_within(reader: asyncio.StreamReader, bound: float) -> float | None:
    """Seconds until the server closed the connection (EOF or reset), None if it did not."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - start


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> int:
    """One keep-alive GET on a raw connection; its status (body read, connection left open)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length"))
    await asyncio.wait_for(reader.readexactly(length), 10.0)
    return int(lines[0].split()[1])


# ------------------------------------------------------------------------------- point 1


async def test_faust_views_live_on_the_internal_listener_only(
    worker: Worker, fleet: FleetDriver
) -> None:
    company = await registered_company(fleet, worker, 1)
    vid = company.vehicles[0]
    await fleet.send_fix(vid, lat=48.25)
    key_view = f"/table/last_positions/{vid}/"

    async def exposed(paths: tuple[str, ...]) -> list[tuple[str, int]]:
        got = [(path, (await _get(worker.url + path))[0]) for path in paths]
        return [(path, status) for path, status in got if status != 404]

    # Public listener: none of Faust's views (no token could help).
    assert await exposed((*FAUST_VIEWS, "/stats/", "/performance/")) == []
    assert (await _get(worker.url + "/health"))[0] == 200
    status, script = await _get(worker.url + "/static/tracker-ws.js")  # a sendfile response
    assert status == 200 and "class TrackerWebSocket" in script

    # Internal listener: the views monitoring uses, and Faust's stats.
    def stored() -> bool:
        status, body = _get_sync(worker.internal_url + key_view)
        return status == 200 and "48.25" in body

    await asyncio.to_thread(wait_for, stored, 20.0, 0.1, "the fix in the internal table view")
    for path in (*FAUST_VIEWS, "/stats/", "/stats/assignment/", "/performance/"):
        status, _ = await _get(worker.internal_url + path)
        assert status == 200, (path, status)
    # ... which serves nothing of ours, and the stored position is not public.
    assert (await _get(worker.internal_url + "/health"))[0] == 404
    assert await exposed((key_view,)) == []


# ------------------------------------------------------------------------------- point 2


async def test_advertised_url_carries_the_configured_host_and_internal_port(
    doors: Worker,
) -> None:
    status, body = await _get(doors.internal_url + "/router/")
    assert status == 200, status
    assert set(json.loads(body)) == {f"http://{ADVERTISED}:{doors.internal_port}"}, body


# ------------------------------------------------------------------------------- point 9


async def test_half_sent_request_heads_and_silent_sockets_are_closed(doors: Worker) -> None:
    n = 40
    conns = [await asyncio.open_connection("127.0.0.1", doors.port) for _ in range(n)]
    try:
        for i, (_, writer) in enumerate(conns):
            if i % 4:  # three in four send part of an upgrade request's head; the rest nothing
                writer.write(
                    b"GET /ws?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                )
        took = await asyncio.gather(*(_closed_within(r, CLOSE_BOUND) for r, _ in conns))
    finally:
        for _, writer in conns:
            writer.close()
    still_open = sum(t is None for t in took)
    closed = sorted(t for t in took if t is not None)
    print(f"\n{n - still_open}/{n} half-sent/silent connections closed; slowest {closed[-1:]} s")
    assert still_open == 0, f"{still_open}/{n} still open after {CLOSE_BOUND:g} s"
    # Not before the request timeout.
    assert closed[0] >= REQUEST_TIMEOUT * 0.8, closed


async def test_idle_keepalive_connection_is_closed_and_a_websocket_is_not(doors: Worker) -> None:
    ws = await WsClient.connect(doors.ws_url, Company().token())
    reader, writer = await asyncio.open_connection("127.0.0.1", doors.port)
    try:
        # Keep-alive works: two requests on one connection, the second after the request
        # timeout would have expired for a connection without a request.
        assert await _http_exchange(reader, writer, "/health") == 200
        assert await _http_exchange(reader, writer, "/health") == 200
        idle = await _closed_within(reader, KEEPALIVE + CLOSE_BOUND)
        assert idle is not None, f"idle keep-alive connection open after {KEEPALIVE:g}+ s"
        assert idle >= KEEPALIVE * 0.8, f"closed after {idle:.1f} s, keep-alive is {KEEPALIVE}"
        # The WebSocket opened before it is upgraded: neither timeout applies to it.
        pong = await ws.request({"type": "ping"}, "pong")
        assert pong["type"] == "pong"
        print(f"\nidle keep-alive connection closed after {idle:.1f} s; the WebSocket answers")
    finally:
        writer.close()
        await ws.close()


# ------------------------------------------------------------------------------- point 13


def _bad_requests(secret: str) -> list[bytes]:
    s = secret.encode()
    return [
        b"GET /ws?token=" + s + b" HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
        b"GET /ws?token=" + s + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws?token=" + s + b" HTTP/7.3\r\nHost: x\r\n\r\n",
        b"G{T /ws?token=" + s + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + s + b"\r\n\r\n",
        b"GET /ws?token=" + s + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + s + b"\r\n\r\n",
    ]


async def test_malformed_request_lines_are_one_info_line_without_the_token(
    doors: Worker,
) -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9." + uuid.uuid4().hex + ".c2lnbmF0dXJl"
    fragment = secret.split(".")[1][:12]  # any part of it
    offset = len(doors.process.read_log())
    bad = _bad_requests(secret)
    for raw in bad:
        reader, writer = await asyncio.open_connection("127.0.0.1", doors.port)
        try:
            writer.write(raw)
            # The server answers 400 and closes: its log line is written before the answer.
            assert await _closed_within(reader, CLOSE_BOUND) is not None
        finally:
            writer.close()
    log = doors.process.read_log()[offset:]
    lines = [line for line in log.splitlines() if "bad HTTP request" in line]
    figures = (
        f"{len(bad)} bad requests: {log.count('[ERROR]')} ERROR lines, "
        f"{log.count('Traceback')} tracebacks, {log.count(fragment)} lines with the token, "
        f"{len(lines)} one-line entries"
    )
    print("\n" + figures)
    assert fragment not in log, figures
    assert "Traceback" not in log and "Error handling request" not in log, figures
    assert len(lines) == len(bad), lines
    assert all("[INFO]" in line or "[WARNING]" in line for line in lines), lines
    assert all("from 127.0.0.1" in line for line in lines), lines


# ------------------------------------------------------------------------------- point 14


def test_unreadable_tls_certificate_fails_at_start_with_one_line(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    env = {
        **os.environ,
        # Nothing to reach: the worker must stop before it would talk to either.
        "TRACKER_WS_KAFKA_BROKER": f"kafka://127.0.0.1:{free_port()}",
        "TRACKER_WS_REDIS_URL": "memory://",
        "TRACKER_WS_DEV_MODE": "1",
        "TRACKER_WS_TLS_CERT": str(tmp_path / "missing.pem"),
        "TRACKER_WS_TLS_KEY": str(key),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tracker_ws", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = done.stdout + done.stderr
    expected = f"TRACKER_WS_TLS_CERT: cannot read '{tmp_path / 'missing.pem'}'"
    assert done.returncode == 2, out[-2000:]
    assert out.splitlines() == [f"tracker-ws: error: {expected}: No such file or directory"], out
