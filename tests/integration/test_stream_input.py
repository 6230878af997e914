"""Malformed stream input: bad gps-events records are dead-lettered with a reason and never
stop the flow of good fixes; a bad vehicle-registry record is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.client import WsClient
from tests.support.fleet import Company, FleetDriver, fix, new_id, wait_registry
from tests.support.streams import read_dead_letters, stream_count
from tracker_ws_dev.stack import Worker

GPS = "gps-events"
DLQ = "gps-events-dlq"
REGISTRY = "vehicle-registry"


@dataclass
class Bad:
    name: str
    key: bytes | None
    value: bytes | None
    reason: tuple[str, ...]  # substrings of the dead letter's `error`
    marker: str
    partition: int = -1
    offset: int = -1


def _bad_records(vid: str) -> list[Bad]:
    """One of each kind of malformed record; each carries a unique marker in key or value."""
    k = vid.encode()
    out: list[Bad] = []

    def add(name: str, key: bytes | None, value: Any, reason: tuple[str, ...], marker: str) -> None:
        raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        out.append(Bad(name, key, raw, reason, marker))

    def m() -> str:
        return f"dlq-marker-{uuid.uuid4().hex}"

    # Bad fixes for the subscribed vehicle carry latitudes no good fix uses (66.x): if one were
    # accepted, the client would see it.
    def bad_fix(marker: str, **kw: Any) -> dict[str, Any]:
        return {**fix(vid, lat=66.6), "marker": marker, **kw}

    x = m()
    add("not-json", k, b"not json at all " + x.encode(), ("not JSON",), x)
    x = m()
    add("json-array", k, [x, fix(vid, lat=66.6)], ("JSON object",), x)
    x = m()
    no_vid = bad_fix(x)
    del no_vid["vehicleId"]
    add("missing-vehicleId", k, no_vid, ("vehicleId",), x)
    x = m()
    add("non-uuid-vehicleId", k, bad_fix(x, vehicleId="truck-" + x), ("vehicleId", "UUID"), x)
    x = m()
    add("latitude-200", k, bad_fix(x, latitude=200), ("latitude", "200"), x)
    x = m()
    add("speed-string", k, bad_fix(x, speed="fast"), ("speed", "fast"), x)
    x = m()
    add("timestamp-yesterday", k, bad_fix(x, timestamp="yesterday"), ("timestamp",), x)
    x = m()
    add(
        "timestamp-without-offset",
        k,
        bad_fix(x, timestamp="2025-01-20T10:00:00"),
        ("timestamp", "offset"),
        x,
    )
    x = m()
    add("sensors-not-object", k, bad_fix(x, sensors="full"), ("sensors",), x)
    x = m()
    add("oversize-value", k, bad_fix(x, pad="p" * (70 * 1024)), ("exceeds",), x)
    x = m()
    add("key-mismatch", ("key-" + x).encode(), bad_fix(x), ("key", "does not match"), x)
    x = m()
    add("empty-value", ("empty-" + x).encode(), b"", ("not JSON",), x)
    x = m()
    add("non-utf8-key", b"\xff\xfe" + x.encode(), fix(new_id(), lat=66.6), ("UTF-8",), x)
    return out


def _positions_of(client: WsClient, vid: str) -> list[float]:
    return [p["lat"] for _, v, p in client.positions() if v == vid]


def _has_fix(m: dict[str, Any], vid: str, lat: float) -> bool:
    """`m` is a position (or a positionBatch with one) of `vid` at latitude `lat`."""
    if m.get("type") == "position":
        return bool(m["vehicleId"] == vid and m["position"]["lat"] == lat)
    if m.get("type") == "positionBatch" and m.get("eventId"):
        return any(p["vehicleId"] == vid and p["position"]["lat"] == lat for p in m["positions"])
    return False


async def test_malformed_gps_records_are_dead_lettered_and_good_fixes_keep_flowing(
    worker: Worker, fleet: FleetDriver, topics: str
) -> None:
    before_registry = worker.health()["registryVehicles"]
    company = await fleet.company(1)
    wait_registry(worker, before_registry + 1)
    (vid,) = company.vehicles
    invalid_before = await asyncio.to_thread(stream_count, worker, GPS, "invalid")

    bad = _bad_records(vid)
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        assert sub["type"] == "subscribed", sub
        base_ts = int(time.time() * 1000)
        expected: list[float] = []

        async def good(i: int) -> None:
            lat = 10.0 + i
            await fleet.send_fix(vid, lat=lat, ts_ms=base_ts + i * 1000)
            expected.append(lat)
            await client.wait_for(
                lambda m: _has_fix(m, vid, lat),
                10,
                f"good fix #{i} (lat {lat}) after the bad records before it",
            )

        await good(0)  # before any bad record
        for i, record in enumerate(bad, start=1):
            meta = await fleet.producer.send_and_wait(GPS, key=record.key, value=record.value)
            record.partition, record.offset = meta.partition, meta.offset
            await good(i)  # between, and finally after, the bad records
        # Exactly the good fixes, each once, in the order produced; none of the bad ones.
        assert _positions_of(client, vid) == expected
        assert client.vehicles_seen() == {vid}
    finally:
        await client.close()

    letters = await read_dead_letters(topics, DLQ, {b.marker for b in bad}, timeout=20)
    missing = [b.name for b in bad if b.marker not in letters]
    assert not missing, f"not dead-lettered: {missing}"
    for b in bad:
        letter = letters[b.marker]
        assert isinstance(letter.get("error"), str) and letter["error"], (b.name, letter)
        for part in b.reason:
            assert part in letter["error"], (b.name, part, letter["error"])
        assert letter["topic"] == GPS, (b.name, letter)
        assert (letter["partition"], letter["offset"]) == (b.partition, b.offset), b.name

    invalid_after = await asyncio.to_thread(stream_count, worker, GPS, "invalid")
    assert invalid_after >= invalid_before + len(bad), (invalid_before, invalid_after)


async def test_null_gps_value_is_dead_lettered(
    worker: Worker, fleet: FleetDriver, topics: str
) -> None:
    """A tombstone (null value) on gps-events is not a fix: dead-lettered, not a crash."""
    marker = f"dlq-marker-{uuid.uuid4().hex}"
    before_registry = worker.health()["registryVehicles"]
    company = await fleet.company(1)
    wait_registry(worker, before_registry + 1)
    (vid,) = company.vehicles
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        await fleet.send_raw(GPS, ("null-" + marker).encode(), None)
        await fleet.send_fix(vid, lat=12.5)
        await client.wait_for(lambda m: _has_fix(m, vid, 12.5), 10, "fix after null")
    finally:
        await client.close()
    letters = await read_dead_letters(topics, DLQ, {marker}, timeout=20)
    assert marker in letters, "null value not dead-lettered"
    assert "JSON object" in letters[marker]["error"]
    assert letters[marker]["value"] is None


async def test_malformed_registry_record_is_skipped_and_next_one_registers(
    worker: Worker, fleet: FleetDriver
) -> None:
    company = Company()
    vid = new_id()
    other = new_id()
    key = vid.encode()  # same key, same partition: the bad records are read before the good one
    bad_values: list[bytes] = [
        b"{broken json",
        orjson.dumps([vid, company.company_id]),
        orjson.dumps({"vehicleId": vid, "companyId": "acme-corp", "name": "bad"}),
        orjson.dumps({"vehicleId": other, "companyId": "acme-corp", "name": "bad other"}),
        orjson.dumps({"vehicleId": "truck-1", "companyId": company.company_id}),
        orjson.dumps({"vehicleId": vid, "companyId": company.company_id, "groupIds": "g-1"}),
        orjson.dumps({"vehicleId": vid, "companyId": company.company_id, "name": 42}),
    ]
    before = worker.health()["registryVehicles"]
    invalid_before = await asyncio.to_thread(stream_count, worker, REGISTRY, "invalid")
    for value in bad_values:
        await fleet.send_raw(REGISTRY, key, value)
    await fleet.register(vid, company.company_id)
    wait_registry(worker, before + 1)
    # Only the good record registered a vehicle (the bad ones were read first, same partition).
    assert worker.health()["registryVehicles"] == before + 1
    invalid_after = await asyncio.to_thread(stream_count, worker, REGISTRY, "invalid")
    assert invalid_after >= invalid_before + len(bad_values), (invalid_before, invalid_after)

    # It registered under the right company: its users may subscribe and get its fixes.
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        assert sub == {**sub, "type": "subscribed", "count": 1}, sub
        denied = await client.subscribe("vehicles", {"type": "byIds", "ids": [other]})
        assert denied["type"] == "error" and denied["code"] == "SUBSCRIPTION_DENIED", denied
        await fleet.send_fix(vid, lat=33.3)
        await client.wait_for(lambda m: _has_fix(m, vid, 33.3), 10, "registered fix")
    finally:
        await client.close()


async def test_uppercase_uuid_key_equal_to_its_vehicle_id_is_accepted(
    worker: Worker, fleet: FleetDriver, topics: str
) -> None:
    """Key and vehicleId are the same upper-case UUID string: a valid fix. UUIDs are
    case-insensitive and the value's vehicleId is accepted and lower-cased, so the key check
    must compare canonical forms too."""
    before_registry = worker.health()["registryVehicles"]
    company = await fleet.company(1)
    wait_registry(worker, before_registry + 1)
    (vid,) = company.vehicles
    marker = f"dlq-marker-{uuid.uuid4().hex}"
    upper = vid.upper()
    client = await WsClient.connect(worker.ws_url, company.token())
    try:
        await client.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
        value = {**fix(upper, lat=44.4), "marker": marker}
        await fleet.send_raw(GPS, upper.encode(), orjson.dumps(value))
        # Whichever comes first: the fix reaching the subscriber, or its dead letter.
        delivered = asyncio.create_task(
            client.wait_for(lambda m: _has_fix(m, vid, 44.4), 15, "the upper-case-keyed fix")
        )
        dead = asyncio.create_task(read_dead_letters(topics, DLQ, {marker}, timeout=15))
        done, _ = await asyncio.wait({delivered, dead}, return_when=asyncio.FIRST_COMPLETED)
        for task in (delivered, dead):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, AssertionError):
                    await task
        if dead in done:
            letter = dead.result().get(marker)
            assert letter is None, f"dead-lettered: {letter['error']}"
        delivered.result()
    finally:
        await client.close()
