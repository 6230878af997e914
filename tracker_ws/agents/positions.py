"""gps-events → last_positions table → bus (ARCHITECTURE §1).

Runs on the owner of each partition. Malformed events are counted and dead-lettered; the
agent never stops on bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from tracker_ws.agents.publisher import Publisher
from tracker_ws.bus import Outgoing
from tracker_ws.domain import envelope
from tracker_ws.domain.errors import InvalidEvent
from tracker_ws.domain.events import load_json
from tracker_ws.domain.fixes import VehicleViews, parse_gps_record, record_status
from tracker_ws.domain.models import VehicleStatus
from tracker_ws.domain.status import still_since_of
from tracker_ws.domain.subscriptions import position_keys
from tracker_ws.kafka.stream import BatchStream
from tracker_ws.runtime import Runtime
from tracker_ws.tables.definitions import GPS_EVENTS, Tables, Topics, local_reader

log = logging.getLogger(__name__)

# Which instances want an event with these routing keys, seen from this partition.
Router = Callable[[Iterable[str], int], list[str]]


TAKE_MAX = 1000
TABLE_EVERY_S = 10.0


def table_router(rt: Runtime, tables: Tables) -> Router:
    """Routes by the `subscriptions` table (local dictionary reads, no network), plus this
    instance's own index, which knows about a new local subscriber before the table does."""
    # The table's store, read directly (local_reader): three or four keys per fix, most of
    # them subscribed by nobody.
    subs_table = tables.subscriptions
    me = rt.settings.instance_id

    suffixes: dict[int, str] = {}
    get: Callable[[str], Any] | None = None  # the store's get, resolved at the first fix

    def route(keys: Iterable[str], partition: int) -> list[str]:
        nonlocal get
        if not isinstance(keys, list | tuple):
            keys = list(keys)  # read twice below
        suffix = suffixes.get(partition)
        if suffix is None:
            suffix = suffixes[partition] = f"#p{partition}"
        if get is None:
            get = local_reader(subs_table)
        targets: set[str] | None = None
        for key in keys:
            entry = get(key + suffix)
            if entry:
                if targets is None:
                    targets = set(entry)
                else:
                    targets.update(entry)
        # This instance decides for itself from its own index: it knows about a new local
        # subscriber before the table does, and ignores its own stale entries.
        wanted = rt.hub.wants(keys)
        if targets is None:  # most fixes: nobody elsewhere, no set built
            return [me] if wanted and me not in rt.dead_instances else []
        if wanted:
            targets.add(me)
        else:
            targets.discard(me)
        if rt.dead_instances:
            targets -= rt.dead_instances
        return sorted(targets)

    return route


