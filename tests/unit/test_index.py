"""Instance-local subscription index (tracker_ws/domain/index.py, ARCHITECTURE §2)."""

from __future__ import annotations

import random

import pytest

from tracker_ws.domain.index import SubscriptionIndex


def test_empty_index() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert len(idx) == 0
    assert idx.keys() == []
    assert idx.lookup(["vehicle:a"]) == set()
    assert idx.lookup([]) == set()
    assert not idx.has_any(["vehicle:a", "company:c"])
    assert not idx.has_any([])
    assert idx.subscriber_count("vehicle:a") == 0


def test_first_in_transitions() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.add("c1", ["vehicle:a", "company:x"]) == ["vehicle:a", "company:x"]
    # A second subscriber on an existing key is not a transition; a new key is.
    assert idx.add("c2", ["company:x", "group:g"]) == ["group:g"]
    # Re-adding the same connection changes nothing.
    assert idx.add("c1", ["vehicle:a"]) == []
    assert idx.subscriber_count("company:x") == 2
    assert idx.subscriber_count("vehicle:a") == 1
    assert sorted(idx.keys()) == ["company:x", "group:g", "vehicle:a"]
    assert len(idx) == 3


def test_duplicate_keys_in_one_call_report_once() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.add("c1", ["k", "k", "k"]) == ["k"]
    assert idx.subscriber_count("k") == 1
    assert idx.remove("c1", ["k", "k"]) == ["k"]
    assert len(idx) == 0


def test_last_out_transitions() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("c1", ["vehicle:a", "company:x"])
    idx.add("c2", ["company:x"])
    assert idx.remove("c1", ["company:x"]) == []  # c2 still holds it
    assert idx.subscriber_count("company:x") == 1
    assert idx.remove("c2", ["company:x"]) == ["company:x"]
    assert idx.subscriber_count("company:x") == 0
    assert idx.keys() == ["vehicle:a"]
    assert idx.remove("c1", ["vehicle:a"]) == ["vehicle:a"]
    assert len(idx) == 0
    # The key can come back: first-in again.
    assert idx.add("c2", ["vehicle:a"]) == ["vehicle:a"]


def test_add_with_no_keys() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.add("c1", []) == []
    assert idx.remove("c1", []) == []
    assert len(idx) == 0


def test_remove_unknown_key_or_connection_is_harmless() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.remove("c1", ["nope"]) == []
    idx.add("c1", ["k"])
    assert idx.remove("ghost", ["k"]) == []  # unknown connection on a live key
    assert idx.subscriber_count("k") == 1
    assert idx.lookup(["k"]) == {"c1"}
    assert idx.remove("c1", ["other", "k", "missing"]) == ["k"]
    assert idx.remove("c1", ["k"]) == []  # already gone
    assert len(idx) == 0


def test_lookup_is_a_union_without_duplicates() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("c1", ["vehicle:a", "company:x", "group:g"])
    idx.add("c2", ["company:x"])
    idx.add("c3", ["group:g"])
    idx.add("c4", ["vehicle:b"])
    got = idx.lookup(["vehicle:a", "company:x", "group:g", "unknown"])
    assert got == {"c1", "c2", "c3"}
    assert isinstance(got, set)
    assert idx.lookup(["vehicle:b"]) == {"c4"}
    assert idx.lookup(["vehicle:a", "vehicle:a"]) == {"c1"}


def test_lookup_returns_a_copy() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("c1", ["k"])
    got = idx.lookup(["k"])
    got.add("intruder")
    got.discard("c1")
    assert idx.lookup(["k"]) == {"c1"}
    assert idx.subscriber_count("k") == 1


def test_has_any() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("c1", ["company:x"])
    assert idx.has_any(["vehicle:a", "company:x"])
    assert idx.has_any(iter(["company:x"]))  # any iterable
    assert not idx.has_any(["vehicle:a", "group:g"])
    idx.remove("c1", ["company:x"])
    assert not idx.has_any(["company:x"])


def test_keys_returns_a_snapshot() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("c1", ["a", "b"])
    snap = idx.keys()
    idx.remove("c1", ["a"])  # mutating the index does not break the snapshot
    assert sorted(snap) == ["a", "b"]
    assert idx.keys() == ["b"]


def test_accepts_generators_as_key_iterables() -> None:
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    assert idx.add(1, (f"k{i}" for i in range(3))) == ["k0", "k1", "k2"]
    assert idx.remove(1, (f"k{i}" for i in range(2))) == ["k0", "k1"]
    assert idx.lookup(k for k in ["k2"]) == {1}


class _Model:
    """Naive dict-of-sets reference."""

    def __init__(self) -> None:
        self.by_key: dict[str, set[int]] = {}

    def add(self, conn: int, keys: list[str]) -> list[str]:
        first = []
        for k in keys:
            if not self.by_key.get(k):
                first.append(k)
            self.by_key.setdefault(k, set()).add(conn)
        return first

    def remove(self, conn: int, keys: list[str]) -> list[str]:
        last = []
        for k in keys:
            members = self.by_key.get(k)
            if members is None:
                continue
            members.discard(conn)
            if not members:
                del self.by_key[k]
                last.append(k)
        return last

    def lookup(self, keys: list[str]) -> set[int]:
        out: set[int] = set()
        for k in keys:
            out |= self.by_key.get(k, set())
        return out


@pytest.mark.parametrize("seed", [1, 2, 3, 20240611])
def test_randomized_against_model(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"vehicle:{i}" for i in range(12)] + [f"company:{i}" for i in range(3)] + ["group:g"]
    conns = list(range(8))
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    model = _Model()
    for step in range(2000):
        conn = rng.choice(conns)
        ks = [rng.choice(keys) for _ in range(rng.randint(0, 4))]  # may repeat keys
        op = rng.random()
        if op < 0.45:
            assert idx.add(conn, ks) == model.add(conn, ks), step
        elif op < 0.9:
            assert idx.remove(conn, ks) == model.remove(conn, ks), step
        else:
            # A connection closing: drop it from every key it might hold.
            assert idx.remove(conn, keys) == model.remove(conn, keys), step

        probe = rng.sample(keys, rng.randint(0, 5))
        assert idx.lookup(probe) == model.lookup(probe), step
        assert idx.has_any(probe) == bool(set(probe) & model.by_key.keys()), step
        assert set(idx.keys()) == set(model.by_key), step
        assert len(idx) == len(model.by_key), step
        for k in keys:
            assert idx.subscriber_count(k) == len(model.by_key.get(k, ())), step


def test_randomized_transitions_balance() -> None:
    """Over any history, first-in minus last-out per key equals whether the key is live."""
    rng = random.Random(7)
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    keys = [f"k{i}" for i in range(6)]
    balance = dict.fromkeys(keys, 0)
    for _ in range(2000):
        conn = rng.randrange(5)
        ks = rng.sample(keys, rng.randint(1, 3))
        if rng.random() < 0.5:
            for k in idx.add(conn, ks):
                balance[k] += 1
        else:
            for k in idx.remove(conn, ks):
                balance[k] -= 1
        assert all(v in (0, 1) for v in balance.values())
    live = set(idx.keys())
    assert {k for k, v in balance.items() if v == 1} == live
