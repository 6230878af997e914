"""Small validators shared by the protocol codec, the stream parsers and the admin API."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from tracker_ws.domain.errors import InvalidMessage, TrackerError

# Only the canonical 8-4-4-4-12 form (any case). `uuid.UUID()` would also accept braces,
# `urn:uuid:` prefixes, misplaced hyphens and surrounding whitespace, none of which a client
# or producer has a reason to send; a regex is also several times faster.
UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
is_uuid = UUID_RE.fullmatch


def uuid_str(value: object, field: str, error: type[TrackerError]) -> str:
    """Canonical lower-case UUID string, or `error` naming the field."""
    if type(value) is str and is_uuid(value):
        return value.lower()
    raise error(f"{field} must be a UUID string, got {value!r:.60}")


def number(value: object, field: str, error: type[TrackerError], lo: float, hi: float) -> float:
    # Fast path (every field of every fix): a plain int or float within bounds. NaN and the
    # infinities fail the comparison and get the full check below; bool is neither type.
    kind = type(value)
    if (kind is float or kind is int) and lo <= value <= hi:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{field} must be a number, got {value!r:.60}")
    f = float(value)
    if not math.isfinite(f) or f < lo or f > hi:
        raise error(f"{field} must be between {lo} and {hi}, got {value!r:.60}")
    return f


def integer(value: object, field: str, error: type[TrackerError], lo: int, hi: int) -> int:
    if type(value) is int and lo <= value <= hi:  # fast path; bool is not `int` here
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{field} must be an integer, got {value!r:.60}")
    if isinstance(value, float):
        if not value.is_integer():
            raise error(f"{field} must be an integer, got {value!r:.60}")
        value = int(value)
    if value < lo or value > hi:
        raise error(f"{field} must be between {lo} and {hi}, got {value!r:.60}")
    return value


def choice(value: object, field: str, error: type[TrackerError], choices: Iterable[str]) -> str:
    """`value` if it is one of the strings `choices`; a list or dict (unhashable) is refused
    like any other wrong value, never a TypeError."""
    allowed = tuple(choices)
    if type(value) is str and value in allowed:
        return value
    raise error(f"{field} must be one of {', '.join(allowed)}, got {value!r:.60}")


# Event ids are assigned by Redis INCR (signed 64-bit) and history is read from id + 1, so the
# largest id a client can hold is 2**63 - 1 (and id + 1 still fits a Redis stream id).
MAX_STREAM_EVENT_ID = 2**63 - 1
_DIGITS_RE = re.compile(r"[0-9]{1,19}", re.ASCII)


def last_event_id(raw: str) -> int:
    """The `?lastEventId=` of a reconnect: plain ASCII digits, at most MAX_STREAM_EVENT_ID.

    `int()` alone would also take a sign, surrounding whitespace, `_` separators and non-ASCII
    digits, and any length (a 2**64 id broke the upgrade after the 101)."""
    if not _DIGITS_RE.fullmatch(raw) or int(raw) > MAX_STREAM_EVENT_ID:
        raise InvalidMessage(
            f"lastEventId must be an integer between 0 and {MAX_STREAM_EVENT_ID}, got {raw!r:.40}"
        )
    return int(raw)
