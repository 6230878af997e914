"""Tables and topics of the app, declared in one place so agents and tests agree on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import faust

GPS_EVENTS = "gps-events"
GPS_EVENTS_DLQ = "gps-events-dlq"
VEHICLE_REGISTRY = "vehicle-registry"
SUBSCRIPTION_CHANGES = "ws-subscription-changes"
EVENT_TOPICS = ("geo-events", "notifications", "maintenance-events", "system-alerts")


def topic_plan(partitions: int) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Every topic the service reads or writes, with partitions and configs. Created before
    anything is sent: a topic the broker auto-creates on first use gets the broker's default
    partition count, which breaks co-partitioning with gps-events."""
    names = [GPS_EVENTS, GPS_EVENTS_DLQ, VEHICLE_REGISTRY, SUBSCRIPTION_CHANGES]
    for topic in EVENT_TOPICS:
        names += [topic, f"{topic}-dlq"]
    return {name: partitions for name in names}, {VEHICLE_REGISTRY: {"cleanup.policy": "compact"}}


@dataclass
class Topics:
    gps: Any
    gps_dlq: Any
    registry: Any
    subscription_changes: Any


@dataclass
class Tables:
    # vehicleId -> {"env": position envelope, "still": still-since ms or None}
    last_positions: Any
    # "{routing key}#p{partition}" -> {instanceId: 1}
    subscriptions: Any


def declare(app: faust.App, partitions: int) -> tuple[Topics, Tables]:
    topics = Topics(
        gps=app.topic(
            GPS_EVENTS,
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            key_serializer="raw",
            partitions=partitions,
        ),
        gps_dlq=app.topic(
            GPS_EVENTS_DLQ, value_serializer="raw", key_serializer="raw", partitions=partitions
        ),
        registry=app.topic(
            VEHICLE_REGISTRY,
            value_serializer="raw",
            key_serializer="raw",
            partitions=partitions,
            compacting=True,
        ),
        subscription_changes=app.topic(
            SUBSCRIPTION_CHANGES,
            value_serializer="raw",
            key_serializer="raw",
            partitions=partitions,
        ),
    )
    tables = Tables(
        last_positions=app.Table(
            "last_positions",
            default=None,
            partitions=partitions,
            key_type=str,
            # Keyed by vehicleId like gps-events, so the default partitioner puts each entry on
            # its vehicle's partition: writes need no current event (batched agent, timers).
            use_partitioner=True,
            help="vehicleId -> its last position envelope and since when it stands still "
            "(status, offline detection, getState)",
        ),
        subscriptions=app.Table(
            "subscriptions",
            default=None,
            partitions=partitions,
            key_type=str,
            help="routing key#partition -> the instances with clients interested in it",
        ),
    )
    return topics, tables


def local_reader(table: Any) -> Callable[[str], Any]:
    """`get` of a table's local store without the table's machinery: Table.get and the
    store's Mapping.get raise and catch a KeyError for every missing key and call the
    sensors; the in-memory store keeps a plain dict (`Store.data`), read directly. A table
    builds its store once and the store its dict once (both only cleared later): the
    returned function can be kept for the table's life."""
    store = table.data
    plain = getattr(store, "data", None)
    if isinstance(plain, dict):
        return plain.get
    return cast(Callable[[str], Any], store.get)
