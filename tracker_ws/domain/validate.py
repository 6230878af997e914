"""Small validators shared by the protocol codec, the stream parsers and the admin API."""

from __future__ import annotations

import math
import re

from tracker_ws.domain.errors import TrackerError

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
