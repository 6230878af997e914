"""Issue 10.6: an alert for N companies costs one stored copy and work linear in N, N is
capped (TRACKER_WS_MAX_BROADCAST_TARGETS, 1000), and targeted alerts still recover exactly.
(Before: each target's history stream got the whole payload — 20,000 ids, 31.8 s of Lua,
15 GB of Redis.)"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import orjson
import redis as redis_sync

from tests.support.client import WsClient
from tests.support.cluster import admin_token, ahttp, entry_values, until
from tests.support.fleet import Company, new_id
from tracker_ws_dev.stack import Worker

CAP = 1000  # the default TRACKER_WS_MAX_BROADCAST_TARGETS


async def broadcast(worker: Worker, message: str, targets: list[str]) -> tuple[int, Any]:
    return await ahttp(
        "POST",
        worker.url + "/api/v1/ws/broadcast",
        token=admin_token(),
        body={"level": "info", "message": message, "targetCompanyIds": targets},
    )


def copies(r: redis_sync.Redis, marker: str) -> tuple[int, int]:
    """(history entries holding `marker`, bytes of the streams holding them)."""
    n = size = 0
    for key in r.scan_iter(match="ws:history:*", count=1000):
        if key.endswith(b":floor"):
            continue
        held = sum(1 for e in entry_values(r.xrange(key), b"e") if marker.encode() in e)
        if held:
            n += held
            size += int(r.memory_usage(key) or 0)
    return n, size


async def test_broadcast_over_the_cap_is_refused(worker: Worker) -> None:
    status, body = await broadcast(worker, "too many", [new_id() for _ in range(CAP + 1)])
    assert status == 400 and body["code"] == "TOO_MANY_TARGETS", (status, body)
    status, body = await broadcast(worker, "just enough", [new_id() for _ in range(CAP)])
    assert status == 200, (status, body)


def stream_outcomes(worker: Worker, outcome: str) -> float:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ws_stream_events_total{")
        and 'topic="redis:events:system-alerts"' in line
        and f'outcome="{outcome}"' in line
    )


async def test_stream_alert_over_the_cap_is_a_counted_skip(worker: Worker, redis_url: str) -> None:
    r = redis_sync.Redis.from_url(redis_url)
    marker = f"too many {new_id()}"
    skipped = stream_outcomes(worker, "too_many_targets")
    try:
        targets = [new_id() for _ in range(CAP + 1)]
        value = {"level": "info", "message": marker, "targetCompanyIds": targets}
        assert r.publish("events:system-alerts", orjson.dumps(value)) >= 1
        await until(
            lambda: stream_outcomes(worker, "too_many_targets") == skipped + 1,
            15,
            "the over-the-cap alert counted as skipped",
        )
        assert copies(r, marker)[0] == 0
        log = worker.process.read_log()
        assert log.count(f"{CAP + 1} targetCompanyIds exceed") == 1, log[-2000:]
        assert (await ahttp("GET", worker.url + "/health"))[0] == 200
    finally:
        r.close()


async def test_targeted_broadcast_is_stored_once_and_recovers_exactly(
    worker: Worker, redis_url: str
) -> None:
    r = redis_sync.Redis.from_url(redis_url)
    target, bystander = Company(), Company()
    users = {target.company_id: new_id(), bystander.company_id: new_id()}
    # Each user connects once and leaves: a saved state to recover from.
    for company in (target, bystander):
        c = await WsClient.connect(worker.ws_url, company.token(users[company.company_id]))
        await c.subscribe("systemAlerts", {"type": "all"})
        await c.close()

    marker = f"for {CAP} companies {new_id()}"
    others = [new_id() for _ in range(CAP - 1)]
    memory_before = int(r.info("memory")["used_memory"])
    started = time.monotonic()
    status, body = await broadcast(worker, marker, [target.company_id, *others])
    took = time.monotonic() - started
    assert status == 200, body
    memory_added = int(r.info("memory")["used_memory"]) - memory_before
    alert_id = int(body["eventId"])
    held, stream_bytes = copies(r, marker)
    print(
        f"\nbroadcast to {CAP} companies: {held} stored copies, {stream_bytes} bytes of history "
        f"streams holding it, Redis used_memory +{memory_added} bytes, {took * 1000:.0f} ms"
    )
    assert held == 1, f"{held} copies of one alert in history"
    assert stream_bytes < 1_000_000

    # A later alert for both companies: once a client sees it, anything it was owed before
    # has arrived (events replay in eventId order), so the bystander's check is exact.
    status, body = await broadcast(worker, "later", [target.company_id, bystander.company_id])
    assert status == 200, body
    later_id = int(body["eventId"])

    def alerts(client: WsClient) -> list[tuple[int, str]]:
        return [(m["eventId"], m["message"]) for m in client.received if m["type"] == "systemAlert"]

    for company, expected in (
        (target, [(alert_id, marker), (later_id, "later")]),
        (bystander, [(later_id, "later")]),
    ):
        c = await WsClient.connect(
            worker.ws_url,
            company.token(users[company.company_id]),
            query=f"lastEventId={alert_id - 1}",
        )
        try:
            assert c.received[0]["recovered"] is True, c.received[0]
            await c.wait_event_id_at_least(later_id)
            assert alerts(c) == expected, c.received
        finally:
            await c.close()
    r.close()
