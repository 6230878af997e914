"""Command line: worker, and the commands of tracker_ws/commands.py (token, config; dev,
simulate, listen from tracker_ws_dev where installed) (ARCHITECTURE §6)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from tracker_ws.commands import Command, add_to_argparse, all_commands
from tracker_ws.domain.errors import ConfigError


def _raise_fd_limit() -> None:
    """Every WebSocket is a file descriptor: take the hard limit, not the default 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cmd_worker(args: argparse.Namespace, rest: list[str]) -> int:
    _raise_fd_limit()
    from tracker_ws.config import Settings
    from tracker_ws.domain.errors import PortInUse
    from tracker_ws.ports import ensure_port_free

    settings = Settings.from_env()
    # A taken port: one line and a non-zero exit, not Faust's traceback once the broker is
    # joined (or, worse, a worker that looks ready because another one answers).
    ports = [(settings.port, settings.host, "TRACKER_WS_PORT")]
    ports.append((settings.internal_port, settings.internal_host, "TRACKER_WS_INTERNAL_PORT"))
    if settings.tls_cert and settings.tls_key:
        ports.append((settings.tls_port, settings.host, "TRACKER_WS_TLS_PORT"))
    try:
        for port, host, variable in ports:
            ensure_port_free(port, host, how=variable)
    except PortInUse as exc:
        print(f"tracker-ws worker: {exc.message}", file=sys.stderr)
        return 1
    from tracker_ws import eventloop

    eventloop.choose(settings.uvloop)  # before anything creates the loop
    # Importing the app checks the rest of the settings (one line and exit 2 when bad).
    from tracker_ws.app import app

    # Hand over to Faust's own CLI, as `faust -A tracker_ws.app worker` would.
    # JSON log lines: no start-up banner among them (Faust's --quiet silences only that).
    quiet = ["--quiet"] if settings.log_format == "json" else []
    sys.argv = ["tracker_ws", *quiet, "worker", "--loglevel", args.loglevel, *rest]
    app.main()
    return 0


Handler = Callable[[argparse.Namespace, list[str]], int]


def _plugin(command: Command) -> Handler:
    return lambda args, rest: command.run(args)


def main(argv: list[str] | None = None) -> int:
    handlers: dict[str, Handler] = {}
    parser = argparse.ArgumentParser(prog="python -m tracker_ws", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run one instance (agents + web server)")
    w.add_argument("--loglevel", "-l", default="info")

    # token, config, and dev, simulate, listen (tracker_ws_dev) or any other installed one.
    for name, command in all_commands():
        add_to_argparse(sub.add_parser(name, help=command.help), command)
        handlers[name] = _plugin(command)

    args, rest = parser.parse_known_args(argv)
    handlers["worker"] = _cmd_worker
    if rest and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    started = time.monotonic()
    try:
        return handlers[args.command](args, rest)
    except ConfigError as exc:
        # A bad setting: one line naming the variable, exit 2 (like a usage error).
        print(f"tracker-ws: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
