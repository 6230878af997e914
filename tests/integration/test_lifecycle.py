"""Process lifecycle: a lost broker under a running worker (issue 10, point 16).

Each test starts servers of its own: the session's broker and Redis are never killed here.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tracker_ws import devstack
from tracker_ws.logthrottle import REPEAT_WINDOW_S

# `[2026-12-06 19:51:25,129] [15690] [ERROR] message` (Faust's log format)
_LOG_LINE = re.compile(r"^\[[^\]]+\] \[\d+\] \[(?P<level>[A-Z]+)\] (?P<text>.*?)\s*$")
_SUPPRESSED = re.compile(r" \(\d+ similar suppressed\)$")

OBSERVE_S = 12.0  # how long the worker runs without its broker before it is stopped
DRAIN_TIMEOUT_S = 2  # TRACKER_WS_DRAIN_TIMEOUT of the worker under test
STOP_BOUND_S = DRAIN_TIMEOUT_S + 10  # SIGTERM to exit, broker gone


def _error_lines(log: str) -> list[str]:
    lines = []
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m and m["level"] in ("ERROR", "CRITICAL"):
            lines.append(m["text"])
    return lines


def _cause(text: str) -> str:
    return re.sub(r"\d+", "N", _SUPPRESSED.sub("", text))


def test_broker_lost_logs_one_line_per_cause_and_sigterm_exits_in_bound(tmp_path: Path) -> None:
    broker = devstack.start_broker(log_dir=tmp_path)
    redis = devstack.start_redis(log_dir=tmp_path)
    try:
        worker = devstack.start_worker(
            broker_url=broker.url,
            redis_url=redis.url,
            log_dir=tmp_path,
            env={"TRACKER_WS_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S)},
        )
        proc = worker.process
        try:
            before = len(proc.read_log().splitlines())
            broker.kill()
            # The measurement window: the worker must stay up without its broker meanwhile.
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(OBSERVE_S)
            errors = _error_lines("\n".join(proc.read_log().splitlines()[before:]))
            per_cause = collections.Counter(_cause(t) for t in errors)
            print(f"\n{len(errors)} ERROR lines in {OBSERVE_S:g} s: {dict(per_cause)}")
            assert errors, "losing the broker must still be reported"
            assert any(_SUPPRESSED.search(t) for t in errors), errors
            # The first line of a cause, then at most one per window.
            most = int(OBSERVE_S / REPEAT_WINDOW_S) + 2
            assert max(per_cause.values()) <= most, per_cause.most_common(3)

            started = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(STOP_BOUND_S + 30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {STOP_BOUND_S + 30} s after SIGTERM")
            took = time.monotonic() - started
            print(f"SIGTERM to exit: {took:.1f} s (exit code {code})")
            assert took <= STOP_BOUND_S, f"{took:.1f} s to stop, bound {STOP_BOUND_S} s"
            assert "shutdown still not finished" in proc.read_log()
        finally:
            worker.stop(timeout=5)
    finally:
        redis.stop()
        broker.stop()
