"""The worker's event loop choice (tracker_ws/eventloop.py), each in a fresh interpreter:
choosing installs a loop policy for the whole process."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import asyncio, sys
from tracker_ws import eventloop

chosen = eventloop.choose(sys.argv[1] == "1")


async def main() -> str:
    return eventloop.running()


print(chosen, asyncio.run(main()))
"""


def run(use_uvloop: bool) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, "1" if use_uvloop else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_uvloop_by_default_where_installed() -> None:
    pytest.importorskip("uvloop")
    assert run(True) == "uvloop uvloop"


def test_asyncio_when_turned_off() -> None:
    assert run(False) == "asyncio asyncio"
