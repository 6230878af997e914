"""Who may receive a replayable event (ARCHITECTURE §5): one rule for live delivery and for
the replay after a reconnect.

An `Audience` is read from the envelope (and the registry's record of its vehicle): the
routing keys a connection must have subscribed (one of them), and what the connection's user
must be. Live delivery looks the keys up in the subscription index and keeps the connections
`admits` lets through; replay asks `entitled` for one connection and its own keys. Positions
are not replayed and keep their own hot path (Hub._deliver_position), whose check is
`Permissions.can_see`, the same rule as a vehicle event's here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from tracker_ws.domain import envelope
from tracker_ws.domain.models import SubscriptionType, Vehicle
from tracker_ws.domain.permissions import Permissions
from tracker_ws.domain.subscriptions import event_keys, routing_key


@dataclass(frozen=True, slots=True)
class Audience:
    # A connection must hold one of these routing keys; None: every connection in scope.
    keys: tuple[str, ...] | None
    # Vehicle events: the vehicle, its company and groups now (the registry's, not the
    # producer's), checked with the user's permissions.
    vehicle: str | None = None
    company: str | None = None
    groups: frozenset[str] = frozenset()
    user: str | None = None  # notifications: this user only
    companies: frozenset[str] | None = None  # alerts: these companies only (None: all)
    needs: SubscriptionType | None = None  # alerts from the stream: systemAlerts subscribers


Lookup = Callable[[str], Vehicle | None]  # the registry's record of a vehicle id


def audience_of(env: dict[str, Any], vehicles: Lookup) -> Audience | None:
    """The audience of a replayable envelope; None for any other kind. Raises KeyError or
    TypeError on an envelope without the fields its kind requires."""
    kind = env.get("t")
    if kind == envelope.GEO:
        return _vehicle_audience(env, vehicles, SubscriptionType.GEO_EVENTS, str(env["z"]))
    if kind == envelope.MAINTENANCE:
        return _vehicle_audience(env, vehicles, SubscriptionType.MAINTENANCE, None)
    if kind == envelope.NOTIFICATION:
        user = str(env["u"])
        return Audience((routing_key(SubscriptionType.NOTIFICATIONS, "user", user),), user=user)
    if kind == envelope.ALERT:
        companies = env.get("companies")
        # Alerts from the system-alerts stream go to `systemAlerts` subscribers; an admin
        # broadcast goes to every connection in scope.
        return Audience(
            None,
            companies=frozenset(cast(list[str], companies)) if companies else None,
            needs=SubscriptionType.SYSTEM_ALERTS if env.get("subscribers_only") else None,
        )
    return None


def _vehicle_audience(
    env: dict[str, Any], vehicles: Lookup, stype: SubscriptionType, geozone: str | None
) -> Audience:
    vid = str(env["v"])
    vehicle = vehicles(vid)
    # The registry, not the producer, says whose vehicle it is now.
    company = vehicle.company_id if vehicle is not None else str(env["c"])
    groups = vehicle.group_ids if vehicle is not None else frozenset()
    keys = event_keys(stype, company, vid, groups, geozone)
    return Audience(tuple(keys), vehicle=vid, company=company, groups=groups)


def admits(audience: Audience, perms: Permissions, has_type: bool = True) -> bool:
    """Whether a connection of this user may get the event, whatever it subscribed (the
    index or `entitled` decides that). `has_type`: the connection holds a subscription of
    `audience.needs` (ignored when nothing is needed)."""
    user = perms.user
    if audience.vehicle is not None:
        # Never across companies, whatever the index says; narrowed users per vehicle.
        return perms.can_see(audience.vehicle, audience.company or "", audience.groups)
    if audience.user is not None and user.user_id != audience.user:
        return False  # a notification: only ever the user's own
    if audience.companies is not None and user.company_id not in audience.companies:
        return False
    return audience.needs is None or has_type


def entitled(
    audience: Audience, perms: Permissions, held: set[str], types: frozenset[SubscriptionType]
) -> bool:
    """Replay: whether one connection, holding the routing keys `held` and subscriptions of
    `types`, gets the event (what live delivery would have decided for it)."""
    if audience.keys is not None and held.isdisjoint(audience.keys):
        return False
    return admits(audience, perms, audience.needs in types)
