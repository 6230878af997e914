"""Bad values shared by the unit tests of the validators and the tests against a worker."""

from __future__ import annotations

# `?lastEventId=` values that must be refused (HTTP 400 before the upgrade).
BAD_LAST_EVENT_IDS = [
    "",
    "-1",
    "-0",
    "-9223372036854775808",
    "+5",
    " 5",
    "5 ",
    "\t5",
    "5\n",
    "1_000",
    "0x10",
    "1e3",
    "5.0",
    "abc",
    "١٢٣",  # Arabic-Indic digits, which int() takes
    "５",  # fullwidth digit
    str(2**63),
    str(2**64 - 1),  # the Redis XRANGE error
    str(2**64),  # the TypeError
    "0" * 20,  # longer than any id, even if its value is small
    "9" * 5000,  # past int()'s digit limit: refused before int() sees it
]
