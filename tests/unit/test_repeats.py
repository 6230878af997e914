"""Repeated log messages collapsed per cause (domain/repeats.py, logthrottle.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from tracker_ws import logthrottle
from tracker_ws.domain.repeats import RepeatLimiter

T0 = 500.0


def test_first_admitted_then_held_back_until_the_window_passes() -> None:
    limiter = RepeatLimiter(window_s=5.0)
    assert limiter.admit("a", T0) == 0
    assert [limiter.admit("a", T0 + i * 0.1) for i in range(1, 11)] == [None] * 10
    assert limiter.admit("a", T0 + 5.0) == 10  # the count of those held back comes along
    assert limiter.admit("a", T0 + 5.1) is None
    assert limiter.admit("a", T0 + 10.0) == 1
    assert limiter.admit("a", T0 + 20.0) == 0


def test_causes_are_independent() -> None:
    limiter = RepeatLimiter(window_s=5.0)
    assert limiter.admit("a", T0) == 0
    assert limiter.admit("b", T0) == 0
    assert limiter.admit("a", T0 + 1) is None
    assert limiter.admit("c", T0 + 1) == 0


def test_cause_cap_forgets_quiet_causes_and_never_drops_when_full() -> None:
    limiter = RepeatLimiter(window_s=5.0, max_causes=2)
    assert limiter.admit("a", T0) == 0
    assert limiter.admit("b", T0) == 0
    assert limiter.admit("b", T0 + 1) is None  # b now holds one back: not forgotten
    assert limiter.admit("c", T0 + 1) == 0  # full, nothing quiet yet: let through untracked
    assert limiter.admit("c", T0 + 2) == 0
    assert limiter.admit("c", T0 + 6) == 0  # a is quiet and past its window: c takes its place
    assert limiter.admit("c", T0 + 7) is None


@pytest.mark.parametrize("bad", [{"window_s": 0}, {"window_s": 1, "max_causes": 0}])
def test_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RepeatLimiter(**bad)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_repeats.noisy")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    clock = Clock()
    logger.addFilter(logthrottle.RepeatFilter(5.0, clock=clock))
    try:
        yield logger, stream, clock
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()


def test_filter_one_line_per_cause_with_suppressed_count(
    captured: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    logger, stream, clock = captured
    for port in range(100):  # formatted text differs, the template (the cause) does not
        logger.error("Unable connect to node %s: %s", port, ConnectionRefusedError(111, "refused"))
        logger.error("Failed fetch from %s: %s", port, TimeoutError())
        logger.error("Failed fetch from %s: %s", port, OSError("closed"))  # another cause
        clock.now += 0.01
    clock.now = T0 + 5.0
    logger.error("Unable connect to node %s: %s", 7, ConnectionRefusedError(111, "refused"))
    lines = stream.getvalue().splitlines()
    assert lines == [
        "ERROR Unable connect to node 0: [Errno 111] refused",
        "ERROR Failed fetch from 0: ",
        "ERROR Failed fetch from 0: closed",
        "ERROR Unable connect to node 7: [Errno 111] refused (99 similar suppressed)",
    ]


def test_filter_leaves_info_and_percent_signs_alone(
    captured: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    logger, stream, clock = captured
    for _ in range(3):
        logger.info("rebalancing %s", "now")
    logger.warning("at 100%% of %s", "quota")
    logger.warning("at 100%% of %s", "quota")
    clock.now += 5.0
    logger.warning("at 100%% of %s", "quota")
    assert stream.getvalue().splitlines() == [
        "INFO rebalancing now",
        "INFO rebalancing now",
        "INFO rebalancing now",
        "WARNING at 100% of quota",
        "WARNING at 100% of quota (1 similar suppressed)",
    ]


def test_install_reaches_existing_child_loggers_once() -> None:
    child = logging.getLogger("test_repeats_lib.sub.module")
    try:
        first = logthrottle.install(["test_repeats_lib"])
        logthrottle.install(["test_repeats_lib"])
        for name in ("test_repeats_lib", "test_repeats_lib.sub", "test_repeats_lib.sub.module"):
            filters = logging.getLogger(name).filters
            assert filters == [first], name
        assert logging.getLogger("test_repeats_libx").filters == []
    finally:
        for name in ("test_repeats_lib", "test_repeats_lib.sub", "test_repeats_lib.sub.module"):
            logging.getLogger(name).filters.clear()
        assert child.filters == []
