"""domain/ids.connection_id: UUID v4 text, distinct within a process and across a fork."""

from __future__ import annotations

import itertools
import os
import uuid

from tracker_ws.domain.ids import connection_id


def test_ids_are_uuid4_text_and_distinct() -> None:
    ids = [connection_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in (ids[0], ids[-1]):
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and str(parsed) == value


def test_ids_do_not_count_in_the_open() -> None:
    tails = [int(connection_id()[24:], 16) for _ in range(1_000)]
    steps = {b - a for a, b in itertools.pairwise(tails)}
    assert steps != {1}  # not a plain counter
    assert len({t >> 40 for t in tails}) > 100  # the high bits change too


def test_a_forked_child_draws_its_own_prefix() -> None:
    parent = connection_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running pytest's teardown
        os.write(write_end, connection_id().encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert uuid.UUID(child).version == 4
    assert child[:24] != parent[:24]
