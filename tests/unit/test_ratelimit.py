"""Token bucket and abuse tracker (tracker_ws/domain/ratelimit.py); the clock is passed in."""

from __future__ import annotations

import sys

import pytest

from tracker_ws.domain.ratelimit import ABUSE_LIMIT, ABUSE_WINDOW_S, AbuseTracker, TokenBucket

T0 = 1000.0


def test_burst_then_refusal_with_retry_after() -> None:
    bucket = TokenBucket(rate=10.0, burst=20)
    for _ in range(20):
        assert bucket.try_take(T0) == 0.0
    # Empty: the next token arrives after 1/rate seconds.
    assert bucket.try_take(T0) == pytest.approx(0.1)
    # Refusals do not consume, so asking again gives the same answer.
    assert bucket.try_take(T0) == pytest.approx(0.1)
    assert bucket.try_take(T0 + 0.04) == pytest.approx(0.06)


def test_waiting_exactly_retry_after_is_enough() -> None:
    bucket = TokenBucket(rate=10.0, burst=1)
    now = 12345.678
    assert bucket.try_take(now) == 0.0
    wait = bucket.try_take(now)
    assert wait > 0
    for _ in range(100):
        now += wait
        assert bucket.try_take(now) == 0.0
        wait = bucket.try_take(now)
        assert wait == pytest.approx(0.1)


def test_refill_over_time_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=20)
    for _ in range(20):
        bucket.try_take(T0)
    assert bucket.tokens(T0) == pytest.approx(0.0)
    assert bucket.tokens(T0 + 0.5) == pytest.approx(5.0)
    for _ in range(5):
        assert bucket.try_take(T0 + 0.5) == 0.0
    assert bucket.try_take(T0 + 0.5) > 0
    # A long idle period refills to the burst, never beyond it.
    assert bucket.tokens(T0 + 3600) == pytest.approx(20.0)
    for _ in range(20):
        assert bucket.try_take(T0 + 3600) == 0.0
    assert bucket.try_take(T0 + 3600) == pytest.approx(0.1)


def test_sustained_rate_is_allowed() -> None:
    bucket = TokenBucket(rate=10.0, burst=2)
    refused = sum(bucket.try_take(T0 + i * 0.1) > 0 for i in range(1000))
    assert refused == 0


def test_cost_and_retry_after_for_expensive_frames() -> None:
    bucket = TokenBucket(rate=2.0, burst=4)
    assert bucket.try_take(T0, cost=3) == 0.0
    assert bucket.try_take(T0, cost=3) == pytest.approx(1.0)  # 1 left, 2 missing at 2/s
    with pytest.raises(ValueError, match="burst"):
        bucket.try_take(T0, cost=5)


def test_clock_going_backwards_does_not_refill() -> None:
    bucket = TokenBucket(rate=10.0, burst=1)
    assert bucket.try_take(T0) == 0.0
    assert bucket.try_take(T0 - 5) == pytest.approx(0.1)
    assert bucket.try_take(T0 + 0.1) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 5), (1.0, 0)])
def test_bucket_rejects_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_abuse_threshold_in_a_burst() -> None:
    tracker = AbuseTracker()
    assert (ABUSE_LIMIT, ABUSE_WINDOW_S) == (50, 10.0)
    results = [tracker.record_rejection(T0) for _ in range(ABUSE_LIMIT + 1)]
    assert results[:ABUSE_LIMIT] == [False] * ABUSE_LIMIT
    assert results[ABUSE_LIMIT] is True


def test_abuse_counter_drains_over_the_window() -> None:
    tracker = AbuseTracker(limit=50, window_s=10.0)
    for _ in range(50):
        assert not tracker.record_rejection(T0)
    # After a full window the count has drained away: another 50 are tolerated.
    for _ in range(50):
        assert not tracker.record_rejection(T0 + 10.0)
    assert tracker.record_rejection(T0 + 10.0)


def test_occasional_rejections_never_abuse() -> None:
    tracker = AbuseTracker(limit=50, window_s=10.0)
    # 4 rejections/s is below the drain rate of 5/s: tolerated forever.
    assert not any(tracker.record_rejection(T0 + i * 0.25) for i in range(10_000))


def test_sustained_rejections_trip_within_about_a_window() -> None:
    tracker = AbuseTracker(limit=50, window_s=10.0)
    # A client sending 20 frames/s against a 10/s limit: about 10 rejections/s.
    tripped_at = next(i for i in range(10_000) if tracker.record_rejection(T0 + i * 0.1))
    assert 50 < tripped_at <= 110  # roughly 5-11 s of sustained abuse


def test_abuse_reset() -> None:
    tracker = AbuseTracker(limit=3, window_s=10.0)
    for _ in range(3):
        assert not tracker.record_rejection(T0)
    tracker.reset()
    assert tracker.score == 0.0
    assert not tracker.record_rejection(T0)


@pytest.mark.parametrize(("limit", "window_s"), [(0, 10.0), (5, 0.0)])
def test_abuse_rejects_bad_parameters(limit: int, window_s: float) -> None:
    with pytest.raises(ValueError):
        AbuseTracker(limit, window_s)


def test_objects_are_small() -> None:
    # Thousands of connections hold one of each: no per-instance __dict__.
    for obj in (TokenBucket(10.0, 20), AbuseTracker()):
        assert not hasattr(obj, "__dict__")
        assert sys.getsizeof(obj) <= 80
