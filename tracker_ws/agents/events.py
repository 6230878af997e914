"""Geofence events, notifications, maintenance events and system alerts (seed §2.1 types).

Two inputs, one path: the Kafka topics and the Redis channels `events:{type}` that other
services publish on today. Both are validated by the same parsers and published through the
bus with a dedupe id, so an event that arrives both ways (or that several instances read from
Redis) gets one eventId and is delivered once. These events are few next to positions, so
each goes to every live instance and each instance filters with its own index: no routing
table is needed, and a subscriber anywhere sees them in global eventId order.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from tracker_ws.agents.positions import dead_letter
from tracker_ws.agents.publisher import Publisher
from tracker_ws.bus import Outgoing
from tracker_ws.bus.base import ALL_INSTANCES
from tracker_ws.domain import envelope
from tracker_ws.domain.errors import InvalidEvent, TooManyTargets
from tracker_ws.domain.events import ALIASES, PARSERS, check_alert_targets, load_json
from tracker_ws.domain.protocol import now_ms
from tracker_ws.runtime import Runtime

log = logging.getLogger(__name__)


class EventIngest:
    def __init__(self, rt: Runtime, publisher: Publisher) -> None:
        self.rt = rt
        self.publisher = publisher

    def submit(self, kind: str, key: bytes | None, value: bytes | None) -> None:
        """Validate and hand one event to the publisher; raises InvalidEvent."""
        parser = PARSERS[kind]
        try:
            key_text = key.decode() if key else None
        except UnicodeDecodeError:
            raise InvalidEvent("message key is not UTF-8") from None
        env, dedupe = parser(load_json(value), key_text)
        if env["t"] == envelope.ALERT:
            check_alert_targets(env["companies"], self.rt.settings.max_broadcast_targets)
        env["ts"] = now_ms()
        # Every instance, resolved atomically by the bus: each filters with its own index.
        targets = [ALL_INSTANCES]
        self.publisher.add(
            Outgoing(
                targets,
                envelope.encode(env),
                dedupe_id=dedupe,
                history=envelope.history_streams(env),
            )
        )

    def from_redis(self, channel_type: str, data: bytes) -> None:
        """Bus callback for `events:{type}`; a bad event is counted and skipped."""
        kind = ALIASES.get(channel_type, channel_type)
        source = f"redis:events:{channel_type}"
        if kind not in PARSERS:
            self.rt.metrics.stream(source, "unknown_type")
            return
        try:
            self.submit(kind, None, data)
            self.rt.metrics.stream(source, "ok")
        except InvalidEvent as exc:
            self.rt.metrics.stream(source, outcome_of(exc))
            log.warning("skipping invalid event on events:%s: %s", channel_type, exc.message)


def outcome_of(exc: InvalidEvent) -> str:
    """The ws_stream_events_total outcome of a skipped event."""
    return "too_many_targets" if isinstance(exc, TooManyTargets) else "invalid"


def install(app: faust.App, rt: Runtime, ingest: EventIngest, partitions: int) -> list[Any]:
    agents = []
    for kind in PARSERS:
        topic = app.topic(kind, value_serializer="raw", key_serializer="raw", partitions=partitions)
        dlq = app.topic(
            f"{kind}-dlq", value_serializer="raw", key_serializer="raw", partitions=partitions
        )
        agents.append(
            app.agent(topic, name=f"tracker_ws.events.{kind}")(_agent(rt, ingest, kind, dlq))
        )
    return agents


EVENT_HELP = {
    "geo-events": "geofence entries and exits",
    "notifications": "notifications for one user",
    "maintenance-events": "maintenance notices for a vehicle's company",
    "system-alerts": "system alerts for every company or the listed ones",
}


def _agent(rt: Runtime, ingest: EventIngest, kind: str, dlq: Any) -> Any:
    async def consume(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                ingest.submit(kind, event.key, event.value)
            except InvalidEvent as exc:
                rt.metrics.stream(kind, outcome_of(exc))
                if isinstance(exc, TooManyTargets):  # rare and costly: worth a line each
                    log.warning("skipping %s event: %s", kind, exc.message)
                await dlq.send(
                    key=event.key,
                    value=dead_letter(
                        exc.message, event.key, event.value, msg.topic, msg.partition, msg.offset
                    ),
                )
                continue
            # Replayable events are in Redis before the offset moves on: a crash here
            # re-reads the event and the dedupe id drops the repeat.
            await ingest.publisher.flush()
            rt.metrics.stream(kind, "ok")

    consume.__name__ = f"consume_{kind.replace('-', '_')}"
    consume.__doc__ = (
        f"{EVENT_HELP.get(kind, kind)}: validated, given an eventId, kept for replay and "
        f"delivered to every instance (invalid ones to {kind}-dlq)"
    )
    return consume
