"""`python -m tracker_ws dev | simulate | listen`: registered as `tracker_ws.commands` entry
points (setup.cfg). Imports stay inside `run`, so listing the commands costs nothing."""

from __future__ import annotations

import argparse

from tracker_ws.commands import Command


def _dev_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="public port (default TRACKER_WS_PORT or 8090)")
    p.add_argument("--vehicles", type=int, default=50)
    p.add_argument("--rate", type=float, default=20.0)


def _dev(args: argparse.Namespace) -> int:
    from tracker_ws.config import Settings
    from tracker_ws_dev.dev import run_dev

    port = args.port if args.port is not None else Settings.from_env().port
    return run_dev(port=port, vehicles=args.vehicles, rate=args.rate)


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="kafka://host:port (default TRACKER_WS_KAFKA_BROKER)")
    p.add_argument("--vehicles", type=int, default=50)
    p.add_argument("--companies", type=int, default=2)
    p.add_argument("--rate", type=float, default=10.0, help="fixes per second, all vehicles")
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until interrupted)")
    p.add_argument("--seed", type=int, default=1)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    from tracker_ws.config import Settings
    from tracker_ws_dev.simulator import Fleet, run_simulator

    broker = args.broker or Settings.from_env().kafka_broker
    fleet = Fleet.build(args.vehicles, args.companies, seed=args.seed)
    asyncio.run(run_simulator(broker, fleet, rate=args.rate, duration=args.duration))
    return 0


def _listen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--token", required=True)
    p.add_argument("--vehicles", nargs="*", help="vehicleIds (default: all of the company)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")


def _listen(args: argparse.Namespace) -> int:
    import asyncio

    from tracker_ws_dev.listen import listen

    return asyncio.run(listen(args.port, args.token, args.vehicles, args.host, args.duration))


DEV = Command("embedded broker + Redis + worker + simulator", _dev_args, _dev)
SIMULATE = Command("register vehicles and produce GPS fixes", _simulate_args, _simulate)
LISTEN = Command("connect, subscribe to vehicles and print what arrives", _listen_args, _listen)
