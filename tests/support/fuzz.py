"""A seeded generator of hostile client frames for the fuzz test (plain Python, no I/O).

Each frame says what the server must do with it: answer and keep the connection (`close` None),
or close with a given code (1007 invalid UTF-8 in a text frame, 1009 over the size limit).
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

CLOSE_INVALID_TEXT = 1007
CLOSE_TOO_BIG = 1009

MESSAGE_TYPES = ("subscribe", "unsubscribe", "getState", "ping", "ack")
SUBSCRIPTION_TYPES = ("vehicles", "geoEvents", "notifications", "maintenance", "systemAlerts")
FILTER_TYPES = ("all", "byIds", "byGroup", "byGeozone")
FIELDS = ("type", "subscriptionType", "filter", "vehicleIds", "eventId", "ids", "groupId")

# Strings that trip naive decoders, normalisers and loggers.
ODD_STRINGS = (
    "",
    " ",
    "\u0000",
    "\ufeff",  # byte order mark
    "\u202e" + "gnip",  # right-to-left override
    "\u200b\u200c\u200d",  # zero-width characters
    "e\u0301" * 50,  # combining accents
    "\U0001f69a" * 20,  # emoji (4-byte UTF-8)
    "\uffff\U0010ffff",  # non-characters
    "ping\x00",
    "PING",
    "%s%n{0}${x}",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "NaN",
    "Infinity",
)

# JSON texts no Python object encodes to: lone surrogates, big numbers, literals, BOMs.
RAW_JSON_VALUES = (
    '"\\ud800"',
    '"\\udfff\\ud800"',
    "1e400",
    "-1e400",
    "1" + "0" * 400,
    "-0",
    "0.0000000000000000000000001",
    "NaN",
    "Infinity",
    "true",
    "null",
    '"\\u0000"',
    "18446744073709551616",
    "9007199254740993",
)


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # category, for failure messages
    data: str | bytes  # bytes of an op "text" frame go out as they are (invalid UTF-8)
    op: str = "text"  # text | binary | ping (a protocol ping, payload ≤ 125 bytes)
    close: int | None = None  # the close code this frame must end the connection with


class FrameFuzzer:
    """`next()` draws one frame; the same seed always gives the same frames."""

    def __init__(self, seed: int, max_frame: int) -> None:
        self.rng = random.Random(seed)
        self.max_frame = max_frame
        self._makers: list[tuple[float, Callable[[], Frame]]] = [
            (14, self.wrong_shape),
            (10, self.random_json),
            (8, self.valid),
            (8, self.random_bytes),
            (3, self.protocol_ping),
            (6, self.random_text),
            (6, self.raw_json_values),
            (6, self.odd_unicode),
            (4, self.truncated),
            (3, self.deep),
            (1, self.invalid_utf8),
            (1.5, self.huge),
            (1.5, self.at_limit),
            (0.4, self.over_limit),
        ]
        self._weights = [w for w, _ in self._makers]

    def next(self) -> Frame:
        [maker] = self.rng.choices([m for _, m in self._makers], self._weights)
        return maker()

    # ------------------------------------------------------------------ values
    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def scalar(self) -> Any:
        r = self.rng
        return r.choice(
            [
                None,
                True,
                False,
                r.randint(-(2**63), 2**64 - 1),
                r.randint(-3, 3),
                r.uniform(-1e308, 1e308),
                r.random(),
                self.uuid(),
                self.uuid().upper(),
                "{" + self.uuid() + "}",
                r.choice(ODD_STRINGS),
                r.choice((*MESSAGE_TYPES, *SUBSCRIPTION_TYPES, *FILTER_TYPES)),
                "".join(r.choices(string.printable, k=r.randint(0, 40))),
            ]
        )

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        roll = r.random()
        if depth > 3 or roll < 0.6:
            return self.scalar()
        if roll < 0.8:
            return [self.value(depth + 1) for _ in range(r.randint(0, 5))]
        return {
            r.choice((*FIELDS, "x", "", "\u0000")): self.value(depth + 1)
            for _ in range(r.randint(0, 4))
        }

    # ------------------------------------------------------------------ frames
    def _json(self, kind: str, obj: Any) -> Frame:
        return Frame(kind, orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode())

    def valid(self) -> Frame:
        """A well-formed message (unknown ids: denied or accepted, never a crash)."""
        r = self.rng
        stype = r.choice(SUBSCRIPTION_TYPES)
        flt: dict[str, Any] = r.choice(
            [
                {"type": "all"},
                {"type": "byIds", "ids": [self.uuid() for _ in range(r.randint(1, 30))]},
                {"type": "byGroup", "groupId": self.uuid()},
                {"type": "byGeozone", "geozoneId": self.uuid()},
            ]
        )
        msg = r.choice(
            [
                {"type": "ping"},
                {"type": "subscribe", "subscriptionType": stype, "filter": flt},
                {"type": "unsubscribe", "subscriptionType": stype, "filter": r.choice([None, flt])},
                {"type": "getState", "vehicleIds": r.choice([None, [self.uuid()]])},
                {"type": "ack", "eventId": r.randint(0, 2**53)},
            ]
        )
        return self._json("valid", msg)

    def wrong_shape(self) -> Frame:
        """Every message type with fields missing, extra, or of the wrong type."""
        r = self.rng
        msg: dict[str, Any] = {"type": r.choice(MESSAGE_TYPES)}
        for field in r.sample(FIELDS[1:], r.randint(0, 4)):
            msg[field] = self.value()
        if r.random() < 0.5:
            msg["filter"] = {
                "type": r.choice((*FILTER_TYPES, "", "BYIDS")),
                r.choice(("ids", "groupId", "geozoneId", "extra")): self.value(),
            }
        if r.random() < 0.3:
            msg["subscriptionType"] = r.choice(SUBSCRIPTION_TYPES)
        return self._json("wrong-shape", msg)

    def random_json(self) -> Frame:
        return self._json("random-json", self.value())

    def raw_json_values(self) -> Frame:
        r = self.rng
        field = r.choice(FIELDS)
        raw = r.choice(RAW_JSON_VALUES)
        return Frame("raw-json", f'{{"type": "{r.choice(MESSAGE_TYPES)}", "{field}": {raw}}}')

    def odd_unicode(self) -> Frame:
        r = self.rng
        odd = r.choice(ODD_STRINGS)
        return r.choice(
            [
                Frame("bom", "\ufeff" + '{"type": "ping"}'),
                self._json("odd-type", {"type": odd}),
                self._json(
                    "odd-id",
                    {
                        "type": "subscribe",
                        "subscriptionType": "vehicles",
                        "filter": {"type": "byGeozone", "geozoneId": odd},
                    },
                ),
                Frame("odd-text", odd * r.randint(1, 200)),
            ]
        )

    def random_text(self) -> Frame:
        r = self.rng
        n = r.randint(0, 300)
        return Frame("random-text", "".join(chr(r.randint(1, 0xD7FF)) for _ in range(n)))

    def random_bytes(self) -> Frame:
        r = self.rng
        return Frame("binary", r.randbytes(r.randint(0, 2000)), op="binary")

    def protocol_ping(self) -> Frame:
        return Frame("ping-frame", self.rng.randbytes(self.rng.randint(0, 125)), op="ping")

    def truncated(self) -> Frame:
        full = self.valid().data
        assert isinstance(full, str)
        return Frame("truncated", full[: self.rng.randint(0, max(0, len(full) - 1))])

    def deep(self) -> Frame:
        r = self.rng
        opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
        n = r.randint(100, (self.max_frame - 40) // len(opener + closer))
        return Frame("deep", '{"type": "ping", "x": ' + opener * n + "1" + closer * n + "}")

    def invalid_utf8(self) -> Frame:
        r = self.rng
        bad = r.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        data = b'{"type": "ping", "x": "' + bad + b'"}'
        return Frame("invalid-utf8", data, close=CLOSE_INVALID_TEXT)

    def huge(self) -> Frame:
        """Big but under the limit: a long array of ids, or a long string."""
        r = self.rng
        if r.random() < 0.5:
            # Past the 1000 ids a message may carry, still under the size limit.
            ids = [self.uuid() for _ in range(r.randint(1001, (self.max_frame - 200) // 39))]
            return self._json(
                "huge-ids",
                {
                    "type": "subscribe",
                    "subscriptionType": "vehicles",
                    "filter": {"type": "byIds", "ids": ids},
                },
            )
        return self._json("huge-string", {"type": "ping", "x": "y" * (self.max_frame - 100)})

    def _sized(self, size: int) -> str:
        frame = '{"type":"ping"}'
        return frame + " " * (size - len(frame))

    def at_limit(self) -> Frame:
        size = self.max_frame - self.rng.choice([0, 1, 2])
        if self.rng.random() < 0.3:
            return Frame("at-limit-binary", self._sized(size).encode(), op="binary")
        return Frame("at-limit", self._sized(size))

    def over_limit(self) -> Frame:
        size = self.max_frame + self.rng.choice([1, 2, 1000])
        op = "text" if self.rng.random() < 0.7 else "binary"
        return Frame("over-limit", self._sized(size), op=op, close=CLOSE_TOO_BIG)
