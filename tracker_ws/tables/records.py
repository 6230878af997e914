"""The gps-events record as a Faust model, for data engineers: `faust -A tracker_ws.app models`
lists it, `faust … model tracker_ws.tables.records.GpsEvent` shows its fields, and `faust …
send gps-events --value-type tracker_ws.tables.records.GpsEvent --key <vehicleId> '{…}'` checks
a record against it before sending (README, "For data engineers"). The GPS agent does not
decode through it: it reads the raw JSON with its own fast parser (domain/fixes.py), which
accepts exactly what this model describes (tests/unit/test_records.py). No metadata field goes
on the wire (`include_metadata=False`): producers in any language send the same plain JSON.
"""

# No `from __future__ import annotations`: Faust reads the field types at class creation.

import faust


class GpsSensors(
    faust.Record,
    serializer="json",
    include_metadata=False,
):
    """Optional sensor readings of a fix."""

    fuel: float | None = None
    temperature: float | None = None
    ignition: bool | None = None
    doors: bool | None = None


class GpsEvent(
    faust.Record,
    serializer="json",
    include_metadata=False,
):
    """A GPS fix on gps-events, keyed by its vehicleId (bounds: see the field comments)"""

    vehicleId: str  # the wire names, camelCase
    latitude: float  # -90..90
    longitude: float  # -180..180
    speed: float  # km/h, 0..2000
    course: float  # degrees, 0..360
    timestamp: str  # ISO-8601 with a zone (epoch milliseconds are accepted too)
    altitude: float | None = None  # metres, -1000..100000
    satellites: int | None = None  # 0..200
    sensors: GpsSensors | None = None
