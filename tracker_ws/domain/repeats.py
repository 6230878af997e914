"""Collapse repeated messages: one per cause per window, with a count of those held back.

Pure: the caller passes the clock (monotonic seconds). Used by the worker's log filter
(tracker_ws/logthrottle.py) so that a lost broker logs one line per cause every few seconds
instead of thousands per second.
"""

from __future__ import annotations

from collections.abc import Hashable

# Distinct causes tracked at once. Causes come from a finite set of log templates; the cap only
# guards against messages formatted before logging (each one a new "cause").
MAX_CAUSES = 1024


class RepeatLimiter:
    """`admit(cause, now)`: None to hold the message back, else how many were held back
    since the last one admitted for that cause (0 for the first)."""

    __slots__ = ("_max_causes", "_seen", "_window")

    def __init__(self, window_s: float, max_causes: int = MAX_CAUSES) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_causes < 1:
            raise ValueError(f"max_causes must be >= 1, got {max_causes}")
        self._window = float(window_s)
        self._max_causes = max_causes
        # cause -> [when the last admitted one was, how many were held back since]
        self._seen: dict[Hashable, list[float]] = {}

    def admit(self, cause: Hashable, now: float) -> int | None:
        entry = self._seen.get(cause)
        if entry is None:
            if len(self._seen) >= self._max_causes:
                self._forget_quiet(now)
                if len(self._seen) >= self._max_causes:
                    return 0  # too many causes to track: let it through rather than lose it
            self._seen[cause] = [now, 0]
            return 0
        if now - entry[0] < self._window:
            entry[1] += 1
            return None
        held = int(entry[1])
        entry[0], entry[1] = now, 0
        return held

    def _forget_quiet(self, now: float) -> None:
        # Causes whose window has passed with nothing held back carry no information any more.
        quiet = [c for c, (t, held) in self._seen.items() if now - t >= self._window and not held]
        for cause in quiet:
            del self._seen[cause]
