"""Per-connection outbox with position coalescing (tracker_ws/domain/batching.py, ARCHITECTURE §4).

Every test drives `Outbox` with an explicit clock (`now` arguments): no event loop, no sleeps.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tracker_ws.domain.batching import Held, Outbox, release_after_replay
from tracker_ws.domain.models import GpsFix, Sensors
from tracker_ws.domain.protocol import (
    encode_batch_fragment,
    encode_position,
    position_dict,
)

WINDOW = 0.05
T0 = 1000.0
TS = 1_700_000_000_000  # frame/fix timestamp, epoch ms (fixed so frames are byte-stable)

V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"


def _pos_json(event_id: int) -> bytes:
    # The speed carries the eventId so a decoded fragment tells which fix it came from.
    fix = GpsFix(V1, 52.5, 13.4, float(event_id), 90, TS + event_id)
    return orjson.dumps(position_dict(fix))


def single(vid: str, event_id: int) -> bytes:
    return encode_position(event_id, vid, _pos_json(event_id), ts_ms=TS)


def fragment(vid: str, event_id: int, *, sensors: Sensors | None = None) -> bytes:
    return encode_batch_fragment(vid, f"truck {vid[:4]}", _pos_json(event_id), "moving", sensors)


def push(ob: Outbox, vid: str, event_id: int, *, with_single: bool = True) -> bytes | None:
    s = single(vid, event_id) if with_single else None
    ob.push_position(vid, event_id, s, fragment(vid, event_id))
    return s


def decode(frame: bytes) -> dict[str, Any]:
    value = orjson.loads(frame)
    assert isinstance(value, dict)
    return value


def batch_ids(frame: bytes) -> dict[str, int]:
    """vehicleId -> eventId of the fix included in a positionBatch frame."""
    msg = decode(frame)
    assert msg["type"] == "positionBatch"
    vids = [p["vehicleId"] for p in msg["positions"]]
    assert len(vids) == len(set(vids)), "a vehicle appears twice in one batch"
    return {p["vehicleId"]: int(p["position"]["speed"]) for p in msg["positions"]}


# ------------------------------------------------------------------------------ idle → at once


def test_empty_outbox() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    assert not ob.has_work
    assert ob.depth() == 0
    assert ob.delay(T0) == 0.0
    assert ob.take(T0) == []
    assert ob.limit == 10
    assert ob.window == WINDOW


def test_idle_connection_sends_single_position_at_once() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    s = push(ob, V1, 7)
    assert ob.has_work
    assert ob.depth() == 1
    assert ob.delay(T0) == 0.0
    out = ob.take(T0)
    assert out == [s]  # exactly the pre-encoded `position` frame, byte for byte
    assert decode(out[0])["type"] == "position"
    assert not ob.has_work
    assert ob.depth() == 0


def test_idle_again_after_the_window_has_passed() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    s = push(ob, V1, 2)
    later = T0 + 3 * WINDOW
    assert ob.delay(later) == 0.0
    assert ob.take(later) == [s]


def test_frame_only_take_does_not_start_a_window() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    assert ob.push(b"reply")
    assert ob.take(T0) == [b"reply"]
    s = push(ob, V1, 1)
    assert ob.delay(T0) == 0.0
    assert ob.take(T0) == [s]


# ------------------------------------------------------------------------------ coalescing


def test_positions_within_window_coalesce_to_latest_per_vehicle() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    assert len(ob.take(T0)) == 1  # the window starts now

    t = T0 + WINDOW / 5
    push(ob, V1, 2)
    push(ob, V2, 3)
    push(ob, V1, 4)
    push(ob, V3, 5)
    push(ob, V2, 6)
    assert ob.depth() == 3  # one entry per vehicle
    assert ob.take(t) == []  # still inside the window: nothing due
    assert ob.depth() == 3

    out = ob.take(T0 + WINDOW)  # exactly at the end of the window: due
    assert len(out) == 1
    msg = decode(out[0])
    assert msg["type"] == "positionBatch"
    assert msg["eventId"] == 6  # max of the included fixes
    assert batch_ids(out[0]) == {V1: 4, V2: 6, V3: 5}
    assert ob.depth() == 0
    assert not ob.has_work


def test_batch_event_id_is_max_of_included_not_of_pushed() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    push(ob, V1, 10)
    push(ob, V2, 3)
    out = ob.take(T0 + WINDOW)
    assert decode(out[0])["eventId"] == 10
    assert batch_ids(out[0]) == {V1: 10, V2: 3}


def test_batch_fragments_are_spliced_verbatim() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    f1 = fragment(V1, 2, sensors=Sensors(fuel=12.5, ignition=True))
    f2 = fragment(V2, 3)
    ob.push_position(V1, 2, single(V1, 2), f1)
    ob.push_position(V2, 3, single(V2, 3), f2)
    (frame,) = ob.take(T0 + WINDOW)
    assert f1 in frame
    assert f2 in frame
    msg = decode(frame)
    by_vid = {p["vehicleId"]: p for p in msg["positions"]}
    assert by_vid[V1] == orjson.loads(f1)
    assert by_vid[V1]["sensors"] == {"fuel": 12.5, "ignition": True}
    assert by_vid[V2] == orjson.loads(f2)
    assert "sensors" not in by_vid[V2]


def test_one_vehicle_coalesced_in_window_goes_out_as_its_latest_single() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    push(ob, V1, 2)
    s3 = push(ob, V1, 3)
    assert ob.take(T0 + WINDOW) == [s3]


def test_window_restarts_after_each_position_flush() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    push(ob, V1, 2)
    t1 = T0 + WINDOW
    assert len(ob.take(t1)) == 1
    push(ob, V2, 3)
    assert ob.take(t1 + WINDOW / 2) == []
    assert ob.delay(t1 + WINDOW / 2) == pytest.approx(WINDOW / 2)
    s = single(V2, 3)
    assert ob.take(t1 + WINDOW) == [s]


# ------------------------------------------------------------------------------ single=None


def test_single_none_forces_batch_form_for_one_vehicle() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 9, with_single=False)
    out = ob.take(T0)
    assert len(out) == 1
    msg = decode(out[0])
    assert msg["type"] == "positionBatch"
    assert msg["eventId"] == 9
    assert len(msg["positions"]) == 1
    assert msg["positions"][0] == orjson.loads(fragment(V1, 9))


def test_latest_push_decides_single_or_batch_form() -> None:
    # single first, then a status-only update (single None): the newest wins → batch form.
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    push(ob, V1, 2, with_single=False)
    (frame,) = ob.take(T0)
    assert decode(frame)["type"] == "positionBatch"
    assert batch_ids(frame) == {V1: 2}

    # status-only first, then a regular fix: the newest has a single → single form.
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1, with_single=False)
    s = push(ob, V1, 2)
    assert ob.take(T0) == [s]


def test_single_none_among_several_vehicles_is_just_a_fragment() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1, with_single=False)
    push(ob, V2, 2)
    (frame,) = ob.take(T0)
    assert decode(frame)["eventId"] == 2
    assert batch_ids(frame) == {V1: 1, V2: 2}


# ------------------------------------------------------------------------------ frames


def test_frames_fifo_and_positions_in_arrival_order() -> None:
    # A pending position goes out ahead of a frame queued after it: eventIds stay in order.
    ob = Outbox(limit=10, window_s=WINDOW)
    assert ob.push(b"a")
    s = push(ob, V1, 1)
    assert ob.push(b"b")
    assert ob.push(b"c")
    assert ob.depth() == 4
    assert ob.take(T0) == [b"a", s, b"b", b"c"]
    assert ob.depth() == 0


def test_positions_after_the_last_frame_wait_at_the_end() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    assert ob.push(b"a")
    s = push(ob, V1, 1)
    assert ob.take(T0) == [b"a", s]


def test_a_frame_takes_pending_positions_along_ahead_of_it() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    push(ob, V1, 1)
    ob.take(T0)
    t = T0 + WINDOW / 2
    push(ob, V2, 2)
    assert ob.delay(t) == pytest.approx(WINDOW / 2)  # alone, the position waits
    assert ob.push(b"geo")
    assert ob.delay(t) == 0.0  # a frame is waiting
    assert ob.take(t) == [single(V2, 2), b"geo"]
    assert not ob.has_work


# ------------------------------------------------------------------------------ delay()


def test_delay_semantics() -> None:
    ob = Outbox(limit=10, window_s=WINDOW)
    assert ob.delay(T0) == 0.0  # nothing to do
    push(ob, V1, 1)
    assert ob.delay(T0) == 0.0  # idle: at once
    ob.take(T0)
    assert ob.delay(T0 + 0.01) == 0.0  # nothing queued
    push(ob, V1, 2)
    assert ob.delay(T0) == pytest.approx(WINDOW)
    assert ob.delay(T0 + 0.01) == pytest.approx(WINDOW - 0.01)
    assert ob.delay(T0 + WINDOW) == 0.0
    assert ob.delay(T0 + 10) == 0.0  # never negative
    ob.push(b"x")
    assert ob.delay(T0 + 0.01) == 0.0  # frames are always due


def test_zero_window_never_delays() -> None:
    ob = Outbox(limit=10, window_s=0.0)
    for eid in range(1, 5):
        s = push(ob, V1, eid)
        assert ob.delay(T0) == 0.0
        assert ob.take(T0) == [s]


# ------------------------------------------------------------------------------ limit, depth


def test_push_returns_false_past_limit() -> None:
    ob = Outbox(limit=3, window_s=WINDOW)
    assert [ob.push(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
    assert ob.depth() == 3
    assert ob.take(T0) == [b"0", b"1", b"2"]  # the refused frames were not queued
    assert ob.push(b"again")
    assert ob.take(T0) == [b"again"]


def test_zero_limit_refuses_every_frame() -> None:
    ob = Outbox(limit=0, window_s=WINDOW)
    assert not ob.push(b"x")
    assert not ob.has_work


def test_positions_never_count_against_the_limit() -> None:
    ob = Outbox(limit=2, window_s=WINDOW)
    vids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(50)]
    for rnd in range(20):
        for i, vid in enumerate(vids):
            push(ob, vid, rnd * 100 + i)
    assert ob.depth() == 50  # coalesced: one per vehicle
    assert ob.push(b"a")  # the 50 positions go ahead of it as one batch frame
    assert not ob.push(b"b")  # that batch and "a" fill the limit of 2 frames
    assert ob.push(b"b", force=True)  # a replay before the writer starts is not limited
    out = ob.take(T0)
    assert out[1:] == [b"a", b"b"]
    assert len(out) == 3
    ids = batch_ids(out[0])
    assert ids == {vid: 1900 + i for i, vid in enumerate(vids)}
    assert decode(out[0])["eventId"] == 1949


def test_positions_accepted_while_frame_queue_is_full() -> None:
    ob = Outbox(limit=1, window_s=WINDOW)
    assert ob.push(b"full")
    assert not ob.push(b"over")
    s = push(ob, V1, 1)  # push_position has no limit and returns nothing
    assert ob.depth() == 2
    assert ob.take(T0) == [b"full", s]


def test_depth_counts_frames_plus_distinct_vehicles() -> None:
    ob = Outbox(limit=100, window_s=WINDOW)
    for i in range(4):
        ob.push(b"%d" % i)
    push(ob, V1, 1)
    push(ob, V1, 2)
    push(ob, V2, 3)
    assert ob.depth() == 4 + 2
    assert len(ob.take(T0)) == 5  # 4 frames + 1 batch
    assert ob.depth() == 0


def test_release_after_replay_drops_positions_the_replay_passed_and_keeps_events() -> None:
    pos = ("v1", b"single", b"fragment")
    held: list[Held] = [(244, pos), (245, b"geo"), (246, pos), (247, b"alert")]
    # The replay sent events up to 245: position 244 is in the snapshot that follows it.
    assert release_after_replay(held, 245) == [(245, b"geo"), (246, pos), (247, b"alert")]
    # Nothing replayed (a fresh start: 0): everything, in arrival order.
    assert release_after_replay(held, 0) == held
    # Events are never dropped here (the session's push_event skips repeats).
    assert release_after_replay([(10, b"geo")], 99) == [(10, b"geo")]
