"""When table recovery reads changelogs' last batches (tracker_ws.kafka.transport.LogEndCheck)."""

from __future__ import annotations

from tracker_ws.kafka.transport import LogEndCheck


def test_untrusted_reads_every_non_empty_partition_its_fetches_do_not_confirm() -> None:
    check: LogEndCheck[str] = LogEndCheck()
    reported = {"a": 5, "b": 0, "c": 9, "d": 3}
    # a: never fetched; b: empty; c: the last fetch saw the same end; d: grew since
    fetched = {"a": None, "b": None, "c": 9, "d": 2}
    assert check.to_read(reported, fetched) == {"a": 5, "d": 3}
    assert check.short is None


def test_trusted_reads_nothing_until_an_answer_is_seen_short() -> None:
    check: LogEndCheck[str] = LogEndCheck(trusted=True)
    assert check.to_read({"a": 5, "c": 9}, {"c": 9}) == {}
    assert not check.active
    # A fetch of c saw records up to offset 11 while the broker says the end is 9.
    assert check.to_read({"a": 5, "c": 9}, {"c": 12}) == {"a": 5, "c": 9}
    assert check.active
    assert check.short == "c: answered 9, holds records up to 11"
    # For good: later answers are read even when they look right.
    assert check.to_read({"a": 6}, {}) == {"a": 6}


def test_a_read_past_the_answer_is_recorded_once() -> None:
    check: LogEndCheck[str] = LogEndCheck(trusted=True)
    assert check.saw_short("p", 1, 7)
    assert not check.saw_short("q", 2, 4)
    assert check.short == "p: answered 1, holds records up to 6"
    assert check.active
