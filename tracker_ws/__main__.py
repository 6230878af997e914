"""Command line: worker, token, simulate, dev (ARCHITECTURE §6)."""

from __future__ import annotations

import argparse
import sys
import time


def _raise_fd_limit() -> None:
    """Every WebSocket is a file descriptor: take the hard limit, not the default 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cmd_worker(args: argparse.Namespace, rest: list[str]) -> int:
    _raise_fd_limit()
    from tracker_ws import devstack
    from tracker_ws.config import Settings
    from tracker_ws.domain.errors import PortInUse

    settings = Settings.from_env()
    # One line and a non-zero exit, not Faust's traceback once the broker is joined.
    try:
        devstack.ensure_port_free(settings.port, settings.host)
    except PortInUse as exc:
        print(f"tracker-ws worker: {exc.message}", file=sys.stderr)
        return 1
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


def _cmd_simulate(args: argparse.Namespace, rest: list[str]) -> int:
    import asyncio

    from tracker_ws.simulator import Fleet, run_simulator

    fleet = Fleet.build(args.vehicles, args.companies, seed=args.seed)
    asyncio.run(run_simulator(args.broker, fleet, rate=args.rate, duration=args.duration))
    return 0


def _cmd_listen(args: argparse.Namespace, rest: list[str]) -> int:
    import asyncio

    from tracker_ws.listen import listen

    return asyncio.run(listen(args.port, args.token, args.vehicles, args.host, args.duration))


def _cmd_dev(args: argparse.Namespace, rest: list[str]) -> int:
    from tracker_ws.dev import run_dev

    return run_dev(port=args.port, vehicles=args.vehicles, rate=args.rate)


def main(argv: list[str] | None = None) -> int:
    import os

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

    s = sub.add_parser("simulate", help="register vehicles and produce GPS fixes")
    s.add_argument(
        "--broker", default=os.environ.get("TRACKER_WS_KAFKA_BROKER", "kafka://127.0.0.1:9092")
    )
    s.add_argument("--vehicles", type=int, default=50)
    s.add_argument("--companies", type=int, default=2)
    s.add_argument("--rate", type=float, default=10.0, help="fixes per second, all vehicles")
    s.add_argument("--duration", type=float, default=0.0, help="seconds (0: until interrupted)")
    s.add_argument("--seed", type=int, default=1)

    d = sub.add_parser("dev", help="embedded broker + Redis + worker + simulator")
    d.add_argument("--port", type=int, default=int(os.environ.get("TRACKER_WS_PORT", "8090")))
    d.add_argument("--vehicles", type=int, default=50)
    d.add_argument("--rate", type=float, default=20.0)

    li = sub.add_parser("listen", help="connect, subscribe to vehicles and print what arrives")
    li.add_argument("--host", default="127.0.0.1")
    li.add_argument("--port", type=int, default=8090)
    li.add_argument("--token", required=True)
    li.add_argument("--vehicles", nargs="*", help="vehicleIds (default: all of the company)")
    li.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")

    args, rest = parser.parse_known_args(argv)
    handlers = {
        "worker": _cmd_worker,
        "token": _cmd_token,
        "simulate": _cmd_simulate,
        "dev": _cmd_dev,
        "listen": _cmd_listen,
    }
    if rest and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    started = time.monotonic()
    try:
        return handlers[args.command](args, rest)
    except KeyboardInterrupt:
        print(f"\nstopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
