"""The Faust app: one process is one instance (agents + web server on one event loop).

faust -A tracker_ws.app worker        # or: python -m tracker_ws worker
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from tracker_ws import commands, eventloop, gctune, logjson, logthrottle
from tracker_ws.agents import events, positions, subscriptions
from tracker_ws.agents.publisher import Publisher
from tracker_ws.agents.registry import RegistryReader
from tracker_ws.cluster import JANITOR_INTERVAL_S, Janitor
from tracker_ws.config import Settings
from tracker_ws.domain.errors import ConfigError
from tracker_ws.kafka import admin as kafka_admin
from tracker_ws.kafka import compat, consumer_watch, group_leave
from tracker_ws.kafka.app import KafkaApp
from tracker_ws.kafka.rejoin import LeaderAwareAssignor
from tracker_ws.kafka.stream import BatchStream
from tracker_ws.runtime import Runtime

# The gps-events model, for `faust -A tracker_ws.app models | model | send` (records.py).
from tracker_ws.tables import records  # noqa: F401
from tracker_ws.tables.definitions import GPS_EVENTS, SUBSCRIPTION_CHANGES, declare, topic_plan
from tracker_ws.watchdog import ShutdownWatchdog
from tracker_ws.web import instance
from tracker_ws.web.drain import drain
from tracker_ws.web.hub import heartbeat_plan
from tracker_ws.web.keys import RUNTIME
from tracker_ws.web.listeners import tls_context
from tracker_ws.web.looplag import LoopLag

log = logging.getLogger(__name__)

# What a stop may take beyond draining the clients before the watchdog ends the process.
STOP_GRACE_S = 8.0
LOOP_LAG_INTERVAL_S = 0.25  # ws_event_loop_lag_seconds: four observations a second


class TrackerApp(KafkaApp):
    """faust.App with our consumer (kafka/app.py), the service's runtime and web routes."""

    rt: Runtime
    tls_context: ssl.SSLContext | None = None  # the WSS listener's (web/listeners.py)
    stop_watchdog: ShutdownWatchdog
    _leaving: group_leave.Membership | None = None

    def worker_init(self) -> None:
        super().worker_init()
        gctune.set_gen0(self.rt.settings.gc_gen0)
        # The libraries are imported by now: every logger that may flood gets the filter.
        logthrottle.install()

    async def on_stop(self) -> None:
        # Faust's stop waits on the broker without a timeout; bound the whole of it.
        self.stop_watchdog.arm(stop_bound(self.rt))
        # Clients first, while this instance can still deliver to them; then Faust leaves
        # the consumer group and stops.
        if self.rt.ready and not self.rt.draining:
            await shutdown_step("drain the connections", drain(self.rt))
        await super().on_stop()
        # The consumer stops after this (a child service); what it was, for on_shutdown.
        self._leaving = group_leave.membership(self)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        # The consumer has stopped. If aiokafka did not leave the group (the embedded broker's
        # first generation, group_leave.py), leave now: the others take over the partitions
        # at once instead of after the session timeout.
        member = self._leaving
        if member is not None and not member.left_by_the_client:
            await group_leave.leave(
                kafka_admin.bootstrap_servers(self.rt.settings.kafka_broker), member
            )

    async def on_first_start(self) -> None:
        # Faust creates the data directory itself, but not its parents.
        Path(self.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()
        topics, configs = topic_plan(self.rt.settings.partitions)
        await kafka_admin.create_topics(self.rt.settings.kafka_broker, topics, configs=configs)

    def on_webserver_init(self, web_: Any) -> None:
        # Faust calls this hook twice; register routes once.
        aio: web.Application = web_.web_app
        if aio.get(RUNTIME) is not None:
            return
        instance.add_routes(aio, self.rt)


def stop_bound(rt: Runtime) -> float:
    """Seconds a stop may take: the drain (flush timeout plus the staggered closes of the
    connections open now), then STOP_GRACE_S for the rest."""
    s = rt.settings
    return s.drain_timeout_s + len(rt.hub.sessions) / s.drain_rate + STOP_GRACE_S


def create_app(settings: Settings | None = None) -> TrackerApp:
    settings = settings or Settings.from_env()
    compat.check()  # a faust/mode/aiokafka upgrade that broke our extensions fails here
    tls = tls_context(settings)  # an unreadable certificate fails here, before anything starts
    rt = Runtime.create(settings)
    # Created when the worker starts (on_first_start), not here: `faust -A tracker_ws.app
    # --help` and the other commands that only load the app leave no directory behind.
    datadir = (Path(settings.data_dir) / settings.instance_id).resolve()
    app = TrackerApp(
        settings.app_id,
        broker=settings.kafka_broker,
        store="memory://",
        datadir=str(datadir),
        # Our driver (web/listeners.py, registered as `tracker` in setup.cfg): public, TLS and
        # internal listeners. Faust's own views live on the internal one, so that is the
        # web_bind/web_port, and web_host is what the other instances route keys to.
        # Streams that can hand their agent whole batches (the GPS agent uses them).
        Stream=BatchStream,
        web="tracker://",
        web_port=settings.internal_port,
        web_bind=settings.internal_host,
        web_host=settings.advertised_host,
        web_stats_enabled=True,
        web_metrics_enabled=True,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="latest",
        stream_wait_empty=False,
        # Consumer-group timing (README "Failover"): a dead instance is dropped after the
        # session timeout; the heartbeat is how soon the others notice any rebalance.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        # Remembers whether this member led the last rebalance (kafka/rejoin.py).
        PartitionAssignor=LeaderAwareAssignor,
        broker_request_timeout=30.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # Changelog, dead-letter and interest messages: batch them (the delivery path does
        # not go through Kafka, so this adds no latency to positions).
        producer_linger=0.01,
        table_cleanup_interval=3600.0,
        web_enabled=True,
        # Tables live in memory and are rebuilt from their changelogs; the offsets Faust
        # persisted for them may run ahead of a changelog's highwater after a member restarts
        # (ConsistencyError seen in rolling restarts), which is harmless here.
        recovery_consistency_check=False,
        logging_config=logjson.logging_config(settings.log_format, settings.instance_id),
    )
    app.rt = rt
    app.tls_context = tls
    app.stop_watchdog = ShutdownWatchdog()
    topics, tables = declare(app, settings.partitions)
    publisher = Publisher(rt.bus.fanout, rt.metrics)
    positions.install(app, rt, topics, tables, publisher, positions.table_router(rt, tables))
    subscriptions.install(app, rt, topics, tables)
    ingest = events.EventIngest(rt, publisher)
    events.install(app, rt, ingest, settings.partitions)
    rt.bus.fanout.on_input(ingest.from_redis)
    announcer = subscriptions.InterestAnnouncer(rt, topics, settings.partitions)
    rt.hub.listeners.append(announcer.on_interest)
    reader = RegistryReader(rt, settings.kafka_broker.removeprefix("kafka://"))
    reader.listeners.append(rt.hub.on_registry_change)
    janitor = Janitor(rt, announcer)
    rt.assigned_partitions = lambda: sorted(
        tp.partition for tp in app.consumer.assignment() if tp.topic == GPS_EVENTS
    )
    rt.interest_snapshot = lambda: subscriptions.owned_entries(
        tables.subscriptions.items(),
        [tp.partition for tp in app.consumer.assignment() if tp.topic == SUBSCRIPTION_CHANGES],
    )
    instance.connect_runtime(rt)

    loop_lag = LoopLag(
        LOOP_LAG_INTERVAL_S, rt.metrics.loop_lag.labels(settings.instance_id).observe
    )

    @app.task
    async def start_services() -> None:
        await instance.start_delivery(rt)
        publisher.start()
        announcer.start()
        registry_task = asyncio.get_running_loop().create_task(_supervise(reader.run, "registry"))
        app._tracker_tasks = [registry_task]  # type: ignore[attr-defined]
        # A restarted instance (same id) first withdraws whatever interest it had before.
        announcer.reset(settings.instance_id)
        await announcer.drain()
        await janitor.tick()
        await reader.caught_up.wait()
        rt.broker_ok = True
        rt.ready = True
        loop_lag.start()
        gctune.freeze()  # the start-up heap, never walked by the collector again
        log.info(
            "tracker-ws %s ready on :%d (event loop: %s)",
            settings.instance_id,
            settings.port,
            eventloop.running(),
        )

    @app.timer(interval=JANITOR_INTERVAL_S)
    async def janitor_tick() -> None:
        if rt.ready:
            await janitor.tick()

    s = settings
    sweep_every, sweep_parts = heartbeat_plan(s.server_ping_interval_s, s.heartbeat_timeout_s)
    sweep_turns = itertools.count()

    @app.timer(interval=sweep_every)
    async def heartbeat() -> None:
        rt.hub.sweep(
            time.monotonic(),
            s.server_ping_interval_s,
            s.heartbeat_timeout_s,
            next(sweep_turns) % sweep_parts,
            sweep_parts,
        )

    @app.timer(interval=5.0)
    async def check_broker() -> None:
        rt.broker_ok = await consumer_watch.broker_reachable(app)

    stall_watch = consumer_watch.StallWatch(settings.stall_after_s)
    rt.consumer_snapshot = lambda: consumer_watch.snapshot(app)

    @app.timer(interval=5.0)
    async def watch_partitions() -> None:
        if not rt.ready or rt.draining:
            return
        try:
            snap = await asyncio.wait_for(consumer_watch.snapshot(app), 5.0)
        except Exception as exc:  # mid-rebalance, broker away: the next tick tries again
            log.debug("consumer snapshot failed: %r", exc)
            return
        rt.metrics.set_consumer_lag((p.topic, p.partition, p.lag) for p in snap["partitions"])
        stalled, new = stall_watch.observe(time.monotonic(), snap["partitions"])
        rt.stalled_partitions = [f"{p.topic}[{p.partition}]" for p in stalled]
        if new:
            log.warning(
                "input partitions stalled for %.0f s: %s",
                settings.stall_after_s,
                consumer_watch.describe(snap, new),
            )

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _shutdown(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        rt.draining = True
        loop_lag.stop()
        await shutdown_step("flush the publisher", publisher.stop())
        await shutdown_step("write the connection registry and states", rt.writeback.stop())
        announcer.reset(settings.instance_id)
        await shutdown_step(
            "withdraw this instance's interest", asyncio.wait_for(announcer.drain(), 5.0)
        )
        await shutdown_step("deregister the instance", rt.bus.presence.deregister_instance())
        await rt.bus.close()

    return app


async def shutdown_step(what: str, step: Awaitable[Any]) -> None:
    """One step of the shutdown: a failure is logged with its cause and the next step runs
    (the broker or Redis may already be gone; the rest must still happen)."""
    try:
        await step
    except Exception as exc:
        log.warning("shutdown: could not %s: %r", what, exc)


async def _supervise(fn: Any, name: str) -> None:
    """Restart a background loop that failed (broker hiccup); never let it die silently."""
    backoff = 0.2
    while True:
        try:
            await fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s loop failed: %s; restarting", name, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def _app_from_env() -> TrackerApp:
    # Faust's CLI imports `tracker_ws.app:app`; tests and tools call create_app directly.
    # Bad settings end the worker here with one line and exit code 2, not a traceback.
    try:
        settings = Settings.from_env()
        problem = settings.auth_problem()
        if problem:
            raise ConfigError(problem)
        return create_app(settings)  # e.g. an unreadable TLS certificate
    except ConfigError as exc:
        sys.stderr.write(f"tracker-ws: error: {exc.message}\n")
        raise SystemExit(2) from None


app = _app_from_env()
# token, config, dev, simulate, listen as `faust -A tracker_ws.app <command>` (commands.py).
commands.register_with_faust()
