"""Command line: worker, token, config, and the commands installed packages add (dev, simulate,
listen from tracker_ws_dev; tracker_ws/commands.py) (ARCHITECTURE §6)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from tracker_ws.commands import Command, discovered
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
    sys.argv = ["tracker_ws", "worker", "--loglevel", args.loglevel, *rest]
    app.main()
    return 0


def _cmd_token(args: argparse.Namespace, rest: list[str]) -> int:
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


def _cmd_config(args: argparse.Namespace, rest: list[str]) -> int:
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


Handler = Callable[[argparse.Namespace, list[str]], int]


def _plugin(command: Command) -> Handler:
    return lambda args, rest: command.run(args)


def main(argv: list[str] | None = None) -> int:
    handlers: dict[str, Handler] = {}
    parser = argparse.ArgumentParser(prog="python -m tracker_ws", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run one instance (agents + web server)")
    w.add_argument("--loglevel", "-l", default="info")

    t = sub.add_parser("token", help="mint a development JWT")
    t.add_argument("--user", required=True, help="userId (UUID)")
    t.add_argument("--company", required=True, help="companyId (UUID)")
    t.add_argument("--admin", action="store_true", help="add the admin role")
    t.add_argument("--roles", nargs="*", help="extra roles")
    t.add_argument("--vehicles", nargs="*", help="narrow to these vehicleIds")
    t.add_argument("--groups", nargs="*", help="narrow to these groupIds")
    t.add_argument("--ttl", type=int, default=86400, help="seconds until exp (default 1 day)")
    t.add_argument("--platform", choices=["web", "mobile", "desktop"])
    t.add_argument(
        "--secret", help="HS256 secret (default TRACKER_WS_JWT_SECRET or the dev secret)"
    )

    c = sub.add_parser(
        "config", help="list every TRACKER_WS_* variable with its default and meaning"
    )
    c.add_argument("--markdown", action="store_true", help="as the README's Markdown table")
    c.add_argument(
        "--check", action="store_true", help="validate the environment and print the values"
    )

    # dev, simulate, listen (tracker_ws_dev), and any other installed one (tracker_ws/commands.py)
    for name, command in discovered():
        command.configure(sub.add_parser(name, help=command.help))
        handlers[name] = _plugin(command)

    args, rest = parser.parse_known_args(argv)
    handlers.update(
        {
            "worker": _cmd_worker,
            "token": _cmd_token,
            "config": _cmd_config,
        }
    )
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