def partition_of(vehicle_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this key (murmur2, as producers do)."""
    return int(murmur2(vehicle_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter(
    error: str, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
) -> bytes:
    return orjson.dumps(
        {
            "error": error,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": key.decode("utf-8", "replace") if key else None,
            "value": value.decode("utf-8", "replace") if value else None,
            "at": int(time.time() * 1000),
        }
    )


def install(
    app: faust.App, rt: Runtime, topics: Topics, tables: Tables, publisher: Publisher, route: Router
) -> Any:
    last_positions = tables.last_positions
    metrics = rt.metrics
    offline_s = rt.settings.offline_after_s
    # Vehicles announced offline by the timer, so it says so once per silence.
    offline_announced: set[str] = set()
    partitions = rt.settings.partitions

    # The newest state per vehicle lives here; the changelog-backed table gets it when the
    # status changes or every TABLE_EVERY_S, which is all a new partition owner needs
    # (still-since and status) and spares a changelog message per fix.
    hot: dict[str, dict[str, Any]] = {}
    written: dict[str, float] = {}
    outcomes = {
        k: metrics.stream_events.labels(metrics.instance, GPS_EVENTS, k)
        for k in ("ok", "invalid", "out_of_order", "unregistered")
    }
    processing = metrics.processing.labels("gps")
    # Sorted groups and routing keys per vehicle, until its record or geozones change.
    views = VehicleViews()

    read_table: Callable[[str], Any] | None = None  # the store's get (see table_router)

    def latest(vid: str) -> dict[str, Any] | None:
        nonlocal read_table
        mine = hot.get(vid)
        if read_table is None:
            read_table = local_reader(last_positions)
        table: dict[str, Any] | None = read_table(vid)
        if mine is None or (table is not None and table["env"]["ts"] > mine["env"]["ts"]):
            return table  # a partition that came back to us: the table knows better
        return mine

    def handle(
        key: bytes | None, raw: bytes | None, partition: int, now: float, out: list[Outgoing]
    ) -> str:
        """One record: its outcome; what to publish goes to `out`."""
        try:
            rec = parse_gps_record(load_json(raw), key.decode() if key else None)
        except UnicodeDecodeError:
            raise InvalidEvent("key is not UTF-8") from None
        vid = rec.vehicle_id
        ts = rec.timestamp_ms
        prev = latest(vid)
        if prev is not None and prev["env"]["ts"] > ts:
            return "out_of_order"
        vehicle = rt.registry.get(vid)
        if vehicle is None:
            views.forget(vid)
            return "unregistered"
        still = still_since_of(prev["still"] if prev else None, rec.position["speed"], ts)
        status = record_status(rec, still, int(now * 1000), offline_s)
        view = views.get(vehicle, rt.geozones.zones_of(vid))
        env = envelope.fix_envelope(
            vid,
            vehicle.company_id,
            view.groups,
            vehicle.name,
            status,
            rec.position,
            ts,
            rec.sensors,
        )
        state = {"env": env, "still": still}
        hot[vid] = state
        if prev is None or prev["env"]["s"] != status or now - written.get(vid, 0) >= TABLE_EVERY_S:
            # use_partitioner: the table key is the vehicleId, as in gps-events.
            last_positions[vid] = state
            written[vid] = now
        offline_announced.discard(vid)
        out.append(
            Outgoing(route(view.keys, partition), envelope.encode(env), vehicle_id=vid, fix_ms=ts)
        )
        return "ok"

    async def positions(stream: Any) -> None:  # a BatchStream (the app's Stream class)
        """GPS fixes: validated, enriched, kept in last_positions, published (bad: the DLQ)"""
        assert isinstance(stream, BatchStream), "TrackerApp sets Stream=BatchStream"
        # Whatever is queued, at once, as raw records (kafka/stream.py): the work is per batch.
        async for batch in stream.batches(TAKE_MAX):
            started = time.perf_counter()
            now = time.time()
            counts = dict.fromkeys(outcomes, 0)
            out: list[Outgoing] = []
            for msg in batch:
                try:
                    outcome = handle(msg.key, msg.value, msg.partition, now, out)
                except InvalidEvent as exc:
                    outcome = "invalid"
                    await topics.gps_dlq.send(
                        key=msg.key,
                        value=dead_letter(
                            exc.message, msg.key, msg.value, msg.topic, msg.partition, msg.offset
                        ),
                    )
                counts[outcome] += 1
            publisher.add_many(out)
            for outcome, n in counts.items():
                if n:
                    outcomes[outcome].inc(n)
            processing.observe((time.perf_counter() - started) / max(1, len(batch)))

    agent = app.agent(topics.gps, name="tracker_ws.positions")(positions)

    async def offline_sweep() -> None:
        """A vehicle that stops reporting turns `offline` without a new fix to say so."""
        now = time.time() * 1000
        owned = set(rt.assigned_partitions())
        # What the table holds (vehicles of partitions we took over) and what we saw since.
        states = {**dict(last_positions.items()), **hot}
        for vid, entry in states.items():
            if entry is None or vid in offline_announced:
                continue
            if partition_of(vid, partitions) not in owned:
                continue  # its new owner announces it
            env = entry["env"]
            if now - env["ts"] <= offline_s * 1000 or env["s"] == VehicleStatus.OFFLINE.value:
                continue
            offline_announced.add(vid)
            env = {**env, "s": VehicleStatus.OFFLINE.value}
            vehicle = rt.registry.get(vid)
            if vehicle is None:
                continue
            keys = position_keys(vid, vehicle.company_id, vehicle.group_ids)
            targets = route(keys, partition_of(vid, partitions))
            # Status-only update: `p` unchanged, delivered in a positionBatch with the status.
            env["status_only"] = True
            publisher.add(Outgoing(targets, envelope.encode(env), vehicle_id=vid))

    app.timer(interval=max(1.0, min(30.0, offline_s / 10)))(offline_sweep)
    return agent
