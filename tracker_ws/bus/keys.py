"""Redis key and channel names, for a single Redis or a Redis Cluster.

Single Redis: the names of seed §4 and ARCHITECTURE §3, byte for byte (instances of two
versions share one Redis during a rolling upgrade). A cluster adds hash tags so that every
Lua call stays on one slot:

- publish.lua touches the event id counter, the last-position and last-fix hashes, the set of
  instances, dedupe keys and history streams (and their floors), and SPUBLISHes the delivery
  channels: all of them are prefixed with `{ws}:`, one slot (the global counter makes the
  publish step single-slot anyway).
- cleanup.lua touches one instance's keys: `ws:instance:{<id>}:…` share the instance's slot.
- per-user registry hashes and saved states are single-key operations: no tag needed.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLISH_TAG = "{ws}:"


@dataclass(frozen=True, slots=True)
class KeySpace:
    cluster: bool = False

    def _pub(self, name: str) -> str:
        return PUBLISH_TAG + name if self.cluster else name

    # -- the publish slot
    @property
    def event_id(self) -> str:
        return self._pub("ws:event_id")

    @property
    def last_positions(self) -> str:
        return self._pub("ws:last_positions")

    @property
    def last_fix(self) -> str:
        return self._pub("ws:last_fix_ms")

    @property
    def instances(self) -> str:
        return self._pub("ws:instances")

    def dedupe(self, dedupe_id: str) -> str:
        return self._pub("ws:dedupe:" + dedupe_id)

    def history(self, stream: str) -> str:
        """The key of a history stream named by the caller (e.g. `ws:history:user:{id}`)."""
        return self._pub(stream)

    def floor(self, stream: str) -> str:
        return self._pub(stream + ":floor")

    @property
    def deliver_prefix(self) -> str:
        return self._pub("ws:deliver:")

    def deliver(self, instance_id: str) -> str:
        return self.deliver_prefix + instance_id

    # -- one instance's slot
    def _instance(self, instance_id: str, what: str) -> str:
        if self.cluster:
            return f"ws:instance:{{{instance_id}}}:{what}"
        return f"ws:instance:{instance_id}:{what}"

    def instance_connections(self, instance_id: str) -> str:
        return self._instance(instance_id, "connections")

    def instance_conn_users(self, instance_id: str) -> str:
        return self._instance(instance_id, "conn_users")

    def instance_alive(self, instance_id: str) -> str:
        return self._instance(instance_id, "alive")

    # -- single keys
    @staticmethod
    def janitor(instance_id: str) -> str:
        return f"ws:janitor:{instance_id}"

    @staticmethod
    def user_connections(user_id: str) -> str:
        return f"ws:conn:user:{user_id}"

    @staticmethod
    def state(key: str) -> str:
        return f"ws:state:{key}"

    @staticmethod
    def state_seen(key: str) -> str:
        return f"ws:state:{key}:seen"

    # -- regular (cluster-wide) pub/sub channels
    @staticmethod
    def control(instance_id: str) -> str:
        return f"ws:control:{instance_id}"

    @staticmethod
    def reply(instance_id: str) -> str:
        return f"ws:reply:{instance_id}"
