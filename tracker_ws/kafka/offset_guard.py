"""Every record of an input partition reaches the agents, in offset order, none skipped.

Faust can hand the agents a partition's records with a hole in them after a rebalance: the
fetcher keeps records it fetched while the partition was paused or while its position was
being reset, and Faust's own gap handling then marks the missing offsets as done, so the
next commit moves past records nobody processed. Our input topics are neither compacted nor
transactional, so a hole is never legitimate. The guard remembers the next offset each
partition must deliver; a record past it means the fetch position ran ahead, and the
consumer seeks back to the missing offset instead of delivering it (see transport.py).
Records below it were delivered already (a re-fetch after a seek) and are dropped.

If a partition keeps coming back with the same hole (records deleted by retention, say),
the guard gives up on that offset after `max_rewinds` tries and lets the record through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")

DELIVER = "deliver"
DUPLICATE = "duplicate"
REWIND = "rewind"


@dataclass(frozen=True)
class Verdict:
    action: str  # DELIVER, DUPLICATE or REWIND
    to: int | None = None  # REWIND: the offset to seek back to; gave_up: the hole's start
    first: bool = False  # REWIND: the first time this hole is seen (worth a log line)
    gave_up: bool = False  # DELIVER past a hole that never filled (max_rewinds tries)


# The verdict for nearly every record, built once (checked per record at full ingest).
DELIVERED = Verdict(DELIVER)


class OffsetGuard(Generic[K]):
    def __init__(self, max_rewinds: int = 5) -> None:
        self.max_rewinds = max_rewinds
        self._next: dict[K, int] = {}
        self._rewinds: dict[K, tuple[int, int]] = {}  # partition -> (offset, tries)
        self._unprocessed: dict[K, int] = {}  # partition -> lowest offset handed back
        self.rewound = 0  # holes found (each counted once)
        self.given_up = 0  # holes let through after max_rewinds

    def expect(self, key: K, offset: int | None) -> None:
        """The partition was positioned at `offset` (a seek to the committed offset);
        None: position unknown, the next record sets it."""
        if offset is None:
            self._next.pop(key, None)
        else:
            self._next[key] = offset
        self._rewinds.pop(key, None)
        self._unprocessed.pop(key, None)

    def unprocessed(self, key: K, offset: int) -> None:
        """A delivered record was dropped before any agent processed it: it must be
        delivered again (unless a seek to the committed offset comes first)."""
        self._unprocessed[key] = min(offset, self._unprocessed.get(key, offset))

    def take_unprocessed(self) -> dict[K, int]:
        """Partitions to seek back, and where to; each is expected from there on."""
        if not self._unprocessed:
            return {}
        taken, self._unprocessed = self._unprocessed, {}
        for key, offset in taken.items():
            self._next[key] = offset
            self._rewinds.pop(key, None)
        return taken

    def check(self, key: K, offset: int) -> Verdict:
        want = self._next.get(key)
        if want is None or offset == want:
            self._next[key] = offset + 1
            if self._rewinds:
                self._rewinds.pop(key, None)
            return DELIVERED
        if offset < want:
            return Verdict(DUPLICATE)
        hole, tries = self._rewinds.get(key, (want, 0))
        if hole != want:
            tries = 0
        if tries >= self.max_rewinds:
            self.given_up += 1
            self._next[key] = offset + 1
            self._rewinds.pop(key, None)
            return Verdict(DELIVER, to=want, gave_up=True)
        self._rewinds[key] = (want, tries + 1)
        if tries == 0:
            self.rewound += 1
        return Verdict(REWIND, to=want, first=tries == 0)

    def next_offset(self, key: K) -> int | None:
        return self._next.get(key)
