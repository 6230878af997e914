from __future__ import annotations

from tracker_ws.kafka.offset_guard import DELIVER, DUPLICATE, REWIND, OffsetGuard


def actions(guard: OffsetGuard[str], key: str, offsets: list[int]) -> list[str]:
    return [guard.check(key, o).action for o in offsets]


def test_unknown_position_takes_the_first_record_then_requires_the_next_one() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    assert actions(guard, "p0", [40, 41, 42]) == [DELIVER] * 3
    assert guard.next_offset("p0") == 43


def test_a_record_past_the_expected_offset_rewinds_to_the_hole() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.expect("p0", 189)
    verdict = guard.check("p0", 229)
    assert (verdict.action, verdict.to, verdict.first) == (REWIND, 189, True)
    assert guard.rewound == 1
    # after the seek the hole is filled from its first offset on
    assert actions(guard, "p0", [189, 190]) == [DELIVER, DELIVER]
    assert guard.next_offset("p0") == 191


def test_records_already_delivered_are_duplicates() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.expect("p0", 10)
    assert actions(guard, "p0", [10, 11, 12]) == [DELIVER] * 3
    guard.expect("p0", 11)  # a seek back to the committed offset
    assert actions(guard, "p0", [11, 12, 13]) == [DELIVER] * 3
    assert actions(guard, "p0", [12]) == [DUPLICATE]


def test_a_hole_that_never_fills_is_let_through_after_max_rewinds() -> None:
    guard: OffsetGuard[str] = OffsetGuard(max_rewinds=3)
    guard.expect("p0", 5)
    verdicts = [guard.check("p0", 9) for _ in range(4)]
    assert [v.action for v in verdicts] == [REWIND, REWIND, REWIND, DELIVER]
    assert [v.first for v in verdicts[:3]] == [True, False, False]
    assert [v.gave_up for v in verdicts] == [False, False, False, True]
    assert verdicts[-1].to == 5  # where the hole that never filled began
    assert (guard.rewound, guard.given_up) == (1, 1)
    assert guard.next_offset("p0") == 10


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.expect("p0", 5)
    guard.expect("p1", 7)
    assert guard.check("p1", 9).action == REWIND
    assert guard.check("p0", 5).action == DELIVER
    guard.expect("p1", None)  # revoked: forgotten
    assert guard.check("p1", 9).action == DELIVER
    guard.expect("p0", None)
    assert guard.check("p0", 100).action == DELIVER


def test_records_handed_back_are_delivered_again_from_the_lowest_one() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.expect("p0", 7)
    assert actions(guard, "p0", [7, 8, 9]) == [DELIVER] * 3
    guard.unprocessed("p0", 8)
    guard.unprocessed("p0", 7)
    assert guard.take_unprocessed() == {"p0": 7}
    assert guard.take_unprocessed() == {}
    assert actions(guard, "p0", [7, 8, 9, 10]) == [DELIVER] * 4


def test_a_seek_to_the_committed_offset_supersedes_records_handed_back() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.expect("p0", 7)
    guard.check("p0", 7)
    guard.unprocessed("p0", 7)
    guard.expect("p0", 7)  # the rebalance's seek
    assert guard.take_unprocessed() == {}
    guard.unprocessed("p1", 3)
    guard.expect("p1", None)  # revoked: forgotten
    assert guard.take_unprocessed() == {}
