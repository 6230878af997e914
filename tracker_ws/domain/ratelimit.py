"""Inbound rate limiting per connection (ARCHITECTURE §5). Pure: the caller passes the clock.

Pass a monotonic clock (`time.monotonic()`, `loop.time()`) in seconds. Every connection holds one
`TokenBucket` and one `AbuseTracker`, so both are a handful of floats in `__slots__`.

- `TokenBucket(rate, burst)`: `rate` tokens per second up to `burst`; starts full. A refused
  frame costs nothing, and `try_take` says how long to wait (the `retryAfter` of the error).
- `AbuseTracker(limit, window_s)`: a leaky counter of rejections. Each rejection adds 1 and the
  count drains at `limit / window_s` per second; once it exceeds `limit` the client is abusive
  (close 1008). So more than `limit` rejections in a burst trip it at once, a sustained
  rejection rate above `limit / window_s` per second trips it within about `window_s`, and an
  occasional rejection never does.
"""

from __future__ import annotations

import math

# Defaults for the abuse rule: more than 50 rejected frames within about 10 s.
ABUSE_LIMIT = 50
ABUSE_WINDOW_S = 10.0

# Float refill arithmetic can land a hair below a whole token at exactly the retry-after time;
# without the slack a client that waits exactly as told could be refused again.
_EPSILON = 1e-9
_NEVER = -math.inf  # one object, not a new float per bucket (S1 memory)


class TokenBucket:
    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = self._burst  # the same float object: one per bucket, not two
        self._last = _NEVER  # first call refills to the full burst

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (for metrics and tests; does not consume)."""
        return self._refill(now)

    def try_take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 if allowed, else the seconds until they will be available."""
        if cost > self._burst:
            raise ValueError(f"cost {cost} exceeds the burst {self._burst:g}: never allowed")
        tokens = self._refill(now)
        if tokens + _EPSILON >= cost:
            self._tokens = max(0.0, tokens - cost)
            return 0.0
        self._tokens = tokens
        return (cost - tokens) / self._rate

    def _refill(self, now: float) -> float:
        elapsed = now - self._last
        if elapsed <= 0:
            # Same instant, or a clock that stepped back: no refill, and keep the later mark.
            return self._tokens
        self._last = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        return self._tokens


class AbuseTracker:
    """Leaky counter of rejected frames; `record_rejection` returns True once it is abuse."""

    __slots__ = ("_drain", "_last", "_limit", "_score")

    def __init__(self, limit: int = ABUSE_LIMIT, window_s: float = ABUSE_WINDOW_S) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self._limit = float(limit)
        self._drain = limit / window_s  # per second
        self._score = 0.0
        self._last = 0.0

    @property
    def score(self) -> float:
        """Rejections still counted as of the last record (not drained to any later time)."""
        return self._score

    def record_rejection(self, now: float) -> bool:
        """Count one rejected frame at `now`; True means close the connection (1008)."""
        elapsed = now - self._last
        if elapsed > 0:
            self._score = max(0.0, self._score - elapsed * self._drain)
            self._last = now
        self._score += 1.0
        return self._score > self._limit

    def reset(self) -> None:
        self._score = 0.0
