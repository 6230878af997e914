"""WebSocket protocol codec (seed §3): strict parsing of client frames, encoding of server frames.

Pure code, no I/O. The parser runs for every inbound frame, so it uses plain dict/type checks
instead of a schema library. Encoders return the bytes to put on the wire; the hot-path ones
(`position`, `positionBatch`) splice pre-encoded JSON fragments so that a position is encoded
once per instance and reused for every recipient (ARCHITECTURE §4).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from tracker_ws.domain.errors import InvalidMessage
from tracker_ws.domain.models import (
    Ack,
    ClientMessage,
    FilterKind,
    GetState,
    GpsFix,
    Ping,
    Sensors,
    Subscribe,
    SubscriptionFilter,
    SubscriptionType,
    Unsubscribe,
)
from tracker_ws.domain.validate import is_uuid

__all__ = [
    "ALLOWED_FILTERS",
    "MAX_EVENT_ID",
    "encode_batch_fragment",
    "encode_connected",
    "encode_error",
    "encode_geo_event",
    "encode_notification",
    "encode_pong",
    "encode_position",
    "encode_position_batch",
    "encode_subscribed",
    "encode_system_alert",
    "encode_unsubscribed",
    "iso_from_ms",
    "now_ms",
    "parse_client_message",
    "parse_timestamp_ms",
    "position_dict",
]

_T = SubscriptionType
_F = FilterKind

#: Which filters make sense for which subscription type. Notifications and system alerts are
#: addressed to users/companies, not vehicles, so only `all` applies to them; maintenance events
#: have no position, so a geozone filter cannot match them.
ALLOWED_FILTERS: dict[SubscriptionType, frozenset[FilterKind]] = {
    _T.VEHICLES: frozenset({_F.ALL, _F.BY_IDS, _F.BY_GROUP, _F.BY_GEOZONE}),
    _T.GEO_EVENTS: frozenset({_F.ALL, _F.BY_IDS, _F.BY_GROUP, _F.BY_GEOZONE}),
    _T.NOTIFICATIONS: frozenset({_F.ALL}),
    _T.MAINTENANCE: frozenset({_F.ALL, _F.BY_IDS, _F.BY_GROUP}),
    _T.SYSTEM_ALERTS: frozenset({_F.ALL}),
}

#: Largest eventId a client may acknowledge: the seed client is JavaScript, whose numbers are
#: exact only up to 2**53.
MAX_EVENT_ID = 2**53

_SUBSCRIPTION_TYPES: dict[str, SubscriptionType] = {t.value: t for t in SubscriptionType}
_FILTER_KINDS: dict[str, FilterKind] = {k.value: k for k in FilterKind}
_SUBSCRIPTION_TYPE_NAMES = ", ".join(_SUBSCRIPTION_TYPES)
_FILTER_KIND_NAMES = ", ".join(_FILTER_KINDS)

# Top-level fields per message type (strict: anything else is rejected).
_MESSAGE_FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset({"type", "subscriptionType", "filter"}),
    "unsubscribe": frozenset({"type", "subscriptionType", "filter"}),
    "getState": frozenset({"type", "vehicleIds"}),
    "ping": frozenset({"type"}),
    "ack": frozenset({"type", "eventId"}),
}
_MESSAGE_TYPE_NAMES = ", ".join(_MESSAGE_FIELDS)

# Fields of a filter object per kind, besides `type`.
_FILTER_FIELDS: dict[FilterKind, frozenset[str]] = {
    _F.ALL: frozenset({"type"}),
    _F.BY_IDS: frozenset({"type", "ids"}),
    _F.BY_GROUP: frozenset({"type", "groupId"}),
    _F.BY_GEOZONE: frozenset({"type", "geozoneId"}),
}

_uuid_match = is_uuid


# ------------------------------------------------------------------------------ parsing helpers


def _kind(value: object) -> str:
    """JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object) -> str:
    """A short rendering of a client value: error messages must not echo megabytes back."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _uuid(value: object, field: str) -> str:
    if type(value) is str and _uuid_match(value):
        return value.lower()
    if isinstance(value, str):
        raise InvalidMessage(f"{field} must be a UUID string, got {_show(value)}")
    raise InvalidMessage(f"{field} must be a UUID string, got {_kind(value)}")


def _uuid_list(value: object, field: str, max_ids: int, *, allow_empty: bool) -> frozenset[str]:
    if type(value) is not list:
        raise InvalidMessage(f"{field} must be an array of UUID strings, got {_kind(value)}")
    n = len(value)
    if n == 0 and not allow_empty:
        raise InvalidMessage(f"{field} must not be empty")
    if n > max_ids:
        raise InvalidMessage(f"{field} has {n} ids; at most {max_ids} are allowed")
    out = []
    for i, item in enumerate(value):
        if type(item) is str and _uuid_match(item):
            out.append(item.lower())
        else:
            _uuid(item, f"{field}[{i}]")  # raises with the precise reason
    return frozenset(out)


def _check_fields(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    if obj.keys() <= allowed:
        return
    unknown = sorted(k for k in obj if k not in allowed)
    names = ", ".join(repr(k) for k in unknown[:5])
    raise InvalidMessage(f"unknown field{'s' if len(unknown) > 1 else ''} {names} in {where}")


def _subscription_type(msg: dict[str, Any]) -> SubscriptionType:
    if "subscriptionType" not in msg:
        raise InvalidMessage(f"field 'subscriptionType' is required in {msg['type']}")
    value = msg["subscriptionType"]
    st = _SUBSCRIPTION_TYPES.get(value) if type(value) is str else None
    if st is None:
        shown = _show(value) if isinstance(value, str) else _kind(value)
        raise InvalidMessage(
            f"field 'subscriptionType' must be one of {_SUBSCRIPTION_TYPE_NAMES}, got {shown}"
        )
    return st


def _filter(value: object, st: SubscriptionType, max_ids: int) -> SubscriptionFilter:
    if type(value) is not dict:
        raise InvalidMessage(f"field 'filter' must be an object, got {_kind(value)}")
    if "type" not in value:
        raise InvalidMessage(f"field 'filter.type' is required (one of {_FILTER_KIND_NAMES})")
    raw_kind = value["type"]
    kind = _FILTER_KINDS.get(raw_kind) if type(raw_kind) is str else None
    if kind is None:
        shown = _show(raw_kind) if isinstance(raw_kind, str) else _kind(raw_kind)
        raise InvalidMessage(
            f"field 'filter.type' must be one of {_FILTER_KIND_NAMES}, got {shown}"
        )
    _check_fields(value, _FILTER_FIELDS[kind], f"filter of type {kind.value}")
    if kind not in ALLOWED_FILTERS[st]:
        allowed = ", ".join(k.value for k in FilterKind if k in ALLOWED_FILTERS[st])
        raise InvalidMessage(
            f"filter {kind.value} does not apply to subscriptionType {st.value}"
            f" (allowed: {allowed})"
        )
    if kind is FilterKind.ALL:
        return SubscriptionFilter(kind)
    if kind is FilterKind.BY_IDS:
        if "ids" not in value:
            raise InvalidMessage("field 'filter.ids' is required for filter byIds")
        return SubscriptionFilter(
            kind, ids=_uuid_list(value["ids"], "filter.ids", max_ids, allow_empty=False)
        )
    key = "groupId" if kind is FilterKind.BY_GROUP else "geozoneId"
    if key not in value:
        raise InvalidMessage(f"field 'filter.{key}' is required for filter {kind.value}")
    return SubscriptionFilter(kind, target=_uuid(value[key], f"filter.{key}"))


# ------------------------------------------------------------------------------ message parsers


def _parse_subscribe(msg: dict[str, Any], max_ids: int) -> ClientMessage:
    st = _subscription_type(msg)
    if msg.get("filter") is None:
        # Present-but-null counts as missing: subscribing needs a filter (use {"type": "all"}).
        raise InvalidMessage('field \'filter\' is required in subscribe (e.g. {"type": "all"})')
    return Subscribe(st, _filter(msg["filter"], st, max_ids))


def _parse_unsubscribe(msg: dict[str, Any], max_ids: int) -> ClientMessage:
    st = _subscription_type(msg)
    raw = msg.get("filter")  # the seed client sends `filter: null` for "the whole type"
    return Unsubscribe(st, None if raw is None else _filter(raw, st, max_ids))


def _parse_get_state(msg: dict[str, Any], max_ids: int) -> ClientMessage:
    raw = msg.get("vehicleIds")  # the seed client sends `vehicleIds: null` for "everything"
    if raw is None:
        return GetState(None)
    return GetState(_uuid_list(raw, "vehicleIds", max_ids, allow_empty=True))


def _parse_ping(msg: dict[str, Any], max_ids: int) -> ClientMessage:
    return Ping()


def _parse_ack(msg: dict[str, Any], max_ids: int) -> ClientMessage:
    if "eventId" not in msg:
        raise InvalidMessage("field 'eventId' is required in ack")
    value = msg["eventId"]
    if type(value) is not int:  # excludes bool (an int subclass) and floats like 1.0
        raise InvalidMessage(f"field 'eventId' must be an integer, got {_kind(value)}")
    if not 0 <= value <= MAX_EVENT_ID:
        raise InvalidMessage(f"field 'eventId' must be between 0 and 2**53, got {value}")
    return Ack(value)


_PARSERS: dict[str, Callable[[dict[str, Any], int], ClientMessage]] = {
    "subscribe": _parse_subscribe,
    "unsubscribe": _parse_unsubscribe,
    "getState": _parse_get_state,
    "ping": _parse_ping,
    "ack": _parse_ack,
}


def parse_client_message(data: str | bytes, *, max_ids: int = 1000) -> ClientMessage:
    """Parse and validate one client frame; raise InvalidMessage naming the offending field."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"message is not valid JSON: {exc}") from None
    if type(msg) is not dict:
        raise InvalidMessage(f"message must be a JSON object, got {_kind(msg)}")
    if "type" not in msg:
        raise InvalidMessage(f"field 'type' is required (one of {_MESSAGE_TYPE_NAMES})")
    mtype = msg["type"]
    parser = _PARSERS.get(mtype) if type(mtype) is str else None
    if parser is None:
        shown = _show(mtype) if isinstance(mtype, str) else _kind(mtype)
        raise InvalidMessage(f"field 'type' must be one of {_MESSAGE_TYPE_NAMES}, got {shown}")
    _check_fields(msg, _MESSAGE_FIELDS[mtype], f"{mtype} message")
    return parser(msg, max_ids)


