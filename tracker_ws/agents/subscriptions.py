"""Cluster-wide interest: which instances have subscribers for which routing keys.

Instances announce transitions of their local index (first subscriber in, last out) on
`ws-subscription-changes`; this agent folds them into the changelog-backed `subscriptions`
table, co-partitioned with gps-events, so the GPS agent can route each fix by local table
reads (ARCHITECTURE §2). Every table key carries its partition (`vehicle:{id}#p3`,
`company:{id}#p0` … `#p11`): a worker's table is one dict for all its partitions, and
coarse keys exist once per partition, so without the suffix two partitions would write the
same entry and their changelogs would disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import faust
import orjson

from tracker_ws.runtime import Runtime
from tracker_ws.tables.definitions import SUBSCRIPTION_CHANGES, Tables, Topics

log = logging.getLogger(__name__)

ADD, REMOVE, RESET = "add", "del", "reset"


def table_key(key: str, partition: int) -> str:
    return f"{key}#p{partition}"


def owned_entries(
    items: Iterable[tuple[str, dict[str, Any] | None]], partitions: Iterable[int]
) -> dict[str, list[str]]:
    """The entries of the partitions this instance owns now. The in-memory store keeps the
    entries a worker wrote while it owned a partition that has since moved (Faust's memory
    store forgets only what it restored from the changelog): those are stale and must not be
    shown as the cluster's interest."""
    suffixes = {f"#p{p}" for p in partitions}
    return {
        key: sorted(entry) for key, entry in items if entry and key[key.rfind("#") :] in suffixes
    }


def vehicle_of(key: str) -> str | None:
    """The vehicle a routing key is scoped to (its partition follows the vehicle), if any."""
    _, _, scoped = key.rpartition("/")
    scope, _, ident = scoped.partition(":")
    return ident if scope == "vehicle" else None


def apply_change(table: Any, partition: int, change: dict[str, Any]) -> None:
    """Fold one change into the table (runs inside the agent's event context)."""
    op, instance = change["op"], change["i"]
    if op == RESET:
        suffix = f"#p{partition}"
        for key in [k for k in table if k.endswith(suffix)]:
            entry = table.get(key)
            if entry and instance in entry:
                rest = {i: 1 for i in entry if i != instance}
                if rest:
                    table[key] = rest
                else:
                    del table[key]
        return
    key = table_key(change["k"], partition)
    entry = dict(table.get(key) or {})
    if op == ADD:
        entry[instance] = 1
    else:
        entry.pop(instance, None)
    if entry:
        table[key] = entry
    elif key in table:
        del table[key]


def install(app: faust.App, rt: Runtime, topics: Topics, tables: Tables) -> Any:
    subs = tables.subscriptions

    group = rt.settings.app_id

    async def subscription_changes(stream: faust.StreamT[bytes]) -> None:
        """Which instances follow which routing keys, per partition: the subscriptions table"""
        async for event in stream.events():
            try:
                change = orjson.loads(event.value)
                if change.get("g", group) != group:
                    continue  # another deployment (consumer group) sharing the topic
                apply_change(subs, event.message.partition, change)
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                rt.metrics.stream(SUBSCRIPTION_CHANGES, "invalid")
                log.warning("skipping malformed subscription change: %s", exc)

    return app.agent(topics.subscription_changes, name="tracker_ws.subscriptions")(
        subscription_changes
    )


class InterestAnnouncer:
    """Sends this instance's interest transitions, in order, from one task."""

    def __init__(self, rt: Runtime, topics: Topics, partitions: int) -> None:
        self.rt = rt
        self.topic = topics.subscription_changes
        self.partitions = partitions
        self._queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def on_interest(self, added: list[str], removed: list[str]) -> None:
        me = self.rt.settings.instance_id
        for key in added:
            self._queue.put_nowait((ADD, me, key))
        for key in removed:
            self._queue.put_nowait((REMOVE, me, key))

    def reset(self, instance_id: str) -> None:
        self._queue.put_nowait((RESET, instance_id, ""))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="interest")

    async def drain(self) -> None:
        await self._queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            op, instance, key = await self._queue.get()
            try:
                await self._send(op, instance, key)
                self.sent += 1
            except Exception as exc:
                log.warning("could not announce %s %s: %s", op, key, exc)
            finally:
                self._queue.task_done()

    async def _send(self, op: str, instance: str, key: str) -> None:
        value = orjson.dumps({"op": op, "i": instance, "k": key, "g": self.rt.settings.app_id})
        vehicle = vehicle_of(key) if op != RESET else None
        if vehicle is not None:
            # Same key bytes as gps-events: the default partitioner puts it on the
            # partition that owns the vehicle.
            await self.topic.send(key=vehicle.encode(), value=value)
            return
        for p in self._partitions():
            await self.topic.send(key=key.encode() or None, value=value, partition=p)

    def _partitions(self) -> Iterable[int]:
        return range(self.partitions)
