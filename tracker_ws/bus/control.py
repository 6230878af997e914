"""Request/reply between instances over per-instance control channels, so that an admin
action on any instance reaches a connection on any other.

A request goes to `ws:control:{target}` of each target; each answers on
`ws:reply:{sender}`. Backends only send bytes (`_send_control`, `_send_reply`) and hand what
they receive to `_on_control` / `_on_reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import orjson

from tracker_ws.bus.base import CommandHandler

log = logging.getLogger(__name__)


class Control(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._command_handler: CommandHandler | None = None
        self._pending: dict[str, tuple[set[str], dict[str, dict[str, Any]], asyncio.Event]] = {}

    def on_command(self, handler: CommandHandler) -> None:
        self._command_handler = handler

    @abstractmethod
    async def _send_control(self, target: str, data: bytes) -> None: ...

    @abstractmethod
    async def _send_reply(self, target: str, data: bytes) -> None: ...

    def new_request(self, targets: Iterable[str]) -> str:
        """Open a request before sending what it answers (admin broadcast: the replies
        count deliveries of a published alert)."""
        req = uuid.uuid4().hex
        self._pending[req] = (set(targets), {}, asyncio.Event())
        return req

    async def gather_replies(self, req: str, timeout: float) -> dict[str, dict[str, Any]]:
        """Replies to `req` by instance id, waiting until all targets answered or `timeout`."""
        targets, replies, done = self._pending[req]
        if not targets:
            done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        self._pending.pop(req, None)
        return replies

    async def reply(self, target: str, req: str, payload: dict[str, Any]) -> None:
        data = orjson.dumps({"req": req, "from": self.instance_id, "reply": payload})
        await self._send_reply(target, data)

    async def call(
        self, targets: Iterable[str], command: str, args: dict[str, Any], timeout: float = 2.0
    ) -> dict[str, dict[str, Any]]:
        """Run `command` on each target instance; their replies by instance id (missing:
        did not answer within `timeout`)."""
        targets = list(targets)
        req = self.new_request(targets)
        data = orjson.dumps({"cmd": command, "args": args, "req": req, "from": self.instance_id})
        for target in targets:
            try:
                await self._send_control(target, data)
            except Exception as exc:
                log.warning("control message to %s failed: %s", target, exc)
        return await self.gather_replies(req, timeout)

    def _on_control(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
            command, args, req, sender = msg["cmd"], msg["args"], msg["req"], msg["from"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring malformed control message %r", data[:200])
            return
        asyncio.get_running_loop().create_task(self._run_command(command, args, req, sender))

    async def _run_command(self, command: str, args: dict[str, Any], req: str, sender: str) -> None:
        handler = self._command_handler
        result: dict[str, Any] | None = None
        try:
            if handler is not None:
                result = await handler(command, args)
        except Exception as exc:
            log.exception("control command %s failed", command)
            result = {"error": str(exc)}
        with contextlib.suppress(Exception):
            await self.reply(sender, req, result or {})

    def _on_reply(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
            req, sender, payload = msg["req"], msg["from"], msg["reply"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        pending = self._pending.get(req)
        if pending is None:
            return  # late reply after the timeout
        targets, replies, done = pending
        replies[sender] = payload
        if targets <= replies.keys():
            done.set()