# ------------------------------------------------------------------------------ time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The range iso_from_ms can render (datetime's years 1..9999).
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def now_ms() -> int:
    return int(time.time() * 1000)


@lru_cache(maxsize=4096)
def _iso_second(sec: int) -> str:
    # Cached per second: a flush window stamps thousands of frames within the same few seconds.
    d = _EPOCH + timedelta(seconds=sec)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def iso_from_ms(ms: int) -> str:
    """Epoch milliseconds -> `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC)."""
    sec, milli = divmod(ms, 1000)  # floor division keeps pre-1970 values correct
    return _iso_second(sec) + _MILLI_SUFFIX[milli]


_MILLI_SUFFIX = [f".{milli:03d}Z" for milli in range(1000)]  # a lookup beats formatting


def parse_timestamp_ms(value: object, *, field: str = "timestamp") -> int:
    """ISO-8601 with `Z` or an offset (fraction optional), or epoch milliseconds -> epoch ms.

    A string without an offset is rejected: guessing its zone would silently shift positions by
    hours. Sub-millisecond precision is truncated (floor).
    """
    if isinstance(value, str):
        if len(value) > 64:
            raise InvalidMessage(f"{field} is not an ISO-8601 timestamp: {_show(value)}")
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidMessage(f"{field} is not an ISO-8601 timestamp: {_show(value)}") from None
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise InvalidMessage(f"{field} has no UTC offset (use Z or ±HH:MM): {_show(value)}")
        delta = dt - _EPOCH
        ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    elif isinstance(value, bool):
        raise InvalidMessage(
            f"{field} must be an ISO-8601 string or epoch milliseconds, got boolean"
        )
    elif isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"{field} must be a finite number, got {value}")
        ms = math.floor(value)
    else:
        raise InvalidMessage(
            f"{field} must be an ISO-8601 string or epoch milliseconds, got {_kind(value)}"
        )
    if not _MIN_MS <= ms <= _MAX_MS:
        raise InvalidMessage(f"{field} is out of range: {_show(value)}")
    return ms


