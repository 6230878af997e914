"""The seed §8 JavaScript client run in Node: `node tests/e2e/seed_client.js` as a subprocess.

The driver loads the seed's `TrackerWebSocket` class (tracker_ws/web/static/tracker-ws.js, the
class verbatim but for the URL) and prints one JSON line per callback / raw message / send()
(see the comment at the top of seed_client.js). Its stdout lines are parsed into `lines` and
its stderr (the class's console output) kept in `stderr`, both by background tasks as they come.

Two ways to wait, as the tests need them: `wait_for(pred)`, the next line after a cursor that
matches (like `WsClient.wait_for`), and `wait_until(pred)`, until a condition over everything
read so far holds. Tests using it set `pytestmark = requires_node_seed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pytest

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
SCRIPT = E2E_DIR / "seed_client.js"
NODE = shutil.which("node")
WS_PACKAGE = E2E_DIR / "node_modules" / "ws" / "package.json"


def _missing() -> str | None:
    if NODE is None:
        return "node is not on PATH: the seed JS client cannot run"
    if not WS_PACKAGE.is_file():
        return (
            "tests/e2e/node_modules/ws is missing: run `cd tests/e2e && npm install` "
            "(`make test` does it)"
        )
    return None


_MISSING = _missing()
requires_node_seed = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

Line = dict[str, Any]


class NodeSeedClient:
    """`node seed_client.js` with a config; stdout JSON lines and stderr kept as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[Line] = []  # every stdout line, parsed, in order
        self.stderr: list[str] = []  # "<monotonic time> <line>"
        self._cursor = 0  # lines before it were looked at by wait_for
        self._stdout_done = False
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_stdout()), loop.create_task(self._read_stderr())]

    @classmethod
    async def start(
        cls,
        ws_url: str,
        token: str,
        *,
        vehicle_ids: list[str] | None = None,
        subscriptions: list[dict[str, Any]] | None = None,
        duration_ms: int = 60_000,
        stop_on_stdin_end: bool = True,
        env: dict[str, str] | None = None,
    ) -> Self:
        """Start the driver against `ws_url` (ws[s]://host:port/ws).

        Without `subscriptions` it subscribes to `vehicles` (byIds of `vehicle_ids`, or all).
        `duration_ms` is a safety cap: the tests end it with `stop()` (closing stdin).
        `env` adds variables (NODE_EXTRA_CA_CERTS for wss:// with a test CA).
        """
        assert NODE is not None, _MISSING
        config: dict[str, Any] = {
            "token": token,
            "durationMs": duration_ms,
            "stopOnStdinEnd": stop_on_stdin_end,
        }
        if vehicle_ids is not None:
            config["vehicleIds"] = vehicle_ids
        if subscriptions is not None:
            config["subscriptions"] = subscriptions
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(SCRIPT),
            json.dumps(config),
            env={**os.environ, **(env or {}), "TRACKER_WS_URL": ws_url},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )
        return cls(proc)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:  # not the driver's: kept for the diagnostics
                    line = {"stdout": raw.decode(errors="replace").rstrip()}
                self.lines.append(line)
                self._changed.set()
        finally:
            self._stdout_done = True
            self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(f"{time.monotonic():.3f} {raw.decode(errors='replace').rstrip()}")

    @property
    def seen(self) -> list[Line]:
        """The lines up to the last one `wait_for` returned (what the test has looked at)."""
        return self.lines[: self._cursor]

    def raw(self, mtype: str) -> list[Line]:
        """The lines of the raw messages of type `mtype`."""
        return [line for line in self.lines if line.get("raw", {}).get("type") == mtype]

    def diagnostics(self) -> str:
        return f"last stdout lines: {self.lines[-5:]}; stderr: {self.stderr[-10:]}"

    async def wait_until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `pred()` holds; re-checked whenever a line arrives."""
        deadline = time.monotonic() + timeout
        while not pred():
            if self._stdout_done:
                await self.proc.wait()
                raise AssertionError(
                    f"node client exited ({self.proc.returncode}) while waiting for {what}; "
                    + self.diagnostics()
                )
            self._changed.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._changed.wait()
            except TimeoutError:
                if pred():
                    return
                raise AssertionError(
                    f"node client: timed out waiting for {what}; " + self.diagnostics()
                ) from None

    async def wait_for(self, pred: Callable[[Line], bool], timeout: float, what: str) -> Line:
        """The next line (after the cursor) matching `pred`; the lines skipped stay in `lines`."""
        found: list[Line] = []

        def next_match() -> bool:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if pred(line):
                    found.append(line)
                    return True
            return False

        await self.wait_until(next_match, timeout, what)
        return found[0]

    async def stop(self, timeout: float = 10.0) -> int:
        """Close stdin: the driver calls the seed's disconnect() and exits (killed if it has
        not within `timeout`). Its exit code; every line it printed is then in `lines`."""
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
                await asyncio.gather(*self._tasks)
        except TimeoutError:
            pass
        finally:
            await self.kill()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def kill(self) -> None:
        """Kill it if still running and stop reading (idempotent; for cleanup)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
