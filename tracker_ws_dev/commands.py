"""`dev`, `simulate` and `listen` for `python -m tracker_ws` and `faust -A tracker_ws.app`:
registered as `tracker_ws.commands` entry points (setup.cfg). Imports stay inside the run
functions, so listing the commands loads nothing of the tools."""

from __future__ import annotations

import argparse

from tracker_ws.commands import Command, Opt


def _dev(args: argparse.Namespace) -> int:
    from tracker_ws.config import Settings
    from tracker_ws_dev.dev import run_dev

    port = args.port if args.port is not None else Settings.from_env().port
    return run_dev(port=port, vehicles=args.vehicles, rate=args.rate)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    from tracker_ws.config import Settings
    from tracker_ws_dev.simulator import Fleet, run_simulator

    broker = args.broker or Settings.from_env().kafka_broker
    fleet = Fleet.build(args.vehicles, args.companies, seed=args.seed)
    asyncio.run(run_simulator(broker, fleet, rate=args.rate, duration=args.duration))
    return 0


def _listen(args: argparse.Namespace) -> int:
    import asyncio

    from tracker_ws_dev.listen import listen

    return asyncio.run(listen(args.port, args.token, args.vehicles, args.host, args.duration))


DEV = Command(
    "embedded broker + Redis + worker + simulator",
    (
        Opt(("--port",), "public port (default TRACKER_WS_PORT or 8090)", type=int),
        Opt(("--vehicles",), "simulated vehicles", type=int, default=50),
        Opt(("--rate",), "fixes per second, all vehicles", type=float, default=20.0),
    ),
    _dev,
)
SIMULATE = Command(
    "register vehicles and produce GPS fixes",
    (
        Opt(("--broker",), "kafka://host:port (default TRACKER_WS_KAFKA_BROKER)"),
        Opt(("--vehicles",), "vehicles", type=int, default=50),
        Opt(("--companies",), "companies they belong to", type=int, default=2),
        Opt(("--rate",), "fixes per second, all vehicles", type=float, default=10.0),
        Opt(("--duration",), "seconds (0: until interrupted)", type=float, default=0.0),
        Opt(("--seed",), "fleet seed (same seed, same vehicle ids)", type=int, default=1),
    ),
    _simulate,
)
LISTEN = Command(
    "connect, subscribe to vehicles and print what arrives",
    (
        Opt(("--host",), "server host", default="127.0.0.1"),
        Opt(("--port",), "server port", type=int, default=8090),
        Opt(("--token",), "a JWT (python -m tracker_ws token …)", required=True),
        Opt(("--vehicles",), "vehicleIds (default: all of the company)", many=True),
        Opt(("--duration",), "seconds (0: until Ctrl-C)", type=float, default=0.0),
    ),
    _listen,
)