# ------------------------------------------------------------------------------ encoding


# Every server message type; a frame's type is read back from its bytes for the metrics.
SERVER_MESSAGE_TYPES = frozenset(
    {
        "connected",
        "subscribed",
        "unsubscribed",
        "pong",
        "error",
        "position",
        "positionBatch",
        "geoEvent",
        "notification",
        "systemAlert",
    }
)
_TYPE_PREFIX = b'{"type":"'


def message_type_of(frame: bytes) -> str:
    """The `type` of a frame these encoders made (they all start with it); "other" for
    anything else, so a metric label stays within SERVER_MESSAGE_TYPES and "other"."""
    if frame.startswith(_TYPE_PREFIX):
        end = frame.find(b'"', 9)
        if end > 9:
            mtype = frame[9:end].decode("ascii", "replace")
            if mtype in SERVER_MESSAGE_TYPES:
                return mtype
    return "other"


def _head(mtype: bytes, event_id: int, ts_ms: int | None) -> bytes:
    """`{"type":…,"eventId":…,"timestamp":"…"` — the common prefix of spliced frames."""
    ts = iso_from_ms(now_ms() if ts_ms is None else ts_ms)
    return b'{"type":"%s","eventId":%d,"timestamp":"%s"' % (mtype, event_id, ts.encode())


