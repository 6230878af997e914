"""The project's commands, declared once and offered by two front ends: `python -m tracker_ws
<command>` (argparse, __main__.py) and `faust -A tracker_ws.app <command>` (Faust's click CLI,
one `--help` with Faust's own commands).

Commands of other packages join through the `tracker_ws.commands` entry point group
(setup.cfg): the development tools (`dev`, `simulate`, `listen` in tracker_ws_dev) come this
way, so the runtime imports none of them, and an image without them simply lacks them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, NoReturn

log = logging.getLogger(__name__)

GROUP = "tracker_ws.commands"


@dataclass(frozen=True, slots=True)
class Opt:
    """One option, in the terms both argparse and click understand."""

    flags: tuple[str, ...]
    help: str = ""
    type: type = str
    default: Any = None
    required: bool = False
    many: bool = False  # several values: `--vehicles a b` (argparse), `--vehicles a --vehicles b`
    flag: bool = False  # on/off
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        long = next(f for f in self.flags if f.startswith("--"))
        return long[2:].replace("-", "_")


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its options and what it does (returns the exit status)."""

    help: str
    options: Sequence[Opt]
    run: Callable[[argparse.Namespace], int]


def add_to_argparse(parser: argparse.ArgumentParser, command: Command) -> None:
    for opt in command.options:
        kwargs: dict[str, Any] = {"help": opt.help or None, "dest": opt.dest}
        if opt.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=opt.type, default=opt.default, required=opt.required)
            if opt.many:
                kwargs["nargs"] = "*"
            if opt.choices:
                kwargs["choices"] = opt.choices
        parser.add_argument(*opt.flags, **kwargs)


# ------------------------------------------------------------------------------ discovery


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


def all_commands() -> list[tuple[str, Command]]:
    """The runtime's own commands, then the installed ones."""
    return [*RUNTIME_COMMANDS.items(), *discovered()]


# ------------------------------------------------------------------------------ Faust


def register_with_faust() -> None:
    """Make every command a `faust -A tracker_ws.app <command>` too. Faust registers a command
    class on its click group when the class is created (AppCommand.__init_subclass__), and a
    command that overrides `__call__` runs synchronously, outside a Faust worker: our
    commands start their own loops and processes."""
    import click
    from faust.cli import AppCommand, option

    class ProjectCommand(AppCommand):  # type: ignore[misc]
        abstract: ClassVar[bool] = True  # not a command itself
        command: ClassVar[Command]

        def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
            values = dict(self.kwargs)
            for opt in self.command.options:
                if opt.many:  # click gives a tuple; argparse's nargs="*" gives a list or None
                    values[opt.dest] = list(values.get(opt.dest) or ()) or None
            raise SystemExit(self.command.run(argparse.Namespace(**values)))

    def click_option(opt: Opt) -> Any:
        kwargs: dict[str, Any] = {"help": opt.help}
        if opt.flag:
            kwargs.update(is_flag=True, default=False)
        else:
            kind: Any = click.Choice(opt.choices) if opt.choices else opt.type
            kwargs.update(type=kind, default=opt.default, required=opt.required)
            if opt.many:
                kwargs.update(multiple=True, default=())
        return option(*opt.flags, opt.dest, **kwargs)

    for name, command in all_commands():
        if name in _REGISTERED:
            continue
        _REGISTERED.add(name)
        type(
            name,
            (ProjectCommand,),
            {
                "__doc__": command.help,
                "__module__": __name__,
                "command": command,
                "options": [click_option(o) for o in command.options],
            },
        )


_REGISTERED: set[str] = set()


# ------------------------------------------------------------------------------ runtime commands


def _token(args: argparse.Namespace) -> int:
    from tracker_ws.auth import mint_token
    from tracker_ws.config import Settings

    settings = Settings.from_env()
    roles = list(args.roles or [])
    if args.admin and "admin" not in roles:
        roles.append("admin")
    print(
        mint_token(
            args.user,
            args.company,
            secret=args.secret or settings.jwt_secret,
            roles=roles,
            vehicle_ids=args.vehicles,
            group_ids=args.groups,
            ttl_s=args.ttl,
            platform=args.platform,
        )
    )
    return 0


def _config(args: argparse.Namespace) -> int:
    from tracker_ws.config import Settings, describe_values, describe_variables

    if args.check:
        settings = Settings.from_env()
        print(describe_values(settings))
        problem = settings.auth_problem()
        if problem:
            print(f"note: a worker would refuse to start: {problem}", file=sys.stderr)
        return 0
    print(describe_variables(markdown=args.markdown))
    return 0


TOKEN = Command(
    "mint a development JWT",
    (
        Opt(("--user",), "userId (UUID)", required=True),
        Opt(("--company",), "companyId (UUID)", required=True),
        Opt(("--admin",), "add the admin role", flag=True),
        Opt(("--roles",), "extra roles", many=True),
        Opt(("--vehicles",), "narrow to these vehicleIds", many=True),
        Opt(("--groups",), "narrow to these groupIds", many=True),
        Opt(("--ttl",), "seconds until exp (default 1 day)", type=int, default=86400),
        Opt(("--platform",), "web, mobile or desktop", choices=("web", "mobile", "desktop")),
        Opt(("--secret",), "HS256 secret (default TRACKER_WS_JWT_SECRET or the dev secret)"),
    ),
    _token,
)
CONFIG = Command(
    "list every TRACKER_WS_* variable with its default and meaning",
    (
        Opt(("--markdown",), "as the README's Markdown table", flag=True),
        Opt(("--check",), "validate the environment and print the values", flag=True),
    ),
    _config,
)
RUNTIME_COMMANDS: dict[str, Command] = {"token": TOKEN, "config": CONFIG}
