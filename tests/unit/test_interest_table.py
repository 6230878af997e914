"""The interest table's fold and the owned view the admin API shows (agents/subscriptions.py)."""

from __future__ import annotations

from typing import Any

from tracker_ws.agents.subscriptions import ADD, REMOVE, RESET, apply_change, owned_entries


def fold(changes: list[tuple[int, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for partition, change in changes:
        apply_change(table, partition, change)
    return table


def test_a_reset_withdraws_one_instance_from_its_partition_only() -> None:
    table = fold(
        [
            (0, {"op": ADD, "i": "a", "k": "company:c"}),
            (0, {"op": ADD, "i": "b", "k": "company:c"}),
            (1, {"op": ADD, "i": "b", "k": "company:c"}),
            (0, {"op": RESET, "i": "b", "k": ""}),
        ]
    )
    assert table == {"company:c#p0": {"a": 1}, "company:c#p1": {"b": 1}}


def test_the_last_remove_deletes_the_entry() -> None:
    table = fold(
        [
            (3, {"op": ADD, "i": "a", "k": "vehicle:v"}),
            (3, {"op": REMOVE, "i": "a", "k": "vehicle:v"}),
        ]
    )
    assert table == {}


def test_the_owned_view_leaves_out_partitions_that_moved_away_and_empty_entries() -> None:
    items = [
        ("company:c#p0", {"a": 1, "b": 1}),
        ("company:c#p1", {"a": 1, "dead": 1}),  # written here before p1 moved to another worker
        ("company:c#p10", {"a": 1}),
        ("vehicle:v#p2", {}),
    ]
    assert owned_entries(items, [0, 2, 10]) == {
        "company:c#p0": ["a", "b"],
        "company:c#p10": ["a"],
    }
