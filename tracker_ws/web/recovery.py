"""Exact recovery after a reconnect (ARCHITECTURE §3, seed §1.5 and §4).

`GET /ws?token=…&lastEventId=N`, on any instance: the saved subscriptions come back
(permissions checked again), every replayable event with eventId > N that they match is sent
in eventId order, then the current position of each subscribed vehicle (one positionBatch),
then live events. Live events that arrive meanwhile are held by the session and released
after the replay without repeats (Session.push_event drops ids it already sent).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tracker_ws.bus.base import HISTORY_CAP
from tracker_ws.domain import envelope
from tracker_ws.domain.audience import audience_of, entitled
from tracker_ws.domain.errors import BackendUnavailable, InvalidMessage
from tracker_ws.domain.models import FilterKind, Subscribe, Subscription, SubscriptionType
from tracker_ws.domain.protocol import iso_from_ms, parse_client_message

if TYPE_CHECKING:
    from tracker_ws.web.session import Session

log = logging.getLogger(__name__)

EXPIRED = "expired"  # the saved state's TTL passed
TRIMMED = "trimmed"  # history no longer reaches back to lastEventId
NO_STATE = "no_state"  # nothing was ever saved for this user (or device)
PERMISSIONS_CHANGED = "permissions_changed"  # the user now belongs to another company
UNAVAILABLE = "unavailable"  # Redis failed to answer (the client asks getState later)


@dataclass
class Outcome:
    recovered: bool
    reason: str | None = None
    restored: int = 0
    revoked: list[str] = field(default_factory=list)
    replayed: int = 0


def state_document(session: Session) -> bytes:
    """seed §4 `ws:state:{userId}`: subscriptions, lastEventId, savedAt (+ companyId, so a
    restore can tell that the user moved to another company)."""
    return orjson.dumps(
        {
            "subscriptions": [s.to_json() for s in session.subs.subscriptions()],
            "lastEventId": session.last_event_id,
            "ackedEventId": session.acked_event_id,
            "savedAt": iso_from_ms(int(time.time() * 1000)),
            "companyId": session.user.company_id,
        }
    )


def parse_subscription(raw: Any) -> Subscription:
    msg = parse_client_message(orjson.dumps({"type": "subscribe", **raw}))
    assert isinstance(msg, Subscribe)
    return Subscription(msg.subscription_type, msg.filter)


async def recover(session: Session, last_event_id: int) -> Outcome:
    """Restore and replay; leaves the session holding live events until `finish` runs.
    Raises BackendUnavailable (before restoring anything) when the saved state cannot be read;
    a failed history read after the restore is an outcome (`unavailable`)."""
    rt = session.rt
    # A quick reconnect to the same instance may find its own state still queued for writing.
    await rt.writeback.flush(timeout=1.0)
    raw, seen = await rt.bus.store.load_state(session.state_key)
    if raw is None:
        return Outcome(False, EXPIRED if seen else NO_STATE)
    state = orjson.loads(raw)
    if state.get("companyId") != session.user.company_id:
        return Outcome(False, PERMISSIONS_CHANGED)
    outcome = Outcome(True)
    for item in state.get("subscriptions", []):
        try:
            sub = parse_subscription(item)
        except InvalidMessage:
            continue
        revoked = session.restore(sub)
        outcome.revoked.extend(revoked)
        outcome.restored += 1
    # History is read only after the restore: from now on every matching event reaches the
    # session live (held until the replay is done), and every earlier one is in the streams.
    # Read the other way round, an event published in between is in neither (seen in the
    # recovery soak: an alert lost by a client reconnecting after 4009).
    streams = envelope.session_streams(session.user.user_id, session.user.company_id)
    try:
        events, trimmed = await rt.bus.store.read_history(streams, last_event_id, HISTORY_CAP)
    except BackendUnavailable:
        outcome.recovered, outcome.reason = False, UNAVAILABLE
        return outcome
    if trimmed or len(events) >= HISTORY_CAP:
        outcome.recovered, outcome.reason = False, TRIMMED
        return outcome
    session.replay = events
    return outcome


def replay(session: Session) -> int:
    """Send the events `recover` found, in eventId order; returns how many matched (the rule
    of live delivery, domain/audience.py, for this one connection)."""
    vehicles = session.rt.registry.get
    held = session.subs.keys()
    types = frozenset(t for t in SubscriptionType if session.subs.has(t))
    sent = 0
    for event_id, payload in session.replay or []:
        try:
            env = envelope.decode(payload)
            audience = audience_of(env, vehicles)
            if audience is None or not entitled(audience, session.perms, held, types):
                continue
            frame = envelope.event_frame(event_id, env)
        except (ValueError, KeyError, TypeError):
            continue
        session.push_event(event_id, frame, replaying=True)
        sent += 1
    session.replay = None
    return sent


def subscribed_vehicles(session: Session) -> list[str]:
    """Vehicles whose current position a recovering client should get."""
    rt = session.rt
    out: set[str] = set()
    for sub in session.subs.subscriptions():
        if sub.type is not SubscriptionType.VEHICLES:
            continue
        flt = sub.filter
        if flt.kind is FilterKind.ALL:
            return session.perms.visible_vehicles(rt.registry)
        if flt.kind is FilterKind.BY_IDS:
            out |= flt.ids
        elif flt.kind is FilterKind.BY_GROUP:
            out |= rt.registry.group_vehicles(flt.target or "")
        else:
            out |= set(rt.geozones.vehicles_in(flt.target or ""))
    return sorted(
        v
        for v in out
        if (veh := rt.registry.get(v)) is not None
        and session.perms.can_see(v, veh.company_id, veh.group_ids)
    )
