"""Connection ids: the UUID v4 text form of the seed, made without a syscall per connection.

`uuid.uuid4()` reads 16 bytes from the OS each time (2.2% of the connect path in S1). Here a
process draws one random UUID v4 and fills its last 48 bits from a counter: 74 random bits
tell processes apart, the counter tells connections apart. The counter goes through a random
bijection of 48-bit numbers (an odd multiplier and an offset, drawn with the prefix), so an
id does not show how many connections the process has had. A forked child draws its own.
"""

from __future__ import annotations

import itertools
import os
import uuid

_BITS = 48
_MASK = (1 << _BITS) - 1


class _Ids:
    __slots__ = ("mult", "next", "offset", "prefix")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # "xxxxxxxx-xxxx-4xxx-yxxx-": version and variant stay those of a v4 UUID.
        self.prefix = str(uuid.uuid4())[:24]
        draw = int.from_bytes(os.urandom(12), "big")
        self.mult = (draw >> _BITS) | 1  # odd: n -> n * mult mod 2**48 is one-to-one
        self.offset = draw & _MASK
        self.next = itertools.count(1).__next__


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def connection_id() -> str:
    ids = _ids
    return f"{ids.prefix}{(ids.next() * ids.mult + ids.offset) & _MASK:012x}"
