"""The instance-local subscription index: routing key → the local connections holding it.

Reference-counted per key so that the instance can announce interest transitions (first
local subscriber in, last one out) to the cluster-wide `subscriptions` table (ARCHITECTURE §2).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class SubscriptionIndex(Generic[C]):
    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, set[C]] = {}

    def add(self, conn: C, keys: Iterable[str]) -> list[str]:
        """Register `conn` under `keys`; returns keys that had no local subscriber before."""
        first: list[str] = []
        for key in keys:
            members = self._by_key.get(key)
            if members is None:
                self._by_key[key] = {conn}
                first.append(key)
            else:
                members.add(conn)
        return first

    def remove(self, conn: C, keys: Iterable[str]) -> list[str]:
        """Unregister `conn` from `keys`; returns keys whose last local subscriber left."""
        last: list[str] = []
        for key in keys:
            members = self._by_key.get(key)
            if members is None:
                continue
            members.discard(conn)
            if not members:
                del self._by_key[key]
                last.append(key)
        return last

    def lookup(self, keys: Iterable[str]) -> set[C]:
        """Union of the connections under any of `keys` (each connection once)."""
        out: set[C] = set()
        for key in keys:
            members = self._by_key.get(key)
            if members:
                out |= members
        return out

    def has_any(self, keys: Iterable[str]) -> bool:
        return not self._by_key.keys().isdisjoint(keys)

    def keys(self) -> list[str]:
        return list(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def subscriber_count(self, key: str) -> int:
        return len(self._by_key.get(key, ()))
