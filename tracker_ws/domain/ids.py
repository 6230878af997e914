"""Connection ids: the UUID v4 text form of the seed, made without a syscall per connection.

`uuid.uuid4()` reads 16 bytes from the OS each time (2.2% of the connect path in S1). Here a
process draws one random UUID v4 and counts in its last 48 bits: 74 random bits tell
processes apart, the counter tells connections apart. A forked child draws its own.
"""

from __future__ import annotations

import itertools
import os
import uuid

_COUNTER_MASK = (1 << 48) - 1


class _Ids:
    __slots__ = ("next", "prefix")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # "xxxxxxxx-xxxx-4xxx-yxxx-": version and variant stay those of a v4 UUID.
        self.prefix = str(uuid.uuid4())[:24]
        self.next = itertools.count(1).__next__


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def connection_id() -> str:
    return f"{_ids.prefix}{_ids.next() & _COUNTER_MASK:012x}"