def _frame(mtype: str, event_id: int, ts_ms: int | None, fields: dict[str, Any]) -> bytes:
    frame: dict[str, Any] = {
        "type": mtype,
        "eventId": event_id,
        "timestamp": iso_from_ms(now_ms() if ts_ms is None else ts_ms),
    }
    frame.update(fields)
    return orjson.dumps(frame)


def _control(mtype: str, ts_ms: int | None, fields: dict[str, Any]) -> bytes:
    # Control messages are outside the event stream: eventId 0 never moves the client's
    # max(eventId) recovery point.
    return _frame(mtype, 0, ts_ms, fields)


def encode_connected(
    connection_id: str,
    *,
    server_time_ms: int,
    recovered: bool | None = None,
    restored_subscriptions: int | None = None,
    reason: str | None = None,
    last_event_id: int | None = None,
) -> bytes:
    fields: dict[str, Any] = {
        "connectionId": connection_id,
        "serverTime": iso_from_ms(server_time_ms),
    }
    if recovered is not None:
        fields["recovered"] = recovered
    if restored_subscriptions is not None:
        fields["restoredSubscriptions"] = restored_subscriptions
    if reason is not None:
        fields["reason"] = reason
    if last_event_id is not None:
        fields["lastEventId"] = last_event_id
    return _control("connected", server_time_ms, fields)


def encode_subscribed(
    subscription_type: SubscriptionType,
    count: int,
    *,
    denied: Sequence[str] = (),
    ts_ms: int | None = None,
) -> bytes:
    fields: dict[str, Any] = {"subscriptionType": subscription_type.value, "count": count}
    if denied:
        fields["denied"] = list(denied)
    return _control("subscribed", ts_ms, fields)


def encode_unsubscribed(
    subscription_type: SubscriptionType, count_removed: int, *, ts_ms: int | None = None
) -> bytes:
    return _control(
        "unsubscribed",
        ts_ms,
        {"subscriptionType": subscription_type.value, "count": count_removed},
    )


def encode_pong(*, ts_ms: int | None = None) -> bytes:
    return _control("pong", ts_ms, {})


_ERROR_RESERVED = frozenset({"type", "eventId", "timestamp", "code", "message"})


def encode_error(code: str, message: str, *, ts_ms: int | None = None, **extra: object) -> bytes:
    """`error` frame; `extra` adds fields such as `denied=[…]` or `retryAfter=0.5`."""
    if not extra.keys().isdisjoint(_ERROR_RESERVED):
        raise ValueError(f"extra fields may not override {sorted(extra.keys() & _ERROR_RESERVED)}")
    return _control("error", ts_ms, {"code": code, "message": message, **extra})


def position_dict(fix: GpsFix) -> dict[str, Any]:
    """The seed `Position` object of a fix (encode it once, then splice the bytes)."""
    pos: dict[str, Any] = {
        "lat": fix.lat,
        "lon": fix.lon,
        "speed": fix.speed,
        "course": fix.course,
    }
    if fix.altitude is not None:
        pos["altitude"] = fix.altitude
    if fix.satellites is not None:
        pos["satellites"] = fix.satellites
    pos["timestamp"] = iso_from_ms(fix.timestamp_ms)
    return pos


