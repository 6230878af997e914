"""Commands other packages add to `python -m tracker_ws` through the `tracker_ws.commands` entry
point group (setup.cfg), so that the runtime CLI needs no import of them: the development tools
(`dev`, `simulate`, `listen` in tracker_ws_dev) join it this way, and are simply absent from an
image that does not ship them."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

log = logging.getLogger(__name__)

GROUP = "tracker_ws.commands"


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: `configure` adds its arguments, `run` does the work (exit status)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def discovered() -> Iterator[tuple[str, Command]]:
    """(name, command) of every installed entry point of the group, by name. A command whose
    package is not installed (the runtime image has no tracker_ws_dev) is left out."""
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            command = ep.load()
        except ModuleNotFoundError as exc:
            log.debug("command %s not available: %s", ep.name, exc)
            continue
        if not isinstance(command, Command):
            raise TypeError(f"entry point {ep.value} ({GROUP}) is not a tracker_ws Command")
        yield ep.name, command
