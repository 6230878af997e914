"""Small validators (tracker_ws/domain/validate.py): `?lastEventId=` and one-of choices."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.bad_input import BAD_LAST_EVENT_IDS
from tracker_ws.domain.errors import InvalidEvent, InvalidMessage
from tracker_ws.domain.validate import MAX_STREAM_EVENT_ID, choice, integer, last_event_id, number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("1", 1), ("007", 7), ("123456", 123456), (str(2**63 - 1), 2**63 - 1)],
)
def test_last_event_id_accepts_plain_digits_up_to_2_63_minus_1(raw: str, expected: int) -> None:
    assert last_event_id(raw) == expected
    assert MAX_STREAM_EVENT_ID == 2**63 - 1


@pytest.mark.parametrize("raw", BAD_LAST_EVENT_IDS, ids=[v[:24] for v in BAD_LAST_EVENT_IDS])
def test_last_event_id_refuses_anything_else(raw: str) -> None:
    with pytest.raises(InvalidMessage, match="lastEventId") as info:
        last_event_id(raw)
    assert info.value.code == "INVALID_MESSAGE"
    assert len(info.value.message) < 200


def test_choice_returns_a_listed_string() -> None:
    assert choice("warning", "level", InvalidMessage, ("info", "warning")) == "warning"


@pytest.mark.parametrize("value", [["info"], {"info": 1}, None, True, 1, "INFO", "", b"info"])
def test_choice_refuses_other_values_and_unhashable_ones(value: Any) -> None:
    with pytest.raises(InvalidMessage, match="level must be one of info, warning"):
        choice(value, "level", InvalidMessage, iter(("info", "warning")))


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), True, False, "1", None]
)
def test_number_refuses_what_is_not_a_finite_number_in_range(value: object) -> None:
    with pytest.raises(InvalidEvent):
        number(value, "speed", InvalidEvent, -10, 10)


def test_number_and_integer_accept_plain_values_at_the_bounds() -> None:
    assert number(-10, "x", InvalidEvent, -10, 10) == -10.0
    assert isinstance(number(10, "x", InvalidEvent, -10, 10), float)
    assert number(2.5, "x", InvalidEvent, -10, 10) == 2.5
    assert integer(7, "x", InvalidEvent, 0, 7) == 7
    assert integer(3.0, "x", InvalidEvent, 0, 7) == 3
    for bad in (True, 8, -1, 2.5):
        with pytest.raises(InvalidEvent):
            integer(bad, "x", InvalidEvent, 0, 7)