def position_heads(vehicle_id: str, vehicle_name: str) -> tuple[bytes, bytes]:
    """The per-vehicle constant parts of position frames, worth caching per vehicle:
    (`,"vehicleId":…,"position":` of a `position` frame, `{"vehicleId":…,"vehicleName":…,
    "position":` of a batch fragment)."""
    vid = orjson.dumps(vehicle_id)
    return (
        b',"vehicleId":' + vid + b',"position":',
        b'{"vehicleId":' + vid + b',"vehicleName":' + orjson.dumps(vehicle_name) + b',"position":',
    )


def splice_position(event_id: int, stamp: bytes, head: bytes, position_json: bytes) -> bytes:
    """`position` frame from an ISO timestamp (bytes), position_heads()[0] and an encoded
    position object."""
    return b'{"type":"position","eventId":%d,"timestamp":"%s"%s%s}' % (
        event_id,
        stamp,
        head,
        position_json,
    )


def splice_fragment(head: bytes, position_json: bytes, status: bytes, sensors: bytes) -> bytes:
    """Batch fragment from position_heads()[1], an encoded position, status_json() and
    sensors_json() (b"" for none)."""
    return b"".join((head, position_json, status, sensors, b"}"))


@lru_cache(maxsize=64)
def status_json(status: str) -> bytes:
    return b',"status":' + orjson.dumps(status)


def sensors_json(sensors: Sensors | None) -> bytes:
    return b"" if sensors is None else b',"sensors":' + orjson.dumps(sensors.to_json())


# Key orders Sensors.to_json() produces (the slots order, Nones left out).
_SENSOR_ORDERS = frozenset(
    tuple(f for bit, f in enumerate(Sensors.__slots__) if mask >> bit & 1)
    for mask in range(1 << len(Sensors.__slots__))
)


def sensors_json_of(raw: dict[str, Any]) -> bytes:
    """sensors_json(Sensors(**raw)) for the sensors of an envelope (Sensors.to_json output
    as it crossed Redis): dumped as they are when already in that shape, which they are."""
    if tuple(raw) in _SENSOR_ORDERS and None not in raw.values():
        return b',"sensors":' + orjson.dumps(raw)
    return sensors_json(Sensors(**raw))  # any other shape: the full rule


def encode_position(
    event_id: int, vehicle_id: str, position_json: bytes, *, ts_ms: int | None = None
) -> bytes:
    """`position` frame spliced around an already-encoded position object."""
    stamp = iso_from_ms(now_ms() if ts_ms is None else ts_ms).encode()
    return splice_position(event_id, stamp, position_heads(vehicle_id, "")[0], position_json)


def encode_batch_fragment(
    vehicle_id: str,
    vehicle_name: str,
    position_json: bytes,
    status: str,
    sensors: Sensors | None,
) -> bytes:
    """One element of `positionBatch.positions` (seed VehiclePosition), as JSON bytes."""
    return splice_fragment(
        position_heads(vehicle_id, vehicle_name)[1],
        position_json,
        status_json(str(status)),
        sensors_json(sensors),
    )


def encode_position_batch(
    event_id: int, fragments: Sequence[bytes], *, ts_ms: int | None = None
) -> bytes:
    """`positionBatch` frame from fragments made by encode_batch_fragment."""
    return b"".join(
        (_head(b"positionBatch", event_id, ts_ms), b',"positions":[', b",".join(fragments), b"]}")
    )


def encode_geo_event(event_id: int, event: dict[str, Any], *, ts_ms: int | None = None) -> bytes:
    return _frame("geoEvent", event_id, ts_ms, {"event": event})


def encode_notification(
    event_id: int, notification: dict[str, Any], *, ts_ms: int | None = None
) -> bytes:
    return _frame("notification", event_id, ts_ms, {"notification": notification})


def encode_system_alert(
    event_id: int, level: str, message: str, *, ts_ms: int | None = None
) -> bytes:
    return _frame("systemAlert", event_id, ts_ms, {"level": str(level), "message": message})
