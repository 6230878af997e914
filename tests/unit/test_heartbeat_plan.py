"""The heartbeat sweep's schedule (web/hub.heartbeat_plan): each connection is looked at once a
period, a slice of them about once a second, so that connections that fell quiet together are
not all pinged in one pass."""

from __future__ import annotations

import pytest

from tracker_ws.web.hub import heartbeat_plan


@pytest.mark.parametrize(
    ("ping_after", "close_after", "period"),
    [
        (30.0, 75.0, 10.0),
        (60.0, 180.0, 20.0),
        (5.0, 15.0, 5.0 / 3),
        (0.5, 1.5, 0.2),
        (2.0, 1.2, 0.4),
    ],
)
def test_every_connection_is_looked_at_once_a_period(
    ping_after: float, close_after: float, period: float
) -> None:
    interval, parts = heartbeat_plan(ping_after, close_after)
    assert interval * parts == pytest.approx(period)


def test_the_defaults_sweep_a_tenth_of_the_connections_a_second() -> None:
    assert heartbeat_plan(30.0, 75.0) == (1.0, 10)


def test_short_periods_sweep_everything_at_once() -> None:
    # The heartbeat tests run with sub-second periods: one slice, as before the slicing.
    assert heartbeat_plan(0.5, 1.5) == (0.2, 1)
    assert heartbeat_plan(1.0, 3.0)[1] == 1


def test_slices_stay_about_a_second_apart() -> None:
    for ping_after in (3.0, 4.5, 9.0, 30.0, 90.0, 600.0):
        interval, _ = heartbeat_plan(ping_after, ping_after * 3)
        assert 0.66 <= interval <= 2.0, (ping_after, interval)
