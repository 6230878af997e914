"""The in-process instance every adapter test talks to (tests/support/inproc.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.inproc import Instance, running


@pytest.fixture
async def inst() -> AsyncIterator[Instance]:
    async with running() as instance:
        yield instance
