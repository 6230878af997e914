from __future__ import annotations

from tracker_ws.kafka.consumer_watch import PartitionState, StallWatch


def part(
    committed: int | None, end: int | None, partition: int = 0, fetch: int | None = None
) -> PartitionState:
    return PartitionState(
        topic="gps-events",
        partition=partition,
        committed=committed,
        end=end,
        fetch_position=fetch,
        faust_paused=False,
        faust_active=True,
        kafka_paused=False,
    )


def test_lag_counts_from_the_committed_offset_or_else_the_fetch_position() -> None:
    assert part(5, 9).lag == 4
    assert part(None, 9, fetch=7).lag == 2
    assert part(None, 9).lag == 0  # nothing known: no claim
    assert part(9, None).lag == 0
    assert part(9, 9).lag == 0


def test_partition_with_waiting_records_and_no_progress_is_stalled_once_reported() -> None:
    watch = StallWatch(threshold_s=10)
    assert watch.observe(0, [part(5, 9)]) == ([], [])
    assert watch.observe(9.9, [part(5, 9)]) == ([], [])
    stalled, new = watch.observe(10, [part(5, 12)])
    assert [p.partition for p in stalled] == [0] and new == stalled
    stalled, new = watch.observe(20, [part(5, 12)])
    assert [p.partition for p in stalled] == [0] and new == []  # logged once


def test_progress_or_an_empty_backlog_restarts_the_clock() -> None:
    watch = StallWatch(threshold_s=10)
    watch.observe(0, [part(5, 9)])
    assert watch.observe(8, [part(6, 9)]) == ([], [])  # moved at t=8
    assert watch.observe(17, [part(6, 9)]) == ([], [])
    assert watch.observe(18, [part(6, 9)])[0] != []
    assert watch.observe(19, [part(9, 9)]) == ([], [])  # caught up
    assert watch.observe(28, [part(9, 9)]) == ([], [])  # idle is not stalled


def test_each_partition_has_its_own_clock_and_revoked_ones_are_forgotten() -> None:
    watch = StallWatch(threshold_s=10)
    watch.observe(0, [part(1, 5, partition=0), part(1, 5, partition=1)])
    stalled, _ = watch.observe(10, [part(1, 5, partition=0), part(2, 5, partition=1)])
    assert [p.partition for p in stalled] == [0]
    # partition 0 moved away and came back: its clock starts again
    watch.observe(11, [part(2, 5, partition=1)])
    assert watch.observe(12, [part(1, 5, partition=0)]) == ([], [])
