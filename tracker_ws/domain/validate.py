"""Small validators shared by the protocol codec, the stream parsers and the admin API."""

from __future__ import annotations

import math
import uuid

from tracker_ws.domain.errors import TrackerError


def uuid_str(value: object, field: str, error: type[TrackerError]) -> str:
    """Canonical lower-case UUID string, or `error` naming the field."""
    if not isinstance(value, str) or len(value) != 36:
        raise error(f"{field} must be a UUID string, got {value!r:.60}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise error(f"{field} must be a UUID string, got {value!r:.60}") from None


def number(value: object, field: str, error: type[TrackerError], lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{field} must be a number, got {value!r:.60}")
    f = float(value)
    if not math.isfinite(f) or f < lo or f > hi:
        raise error(f"{field} must be between {lo} and {hi}, got {value!r:.60}")
    return f


def integer(value: object, field: str, error: type[TrackerError], lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{field} must be an integer, got {value!r:.60}")
    if isinstance(value, float):
        if not value.is_integer():
            raise error(f"{field} must be an integer, got {value!r:.60}")
        value = int(value)
    if value < lo or value > hi:
        raise error(f"{field} must be between {lo} and {hi}, got {value!r:.60}")
    return value
