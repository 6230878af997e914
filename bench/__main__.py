"""tracker_ws benchmark suite (issue 4).

    python -m bench                       # everything, full sizes (< 15 min on 2 cores)
    python -m bench --quick               # small sizes (~3 min)
    python -m bench --scenario S2 --s2-dispatchers 200 --s2-mobiles 1800
    python -m bench --scenario S1 --scenario S5 --baselines none

Every scenario starts its own broker, Redis and servers on free loopback ports and stops them.
Results go to --out (bench/results): <date>-<scenario>.json, <date>-summary.md, PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.common import cpu_plan, pin_self, progress, raise_nofile

ALL = ("S1", "S2", "S3", "S4", "S5")


def worker_loop(args: argparse.Namespace, ctx: scenarios.Ctx) -> str:
    """The tracker workers' event loop: uvloop when forced (--worker-uvloop) or by the tree's
    own default (tracker_ws/eventloop.py, TRACKER_WS_UVLOOP), else asyncio's."""
    if args.worker_uvloop:
        return "uvloop (--worker-uvloop)"
    tree = Path(ctx.tracker_src or Path(__file__).resolve().parent.parent)
    if not (tree / "tracker_ws" / "eventloop.py").exists():
        return "asyncio"  # a tree from before the uvloop default
    from tracker_ws.config import VARIABLES

    var = next(v for v in VARIABLES if v.env == "TRACKER_WS_UVLOOP")
    raw = ctx.worker_env.get(var.env)
    if raw is None:
        return "uvloop (the default)" if var.default else "asyncio (the default)"
    return f"{'uvloop' if var.parse(raw) else 'asyncio'} ({var.env}={raw})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes for a 2–3 minute run")
    p.add_argument("--scenario", action="append", choices=ALL, help="repeatable; default all")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of baselines (picows, socketio) or 'none'; default both in S1/S2/S3 "
        "(quick: both in S2, picows in S3, none in S1)",
    )
    p.add_argument("--s1-connections", type=int, help="S1 idle connections (10000; quick 1000)")
    p.add_argument(
        "--s1-extra",
        type=int,
        help="S1: more connections to try after the first measurement (9500; quick 0); the "
        "worker inherits RLIMIT_NOFILE, so the total is capped by that limit",
    )
    p.add_argument("--s2-vehicles", type=int, help="S2/S4 vehicles (2000; quick 200)")
    p.add_argument("--s2-companies", type=int, default=20)
    p.add_argument("--s2-dispatchers", type=int, help="S2/S4 `all` connections (1000; q 100)")
    p.add_argument("--s2-mobiles", type=int, help="S2/S4 `byIds` connections (9000; q 900)")
    p.add_argument("--s3-vehicles", type=int, default=100)
    p.add_argument("--s3-connections", type=int, help="S3 connections (10000; quick 1000)")
    p.add_argument("--s5-events", type=int, help="S5 backlog of fixes (100000; quick 20000)")
    p.add_argument("--s5-seconds", type=float, help="S5 measuring window (20; quick 8)")
    p.add_argument(
        "--s5-workers",
        type=int,
        default=1,
        help="S5: also ingest the backlog with this many workers of one group (same CPU) and "
        "report the CPU-normalised scaling against one worker (default 1: not run)",
    )
    p.add_argument(
        "--rates",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(),
        help="S2/S3: run only these steps, as fractions of the nominal rate (e.g. 0.5,1), "
        "each once, instead of the ramp: for A/B runs at one load",
    )
    p.add_argument("--step-seconds", type=float, help="length of one ramp step (6; quick 3)")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes")
    p.add_argument(
        "--latency-sample",
        type=float,
        default=None,
        help="share of connections that record latency (1.0; full runs 0.5)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="connects in flight per process")
    p.add_argument(
        "--tracker-src",
        default="",
        help="run the workers from this source tree (e.g. an exported commit) instead of ./",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the tracker workers (e.g. TRACKER_WS_FLUSH_WINDOW_MS=20)",
    )
    p.add_argument(
        "--worker-uvloop",
        action="store_true",
        help="run the tracker workers on uvloop (the shim installs it before Faust starts): for "
        "trees from before the uvloop default; now `--worker-env TRACKER_WS_UVLOOP=0` compares "
        "against asyncio's loop",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy record the worker during S2 at 1 fix/s (default: on in full runs)",
    )
    args = p.parse_args(argv)
    q = args.quick

    def d(name: str, full: Any, quick: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)

    d("s1_connections", 10_000, 1_000)
    d("s1_extra", 9_500, 0)
    d("s2_vehicles", 2_000, 200)
    d("s2_dispatchers", 1_000, 100)
    d("s2_mobiles", 9_000, 900)
    d("s3_connections", 10_000, 1_000)
    d("s5_events", 100_000, 20_000)
    d("s5_seconds", 20.0, 8.0)
    d("step_seconds", 6.0, 3.0)
    d("profile", True, False)
    d("latency_sample", 0.5, 1.0)
    return args


def git_state() -> tuple[str, bool]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "tracker_ws"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return commit or "?", dirty
    except (OSError, subprocess.SubprocessError):
        return "?", False


async def run_all(args: argparse.Namespace, ctx: scenarios.Ctx, stamp: str) -> dict[str, Any]:
    wanted = args.scenario or list(ALL)

    def chosen(default: str) -> list[str]:
        names = args.baselines if args.baselines is not None else default
        return [b for b in names.split(",") if b in ("picows", "socketio")]

    both = "picows,socketio"
    base_s1 = chosen("none" if args.quick else both)
    base_s2 = chosen(both)
    base_s3 = chosen("picows" if args.quick else both)
    results: dict[str, Any] = {}

    def save(name: str) -> None:
        path = report.write_json(args.out, stamp, name, results[name])
        progress(f"{name}: wrote {path}")

    if "S1" in wanted:
        results["S1"] = {}
        for kind in ["tracker", *base_s1]:
            extra = args.s1_extra if kind == "tracker" else 0
            n = args.s1_connections
            results["S1"][kind] = await _guard(scenarios.s1_idle(ctx, kind, n, extra), kind)
        save("S1")
    if "S2" in wanted:
        results["S2"] = {}
        for kind in ["tracker", *base_s2]:
            results["S2"][kind] = await _guard(
                scenarios.s2_fleet(
                    ctx,
                    kind,
                    args.s2_vehicles,
                    args.s2_companies,
                    args.s2_dispatchers,
                    args.s2_mobiles,
                ),
                kind,
            )
        save("S2")
        report.plot(args.out, stamp, "S2", results["S2"])
    if "S3" in wanted:
        results["S3"] = {}
        for kind in ["tracker", *base_s3]:
            results["S3"][kind] = await _guard(
                scenarios.s3_hot(ctx, kind, args.s3_vehicles, args.s3_connections), kind
            )
        save("S3")
        report.plot(args.out, stamp, "S3", results["S3"])
    if "S4" in wanted:
        results["S4"] = await _guard(
            scenarios.s4_two(
                ctx, args.s2_vehicles, args.s2_companies, args.s2_dispatchers, args.s2_mobiles
            ),
            "S4",
        )
        save("S4")
    if "S5" in wanted:
        n = args.s2_vehicles
        results["S5"] = await _guard(
            scenarios.s5_ingest(ctx, n, args.s5_events, args.s5_seconds, args.s5_workers), "S5"
        )
        save("S5")
    return results


async def _guard(coro: Any, what: str) -> dict[str, Any]:
    """A failing scenario is reported, not fatal for the rest of the run."""
    try:
        result: dict[str, Any] = await coro
        return result
    except Exception as exc:
        progress(f"{what}: FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    # To the second: two short runs within one minute overwrote each other's files.
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    soft, hard = raise_nofile()
    server_cpus, load_cpus = cpu_plan()
    pin_self(load_cpus)  # the orchestrator and producer live with the load generator
    commit, dirty = git_state()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", f"/tmp/tracker-ws-bench-{stamp}"))
    log_dir.mkdir(parents=True, exist_ok=True)
    # Profiles are written there during the run (py-spy fails on a directory not yet made).
    args.out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    ctx = scenarios.Ctx(
        out_dir=args.out,
        log_dir=log_dir,
        server_cpus=server_cpus,
        load_cpus=load_cpus,
        tracker_src=os.path.abspath(args.tracker_src) if args.tracker_src else "",
        procs=args.procs,
        concurrency=args.concurrency,
        step_s=args.step_seconds,
        quick=args.quick,
        profile=args.profile,
        worker_env=dict(kv.split("=", 1) for kv in args.worker_env),
        py_spy=py_spy if os.access(py_spy, os.X_OK) else "",
        latency_sample=args.latency_sample,
        worker_uvloop=args.worker_uvloop,
        stamp=stamp,
        rates=args.rates,
    )
    progress(
        f"tracker_ws bench {stamp}: {'quick' if args.quick else 'full'}; "
        f"{os.cpu_count()} CPUs, servers on {server_cpus}, load on {load_cpus}; "
        f"RLIMIT_NOFILE {soft}/{hard}; logs in {log_dir}"
    )
    results = asyncio.run(run_all(args, ctx, stamp))
    meta = {
        "stamp": stamp,
        "cpus": os.cpu_count(),
        "server_cpus": sorted(server_cpus or []),
        "load_cpus": sorted(load_cpus or []),
        "commit": commit,
        "dirty": dirty,
        "tracker_src": ctx.tracker_src or ".",
        "worker_loop": worker_loop(args, ctx),
        "quick": args.quick,
        "python": platform.python_version(),
        "nofile": [soft, hard],
        "args": {k: str(v) for k, v in vars(args).items()},
        "wall_s": round(time.monotonic() - started, 1),
    }
    results["meta"] = meta
    report.write_json(args.out, stamp, "all", results)
    text = report.summary_markdown(results, meta)
    path = args.out / f"{stamp}-summary.md"
    path.write_text(text + "\n", encoding="utf-8")
    print(text)
    progress(f"done in {meta['wall_s']} s; summary {path}")
    leftovers = _leftovers()
    if leftovers:
        progress(f"WARNING: processes still running: {leftovers}")
    return 0


def _leftovers() -> list[str]:
    """Our own descendants still alive (should be none)."""
    with contextlib.suppress(Exception):
        import psutil

        return [
            f"{p.pid}:{' '.join(p.cmdline()[:4])}"
            for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())
        ]
    return []


if __name__ == "__main__":
    sys.exit(main())
