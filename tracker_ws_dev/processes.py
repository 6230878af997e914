"""Child processes for the development stack, tests and benchmarks.

Each child runs in its own session and process group, so stopping it also stops anything it
spawned; on Linux it also gets a parent-death signal (SIGTERM), so nothing outlives a dev stack
or a test run that is killed outright. `Server` is a child that listens on a port and is ready
when it answers its real protocol (never after a sleep); broker.py, redis_server.py and
worker.py are its kinds.

Only stdlib here: imported by the test conftest and by `python -m tracker_ws dev`, before any
service code runs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tracker_ws.domain.errors import BackendUnavailable

_T = TypeVar("_T")

LOG_TAIL_LINES = 20
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_KAFKA_TOPIC_ALREADY_EXISTS = 36
# How often a start is retried on a fresh port when the port we picked was grabbed by someone
# else between free_port() and the server's bind (only when the caller did not choose the port).
_AUTO_PORT_ATTEMPTS = 3
# Children are exec'd through this wrapper, which sets their parent-death signal (Linux only).
_PDEATHSIG_WRAPPER = Path(__file__).with_name("_pdeathsig.py")
_PDEATHSIG = signal.SIGTERM


# --------------------------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate!r}")
        time.sleep(min(interval, remaining))


def pid_alive(pid: int) -> bool:
    """True if `pid` is a running process. Zombies count as dead: PID 1 in a container may
    never reap orphans, and a zombie holds no resources worth waiting for."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    state = _proc_stat(pid)
    return state is None or state[0] not in ("Z", "X")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc/<pid>/stat, or None where /proc is not available."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[2])
    except (IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`; Linux /proc scan, killpg(0) elsewhere."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def run_coro_in_thread(factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float) -> _T:
    """Run a coroutine to completion from synchronous code.

    A private thread with its own loop works whether or not the caller is inside a running event
    loop (async fixtures, the dev CLI) and leaves the caller's thread-local event loop untouched.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="devstack-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if thread.is_alive():
        raise TimeoutError(f"probe did not finish within {timeout:g}s")
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------------------------
# Processes

_spawn_lock = threading.Lock()
_spawn_queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
_spawn_owner = 0


def _in_spawner_thread(fn: Callable[[], _T]) -> _T:
    """Run `fn` (a Popen) on one thread that lives as long as this process.

    Linux sends the parent-death signal when the *thread* that forked the child exits, not the
    process: children started from short-lived threads (asyncio.to_thread, thread pools) would
    die with those threads.
    """
    global _spawn_queue, _spawn_owner
    with _spawn_lock:
        if _spawn_queue is None or _spawn_owner != os.getpid():  # first use, or a forked copy
            _spawn_queue = queue.SimpleQueue()
            _spawn_owner = os.getpid()
            threading.Thread(
                target=_spawner_loop, args=(_spawn_queue,), name="devstack-spawner", daemon=True
            ).start()
        jobs = _spawn_queue
    done: Future[_T] = Future()
    jobs.put((fn, done))
    return done.result()


def _spawner_loop(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
    while True:
        fn, done = jobs.get()
        try:
            done.set_result(fn())
        except BaseException as exc:
            done.set_exception(exc)


def _with_pdeathsig(argv: list[str], path: str | None) -> list[str]:
    """`argv` exec'd through the parent-death wrapper (Linux); unchanged elsewhere."""
    if not sys.platform.startswith("linux"):
        return argv
    # The wrapper reports a failed exec only in the log: fail here, like a plain Popen would.
    if shutil.which(argv[0], path=path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    wrapper = [sys.executable, "-I", "-S", str(_PDEATHSIG_WRAPPER)]
    return [*wrapper, str(os.getpid()), str(int(_PDEATHSIG)), *argv]


_registry_lock = threading.Lock()
_live: set[ManagedProcess] = set()


def _stop_all_at_exit() -> None:
    with _registry_lock:
        procs = list(_live)
    for proc in procs:
        # A forked child inherits the registry and atexit hooks; only the creator stops them.
        if proc._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                proc.terminate(timeout=5)


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """A child process in its own session/process group with output appended to `log_path`.

    Started by the constructor. `env` entries are added to (not substituted for) os.environ.
    Processes still running when the Python interpreter exits normally are terminated by an
    atexit hook; if this process dies otherwise (SIGKILL, a signal without a handler), Linux
    sends each child SIGTERM (its parent-death signal).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._owner_pid = os.getpid()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self.log_path, "ab") as log:
            # Remember where this run starts so log tails never show an earlier run's output.
            self._log_offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"# devstack {stamp}: {shlex.join(self.argv)}\n".encode())
            log.flush()
            try:
                argv = _with_pdeathsig(self.argv, full_env.get("PATH"))
                self._popen = _in_spawner_thread(
                    lambda: subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=full_env,
                        cwd=cwd,
                        start_new_session=True,  # own group: one killpg reaches its children too
                    )
                )
            except OSError as exc:
                log.write(f"# devstack: cannot start {self.argv[0]}: {exc}\n".encode())
                log.flush()
                raise BackendUnavailable(
                    self.failure_message(f"cannot start {self.argv[0]!r}: {exc}")
                ) from exc
        # With start_new_session the child is its session and group leader: pgid == pid.
        self._pgid = self._popen.pid
        with _registry_lock:
            _live.add(self)

    # -- state

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def pgid(self) -> int:
        return self._pgid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def group_alive(self) -> bool:
        """True while any non-zombie process remains in this process's group."""
        return bool(_group_members(self._pgid))

    # -- logs

    def read_log(self) -> str:
        """This run's output so far (ANSI colours stripped)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return ""
        return _ANSI_RE.sub("", data.decode("utf-8", errors="replace"))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])

    def failure_message(self, reason: str) -> str:
        tail = self.log_tail() or "(empty)"
        return f"{self.name}: {reason}\n--- last lines of {self.log_path} ---\n{tail}"

    # -- stopping

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)

    def _forget(self) -> None:
        with _registry_lock:
            _live.discard(self)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the group leader to exit; returns its exit code (-N for signal N)."""
        code = self._popen.wait(timeout)
        self._forget()
        return code

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM the whole group, wait up to `timeout`, then SIGKILL whatever is left."""
        deadline = time.monotonic() + timeout
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait()
        # Children may outlive the leader (orphans keep the pgid): give them the rest of the
        # grace period, then kill them so nothing keeps ports or files busy.
        if self.group_alive():
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda: not self.group_alive(),
                    max(deadline - time.monotonic(), 0.0),
                    what=f"process group {self._pgid} to exit",
                )
            if self.group_alive():
                self._signal_group(signal.SIGKILL)
        self._forget()
        return self._popen.returncode

    def kill(self, timeout: float = 5) -> int:
        """SIGKILL the whole group at once (a `kill -9` for fault tests) and reap the leader."""
        self._signal_group(signal.SIGKILL)
        code = self._popen.wait()
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not self.group_alive(), timeout, what="killed group to vanish")
        self._forget()
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self._popen.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state} log={self.log_path}>"


def _await_ready(
    proc: ManagedProcess, probe: Callable[[float], bool], timeout: float, what: str
) -> None:
    """Poll `probe(remaining_seconds)` until it succeeds; fail fast if the process dies.

    On failure the process is stopped and BackendUnavailable carries the tail of its log.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if not proc.alive():
            proc.wait()
            raise BackendUnavailable(
                proc.failure_message(
                    f"{what} exited with code {proc.returncode} before becoming ready"
                )
            )
        remaining = deadline - time.monotonic()
        if remaining > 0 and probe(remaining):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.terminate(timeout=5)
            raise BackendUnavailable(proc.failure_message(f"{what} not ready after {timeout:g}s"))
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)


class Server:
    """A loopback server on a fixed port that can be stopped and restarted on that port."""

    kind = "server"
    default_timeout = 10.0

    def __init__(self, port: int, log_dir: Path, binary: str) -> None:
        self.port = port
        self.log_dir = Path(log_dir)
        self.binary = binary
        self.log_path = self.log_dir / f"{self.kind}-{port}.log"
        self._process: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError(f"{self.kind} on port {self.port} was never started")
        return self._process

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return {}

    def _probe(self, proc: ManagedProcess, timeout: float) -> bool:
        raise NotImplementedError

    def _start_once(self, timeout: float) -> None:
        proc = ManagedProcess(
            self._argv(), log_path=self.log_path, name=f"{self.kind}:{self.port}", env=self._env()
        )
        self._process = proc
        _await_ready(
            proc,
            lambda remaining: self._probe(proc, remaining),
            timeout,
            f"{self.kind} on 127.0.0.1:{self.port}",
        )

    def start(self, timeout: float | None = None) -> None:
        self._start_once(self.default_timeout if timeout is None else timeout)

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def stop(self, timeout: float = 10) -> None:
        if self._process is not None:
            self._process.terminate(timeout)

    def kill(self) -> None:
        """SIGKILL (fault tests). Call restart() to bring it back on the same port."""
        if self._process is not None:
            self._process.kill()

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running) and start again on the same port; waits for readiness."""
        timeout = self.default_timeout if timeout is None else timeout
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._start_once(max(deadline - time.monotonic(), 1.0))
                return
            except BackendUnavailable:
                # The old socket can linger for a moment after the process is gone; retry the
                # bind on the same port until the deadline rather than fail the fault test.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def ensure_running(self, timeout: float | None = None) -> None:
        """Restart if a fault test left it stopped or killed."""
        if not self.alive():
            self.restart(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} alive={self.alive()} log={self.log_path}>"


_S = TypeVar("_S", bound=Server)


def start_server(factory: Callable[[int], _S], port: int | None, timeout: float) -> _S:
    if port is not None:
        server = factory(port)
        server.start(timeout)
        return server
    for attempt in range(_AUTO_PORT_ATTEMPTS):
        server = factory(free_port())
        try:
            server.start(timeout)
            return server
        except BackendUnavailable:
            # Most likely the free port was taken before the server bound it: pick another.
            if attempt == _AUTO_PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
