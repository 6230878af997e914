"""The instance's connections and their subscriptions; fans bus deliveries out to them.

Deliveries arrive from the bus already in eventId order. Each event is decoded and encoded
once per instance; the resulting bytes are shared by every recipient connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import orjson

from tracker_ws.domain import envelope
from tracker_ws.domain.audience import admits, audience_of
from tracker_ws.domain.errors import SubscriptionRevoked
from tracker_ws.domain.geozones import GeozoneState
from tracker_ws.domain.index import SubscriptionIndex
from tracker_ws.domain.models import (
    FilterKind,
    SubscriptionFilter,
    SubscriptionType,
    Vehicle,
)
from tracker_ws.domain.protocol import (
    iso_from_ms,
    position_heads,
    sensors_json_of,
    splice_fragment,
    splice_position,
    status_json,
)
from tracker_ws.domain.registry import VehicleRegistry
from tracker_ws.domain.subscriptions import position_keys
from tracker_ws.metrics import Metrics
from tracker_ws.web.streams import PositionStreams

if TYPE_CHECKING:
    from tracker_ws.web.session import Session

log = logging.getLogger(__name__)

# (keys that gained their first local subscriber, keys that lost their last one)
InterestListener = Callable[[list[str], list[str]], None]


class RateMeter:
    """Events per second over the last full second (cheap: two counters)."""

    __slots__ = ("_count", "_second", "rate")

    def __init__(self) -> None:
        self._second = int(time.monotonic())
        self._count = 0
        self.rate = 0

    def add(self, n: int = 1) -> None:
        now = int(time.monotonic())
        if now != self._second:
            self.rate = self._count if now == self._second + 1 else 0
            self._second = now
            self._count = 0
        self._count += n

    def current(self) -> int:
        self.add(0)
        return self.rate


# Subscription types whose events are about one vehicle.
VEHICLE_TYPES = frozenset(
    {SubscriptionType.VEHICLES, SubscriptionType.GEO_EVENTS, SubscriptionType.MAINTENANCE}
)


def _covers(flt: SubscriptionFilter, vehicle_id: str, group_ids: frozenset[str]) -> bool:
    if flt.kind is FilterKind.ALL:
        return True
    if flt.kind is FilterKind.BY_IDS:
        return vehicle_id in flt.ids
    return flt.kind is FilterKind.BY_GROUP and flt.target in group_ids


def heartbeat_plan(ping_after: float, close_after: float) -> tuple[float, int]:
    """(seconds between sweeps, slices): every connection is looked at a third of the
    shorter of the two periods after the last time, one slice per sweep, about a second
    apart. Connections that connected together (a deploy, a bench) fall quiet together; swept
    all at once, 10,000 of them were pinged in one pass and the loop stalled for 0.3 s."""
    period = max(0.2, min(ping_after, close_after) / 3)
    parts = max(1, round(period))
    return period / parts, parts


class Hub:
    def __init__(
        self,
        metrics: Metrics,
        registry: VehicleRegistry | None = None,
        geozones: GeozoneState | None = None,
        streams: PositionStreams | None = None,
    ) -> None:
        self.metrics = metrics
        # `is None`, not `or`: an empty registry is falsy (it has a length).
        self.registry = registry if registry is not None else VehicleRegistry()
        self.geozones = geozones if geozones is not None else GeozoneState()
        self.sessions: dict[str, Session] = {}
        self.index: SubscriptionIndex[Session] = SubscriptionIndex()
        # Positions go to streams of connections with the same keys (web/streams.py).
        self.streams = streams if streams is not None else PositionStreams()
        self.listeners: list[InterestListener] = []
        self.inbound = RateMeter()
        self.outbound = RateMeter()
        self.last_event_id = 0
        self.skipped_deliveries = 0
        # vehicleId -> (company, groups, geozones, position keys) / (name, frame heads)
        self._keys: dict[str, tuple[str, list[str], frozenset[str], list[str]]] = {}
        self._heads_cache: dict[str, tuple[str, bytes, bytes]] = {}
        # (instance, request id, reply): answers requests riding on events (broadcast counts).
        self.reply: Callable[[str, str, dict[str, object]], None] | None = None

    # ------------------------------------------------------------ connections
    def register(self, session: Session) -> None:
        self.sessions[session.conn_id] = session
        self.metrics.connected(session.info.platform).inc()
        self.metrics.connections("opened").inc()

    def unregister(self, session: Session) -> None:
        if self.sessions.pop(session.conn_id, None) is None:
            return
        self.unsubscribe(session, session.subs.keys())
        self.metrics.connected(session.info.platform).dec()
        self.metrics.connections("closed").inc()

    def subscribe(self, session: Session, keys: Iterable[str]) -> None:
        keys = list(keys)
        first = self.index.add(session, keys)
        self.streams.update(session, added=keys)
        if first:
            self._notify(first, [])

    def unsubscribe(self, session: Session, keys: Iterable[str]) -> None:
        keys = list(keys)
        last = self.index.remove(session, keys)
        self.streams.update(session, removed=keys)
        if last:
            self._notify([], last)

    def _notify(self, added: list[str], removed: list[str]) -> None:
        for listener in self.listeners:
            listener(added, removed)

    def wants(self, keys: Iterable[str]) -> bool:
        return self.index.has_any(keys)

    def subscription_count(self) -> int:
        return sum(sum(s.subs.counts().values()) for s in self.sessions.values())

    def sweep(
        self, now: float, ping_after: float, close_after: float, turn: int = 0, parts: int = 1
    ) -> None:
        """Heartbeat: ping connections quiet for `ping_after` s, close those silent for
        `close_after` s (a peer that answers nothing, not even our pings, is gone).

        `parts` > 1: only the connections of slice `turn` (by a hash of their id; see
        `heartbeat_plan`)."""
        for session in list(self.sessions.values()):
            if parts > 1 and hash(session.conn_id) % parts != turn:
                continue
            quiet = now - session.last_seen
            if quiet >= close_after:
                self.metrics.error("HEARTBEAT_TIMEOUT")
                session.close_soon(1001, "heartbeat timeout")
            elif quiet >= ping_after:
                session.ping()

    def on_registry_change(self, vid: str, before: Vehicle | None, after: Vehicle | None) -> None:
        """A vehicle changed company or groups (or left the registry): connections that
        can no longer see it stop receiving it and are told. Gains need nothing: routing keys
        come from the registry when each event is published."""
        if before is None:
            return
        for session in list(self.sessions.values()):
            perms = session.perms
            if perms.user.company_id != before.company_id:
                continue
            visible = after is not None and perms.can_see(vid, after.company_id, after.group_ids)
            after_groups = after.group_ids if after is not None else frozenset()
            # Lost: a subscription that covered the vehicle before and does not now (a group
            # it left, or the vehicle out of sight altogether).
            lost = [
                sub
                for sub in session.subs.subscriptions()
                if sub.type in VEHICLE_TYPES
                and _covers(sub.filter, vid, before.group_ids)
                and not (visible and _covers(sub.filter, vid, after_groups))
            ]
            if not lost:
                continue
            for sub in lost:
                if sub.filter.kind is FilterKind.BY_IDS:
                    keys = session.subs.remove(
                        sub.type, SubscriptionFilter(FilterKind.BY_IDS, frozenset({vid}))
                    )
                    self.unsubscribe(session, keys)
            types = sorted({sub.type.value for sub in lost})
            session.error(
                SubscriptionRevoked(f"access to vehicle {vid} was revoked ({', '.join(types)})"),
                revoked=[vid],
                subscriptionTypes=types,
            )

    # ------------------------------------------------------------ delivery
    def deliver(self, records: list[tuple[int, bytes]]) -> None:
        """Bus callback: records in increasing eventId order."""
        now_ms = time.time() * 1000
        # Every `position` frame of this message carries the same send time.
        stamp = iso_from_ms(int(now_ms)).encode()
        latencies: list[float] = []
        delivered = 0  # frames handed to connections, for the outbound rate
        for event_id, payload in records:
            self.last_event_id = event_id
            try:
                env = envelope.decode(payload)
                if env.get("t") == envelope.POSITION:
                    delivered += self._deliver_position(event_id, env, now_ms, stamp, latencies)
                    continue
                if env.get("t") == envelope.GEO:
                    self.geozones.apply_envelope(env)
                found = self.recipients(event_id, env)
                if found is None:
                    continue
                frame, sessions = found
                for session in sessions:
                    session.push_event(event_id, frame)
                delivered += len(sessions)
                taken_in = env.get("ts")
                if sessions and isinstance(taken_in, int | float):
                    latency = max(0.0, (now_ms - taken_in) / 1000)
                    self.metrics.delivery.labels(envelope.SUBSCRIPTION_OF[env["t"]]).observe(
                        latency
                    )
                req, sender = env.get("req"), env.get("from")
                if self.reply is not None and isinstance(req, str) and isinstance(sender, str):
                    self.reply(sender, req, {"delivered": len(sessions)})
            except (ValueError, KeyError, TypeError) as exc:
                # A record this version cannot read: skip it, keep the rest flowing.
                self.skipped_deliveries += 1
                self.metrics.error("BAD_DELIVERY")
                log.warning("skipping undecodable delivery %s: %s", event_id, exc)
        self.outbound.add(delivered)
        if latencies:
            # One observation per delivered fix, as before; recorded once per message.
            self.metrics.delivery_vehicles.observe_many(latencies)

    def recipients(self, event_id: int, env: dict[str, Any]) -> tuple[bytes, list[Session]] | None:
        """The frame of a replayable event and the local connections entitled to it
        (domain/audience.py, the rule replay applies to one connection)."""
        audience = audience_of(env, self.registry.get)
        if audience is None:
            return None
        candidates: Iterable[Session] = (
            self.sessions.values() if audience.keys is None else self.index.lookup(audience.keys)
        )
        needs = audience.needs
        sessions = [
            s for s in candidates if admits(audience, s.perms, needs is None or s.subs.has(needs))
        ]
        return envelope.event_frame(event_id, env), sessions

    def _position_keys(self, vid: str, company: str, groups: list[str]) -> list[str]:
        """position_keys of a vehicle, cached: the same few keys for every fix of it."""
        zones = self.geozones.zones_of(vid)
        cached = self._keys.get(vid)
        if (
            cached is not None
            and cached[0] == company
            and cached[1] == groups
            and cached[2] == zones
        ):
            return cached[3]
        if len(self._keys) >= _CACHE_MAX:
            self._keys.clear()  # a fleet that outgrew the cache: start over, stay bounded
        keys = position_keys(vid, company, frozenset(groups), zones)
        self._keys[vid] = (company, list(groups), zones, keys)
        return keys

    def _heads(self, vid: str, name: str) -> tuple[bytes, bytes]:
        """protocol.position_heads, cached per vehicle."""
        cached = self._heads_cache.get(vid)
        if cached is not None and cached[0] == name:
            return cached[1], cached[2]
        if len(self._heads_cache) >= _CACHE_MAX:
            self._heads_cache.clear()
        single, fragment = position_heads(vid, name)
        self._heads_cache[vid] = (name, single, fragment)
        return single, fragment

    def _deliver_position(
        self,
        event_id: int,
        env: dict[str, object],
        now_ms: float,
        stamp: bytes,
        latencies: list[float],
    ) -> int:
        """The number of connections it went to."""
        vid = str(env["v"])
        company = str(env["c"])
        raw_groups = env["g"]
        if type(raw_groups) is not list:
            raw_groups = list(cast(list[str], raw_groups))
        streams = self.streams.lookup(self._position_keys(vid, company, raw_groups))
        if not streams:
            return 0
        pos = orjson.dumps(env["p"])
        single_head, fragment_head = self._heads(vid, str(env.get("n", "")))
        # A status-only update (offline) must carry its status: batch form only.
        single = (
            None if env.get("status_only") else splice_position(event_id, stamp, single_head, pos)
        )
        sensors = env.get("x")
        fragment = splice_fragment(
            fragment_head,
            pos,
            status_json(str(env["s"])),
            sensors_json_of(sensors) if isinstance(sensors, dict) else b"",
        )
        ts = env.get("ts")
        if isinstance(ts, int | float):
            latencies.append(max(0.0, (now_ms - ts) / 1000))
        delivered = 0
        groups: frozenset[str] | None = None
        for stream in streams:
            # Defence in depth: never cross companies, whatever the index says.
            if company != stream.company:
                continue
            perms = stream.perms  # a narrowed user's own stream
            if perms is not None:
                if groups is None:
                    groups = frozenset(raw_groups)
                if not perms.can_see(vid, company, groups):
                    continue
            delivered += stream.push_position(vid, event_id, single, fragment)
        return delivered


_CACHE_MAX = 100_000  # vehicles whose routing keys / frame heads a Hub keeps
