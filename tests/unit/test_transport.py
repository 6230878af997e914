"""Which assigned partitions get their start pinned (tracker_ws.kafka.transport)."""

from aiokafka import TopicPartition

from tracker_ws.kafka.transport import is_changelog, never_committed, true_end


def test_only_input_partitions_without_a_commit_are_pinned() -> None:
    committed = {
        TopicPartition("gps-events", 1): None,
        TopicPartition("gps-events", 0): 17,
        TopicPartition("notification-events", 3): None,
        TopicPartition("notification-events", 4): 0,  # committed at offset 0 is a commit
        TopicPartition("tracker-ws-subscriptions-changelog", 2): None,
    }
    assert never_committed(committed) == [
        TopicPartition("gps-events", 1),
        TopicPartition("notification-events", 3),
    ]


def test_nothing_to_pin_once_everything_is_committed() -> None:
    assert never_committed({TopicPartition("gps-events", p): p for p in range(4)}) == []


def test_changelog_topics_are_recognised_by_their_suffix() -> None:
    assert is_changelog("tracker-ws-last_positions-changelog")
    assert not is_changelog("ws-subscription-changes")


def test_true_end_is_one_past_the_last_record_seen_or_the_reported_end() -> None:
    assert true_end(1, 6) == 7  # the broker counted only the last batch's first record
    assert true_end(5, 4) == 5
    assert true_end(5, None) == 5
    assert true_end(0, None) == 0
