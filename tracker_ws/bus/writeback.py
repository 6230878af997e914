"""Write-behind for per-connection Redis bookkeeping: registry entries and saved states.

Thousands of clients connecting (or reconnecting after a deploy) would otherwise cost two or
three Redis round trips each, on the connection's own path. Sessions enqueue instead
(synchronously), and one task writes everything queued per tick: one registry pipeline
(`Presence.apply_writes`) and one state pipeline (`Store.save_states`), sent together. The latest
state per key wins, so a burst of subscribes saves one state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tracker_ws.bus.base import ConnectionEntry
from tracker_ws.bus.presence import Presence
from tracker_ws.bus.store import Store

log = logging.getLogger(__name__)

TICK_S = 0.005


class WriteBack:
    def __init__(self, presence: Presence, store: Store, state_ttl_s: float) -> None:
        self.presence = presence
        self.store = store
        self.state_ttl_s = state_ttl_s
        self._registers: dict[str, ConnectionEntry] = {}
        self._unregisters: dict[str, str] = {}  # connId -> userId
        self._states: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.failures = 0

    def register(self, entry: ConnectionEntry) -> None:
        self._registers[entry.conn_id] = entry
        self._kick()

    def unregister(self, conn_id: str, user_id: str) -> None:
        self._unregisters[conn_id] = user_id
        self._kick()

    def save_state(self, key: str, state: bytes) -> None:
        self._states[key] = state
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="writeback")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is written (or `timeout`): the next write
        round takes it, whatever is queued after this call."""
        if self._task is None or self._idle.is_set():
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), timeout)

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # One tick lets a burst of connects or subscribes share the round trip.
            await asyncio.sleep(TICK_S)
            self._wake.clear()
            registers, self._registers = self._registers, {}
            unregisters, self._unregisters = self._unregisters, {}
            states, self._states = self._states, {}
            waiters, self._waiters = self._waiters, []
            try:
                # Registry and states side by side: one round trip of wall time.
                results = await asyncio.gather(
                    self.presence.apply_writes(list(registers.values()), list(unregisters.items())),
                    self.store.save_states(states, self.state_ttl_s),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            except Exception as exc:
                # Redis away: keep what is newer, retry with the next tick.
                self.failures += 1
                log.warning("registry/state write failed: %s; retrying", exc)
                for k, v in registers.items():
                    self._registers.setdefault(k, v)
                for k, u in unregisters.items():
                    self._unregisters.setdefault(k, u)
                for k, s in states.items():
                    self._states.setdefault(k, s)
                self._waiters.extend(waiters)
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if not (self._registers or self._unregisters or self._states):
                self._idle.set()
