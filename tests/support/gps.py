"""A gps-events record for the parser tests (domain/events.py and domain/fixes.py)."""

from __future__ import annotations

from typing import Any

VID = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
CO = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
G1 = "91000000-0000-4000-8000-000000000001"
G2 = "91000000-0000-4000-8000-000000000002"
TS_MS = 1_700_000_000_123
TS_ISO = "2023-11-14T22:13:20.123Z"
DROP = object()  # marks a field to leave out of `event()`


def event(**overrides: Any) -> dict[str, Any]:
    """A valid fix of VID; each override replaces a field, DROP removes it."""
    ev: dict[str, Any] = {
        "vehicleId": VID,
        "latitude": 52.52,
        "longitude": 13.405,
        "speed": 42.5,
        "course": 270,
        "timestamp": TS_ISO,
    }
    for k, v in overrides.items():
        if v is DROP:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev
