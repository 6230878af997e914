"""Process lifecycle (issue 10): children die with `dev` and with pytest whatever ends them,
a busy port fails at once, a lost broker neither floods the log nor hangs the stop.

Each test starts servers of its own: the session's broker and Redis are never killed here.
"""

from __future__ import annotations

import collections
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws.logthrottle import REPEAT_WINDOW_S
from tracker_ws_dev import stack as devstack

REPO_ROOT = Path(devstack.__file__).resolve().parent.parent
GONE_WITHIN_S = 30.0  # the worker drains (TRACKER_WS_DRAIN_TIMEOUT=2) with its broker dying too


def _env(**extra: str) -> dict[str, str]:
    """This environment without the servers a test run may point at: children start their own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRACKER_WS_KAFKA_BROKER", "TRACKER_WS_REDIS_URL", "TRACKER_WS_PORT")
    }
    return {**env, "PYTHONPATH": str(REPO_ROOT), "TRACKER_WS_DRAIN_TIMEOUT": "2", **extra}


def _descendants(pid: int) -> dict[int, int]:
    """pid -> process group of every live process below `pid` (Linux /proc)."""
    parent_of: dict[int, int] = {}
    group_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        parent_of[int(entry.name)] = int(fields[1])
        group_of[int(entry.name)] = int(fields[2])
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parent_of.items():
            if parent == current and child not in found:
                found[child] = group_of[child]
                frontier.append(child)
    return found


def _survivors(procs: dict[int, int]) -> list[int]:
    """Those of `procs` still alive, and anything still in their process groups."""
    groups = set(procs.values())
    alive = {pid for pid in procs if devstack.pid_alive(pid)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2 :].split()
            if int(fields[2]) in groups and fields[0] not in ("Z", "X"):
                alive.add(int(entry.name))
    return sorted(alive)


def _assert_all_gone(procs: dict[int, int], port: int | None = None) -> float:
    """Waits until none of `procs` (nor their groups) is alive and `port` is free; seconds."""
    started = time.monotonic()
    try:
        devstack.wait_for(lambda: not _survivors(procs), GONE_WITHIN_S, 0.1, "children to exit")
    except TimeoutError:
        left = _survivors(procs)
        for pid in left:  # leave nothing behind for the next test
            with_cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            print(f"still alive: {pid} {with_cmd[:120]!r}")
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"{len(left)}/{len(procs)} children still alive {GONE_WITHIN_S:g} s later")
    if port is not None:
        devstack.wait_for(lambda: not devstack.port_in_use(port), 10, what=f"port {port} free")
    return time.monotonic() - started


def _dev_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "tracker_ws", "dev", "--port", str(port), "--vehicles", "4"]


def _expect_dev_children(procs: dict[int, int]) -> None:
    # broker, Redis, worker, simulator: each the leader of its own group
    assert len(set(procs.values())) >= 4, procs


# ------------------------------------------------------------------------- dev: children


def test_dev_children_die_when_its_terminal_closes(tmp_path: Path) -> None:
    port = devstack.free_port()
    pid, master = pty.fork()
    if pid == 0:  # the child: `dev` with the pty as its controlling terminal
        try:
            os.chdir(tmp_path)
            os.execve(sys.executable, _dev_argv(port), _env())
        finally:
            os._exit(127)
    output = bytearray()

    def read_available() -> str:
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output.extend(chunk)
        return output.decode(errors="replace")

    try:
        devstack.wait_for(lambda: "[dev] ready in" in read_available(), 90, 0.1, "dev to be ready")
        procs = _descendants(pid)
        _expect_dev_children(procs)
    finally:
        os.close(master)  # closing the terminal: the kernel sends SIGHUP to `dev`
    took = _assert_all_gone({pid: pid, **procs}, port)
    print(f"\nterminal closed: {len(procs)} children gone in {took:.1f} s")
    os.waitpid(pid, 0)


def test_dev_children_die_when_dev_is_killed(tmp_path: Path) -> None:
    port = devstack.free_port()
    out = tmp_path / "dev.out"
    with open(out, "wb") as fh:
        dev = subprocess.Popen(
            _dev_argv(port), stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=_env()
        )
    try:
        devstack.wait_for(lambda: "[dev] ready in" in out.read_text(), 90, 0.1, "dev to be ready")
        procs = _descendants(dev.pid)
        _expect_dev_children(procs)
    finally:
        dev.kill()
        dev.wait()
    took = _assert_all_gone(procs, port)
    print(f"\ndev killed: {len(procs)} children gone in {took:.1f} s")


# ------------------------------------------------------------------------- busy ports


def test_dev_on_a_busy_port_fails_at_once_with_one_line(
    tmp_path: Path, worker: devstack.Worker
) -> None:
    taken_port = worker.port  # another tracker-ws, answering /health
    started = time.monotonic()
    done = subprocess.run(
        _dev_argv(taken_port), capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60
    )
    took = time.monotonic() - started
    said = (done.stdout + done.stderr).strip().splitlines()
    print(f"\nexit {done.returncode} after {took:.1f} s: {said}")
    assert done.returncode != 0
    assert said == [
        f"[dev] port {taken_port} is in use (another tracker-ws?): "
        "stop it or set TRACKER_WS_PORT / --port"
    ]
    assert took < 15
    assert not (tmp_path / ".dev").exists()  # nothing was started


def test_worker_on_a_busy_port_exits_with_one_line(
    tmp_path: Path, worker: devstack.Worker, topics: str
) -> None:
    taken_port = worker.port
    env = _env(
        TRACKER_WS_KAFKA_BROKER=topics,
        TRACKER_WS_PORT=str(taken_port),
        TRACKER_WS_HOST="127.0.0.1",
        TRACKER_WS_APP_ID=f"tracker-ws-busy-{uuid.uuid4().hex[:8]}",
        TRACKER_WS_DATA_DIR=str(tmp_path / "faust"),
    )
    argv = [sys.executable, "-m", "tracker_ws", "worker"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
    ) as busy:
        try:
            out, err = busy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            busy.kill()
            out, err = busy.communicate()
            pytest.fail(f"worker still running 30 s later; it said:\n{(out + err)[-2000:]}")
    print(f"\nexit {busy.returncode}: {err.strip()!r}")
    assert busy.returncode != 0
    assert err.strip().splitlines() == [
        f"tracker-ws worker: port {taken_port} is in use (another tracker-ws?): "
        "stop it or set TRACKER_WS_PORT"
    ]
    assert out == ""


def test_start_worker_never_takes_another_instance_for_its_own(
    tmp_path: Path, worker: devstack.Worker, topics: str, redis_url: str
) -> None:
    with pytest.raises(BackendUnavailable) as info:
        devstack.start_worker(
            broker_url=topics,
            redis_url=redis_url,
            log_dir=tmp_path,
            port=worker.port,
            env={"TRACKER_WS_APP_ID": f"tracker-ws-busy-{uuid.uuid4().hex[:8]}"},
            timeout=30,
        )
    assert "is in use" in str(info.value)
    assert worker.health().get("status") == "healthy"  # the other one is untouched


# ------------------------------------------------------------------------- an interrupted pytest


# The held run waits in short sleeps, not signal.pause(): a SIGINT that lands between Python's
# check for pending signals and the pause() call is handled only at the next signal, so pause()
# would sleep through it (seen once in CI: the inner pytest never saw its Ctrl-C). A sleep
# returns and lets the KeyboardInterrupt through within 0.1 s.
HOLD_TEST = """
import time
from pathlib import Path


def test_hold(broker, redis_server):
    Path({pids!r}).write_text(
        f"{{broker.process.pid}} {{broker.port}} {{redis_server.process.pid}} {{redis_server.port}}"
    )
    while True:  # until the outer test interrupts this run
        time.sleep(0.1)
"""


def _sigint_by_default() -> None:
    """In the child, before exec: SIGINT back to its default. A shell without job control
    starts background commands with SIGINT ignored, the ignore is inherited through exec, and a
    Python started that way never raises KeyboardInterrupt: this suite run as `make test &`
    would see the inner run ignore the very signal under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stacks(pid: int) -> str:
    """Every thread's Python stack of a running process (py-spy, installed with the bench
    extra), or why not."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "(py-spy not installed)"
    run = subprocess.run(
        [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    )
    return run.stdout + run.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_pytest_leaves_no_server_running(tmp_path: Path, sig: signal.Signals) -> None:
    pids = tmp_path / "servers.pids"
    test_file = tmp_path / "test_hold.py"
    test_file.write_text(textwrap.dedent(HOLD_TEST.format(pids=str(pids))))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    argv += ["--basetemp", str(tmp_path / "inner"), str(test_file)]
    with open(tmp_path / "pytest.out", "wb") as fh:
        inner = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=_env(),
            preexec_fn=_sigint_by_default,
        )
    try:
        devstack.wait_for(
            lambda: pids.exists() and len(pids.read_text().split()) == 4, 60, 0.1, "servers up"
        )
        broker_pid, broker_port, redis_pid, redis_port = map(int, pids.read_text().split())
        assert devstack.pid_alive(broker_pid) and devstack.pid_alive(redis_pid)
        inner.send_signal(sig)
        try:
            inner.wait(60)
        except subprocess.TimeoutExpired:
            # Say where the interrupted run is stuck.
            out = (tmp_path / "pytest.out").read_text(errors="replace")[-3000:]
            raise AssertionError(
                f"pytest still running 60 s after {sig.name}; its stacks:\n{_stacks(inner.pid)}"
                f"\nits output:\n{out}"
            ) from None
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    took = _assert_all_gone({broker_pid: broker_pid, redis_pid: redis_pid})
    for port in (broker_port, redis_port):

        def freed(p: int = port) -> bool:
            return not devstack.port_in_use(p)

        devstack.wait_for(freed, 10, what=f"port {port}")
    print(f"\npytest {sig.name}: broker and redis gone in {took:.1f} s")


# ------------------------------------------------------------------------- broker lost

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
            log = proc.read_log()
            assert "shutdown still not finished" in log
            assert "(most recent call first)" in log  # where it was stuck: every thread's stack
            assert "tasks still running at the shutdown bound" in log  # and every task's
        finally:
            worker.stop(timeout=5)
    finally:
        redis.stop()
        broker.stop()
