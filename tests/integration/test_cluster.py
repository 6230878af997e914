"""Three instances behind one Redis: cross-instance delivery, isolation, unsubscribe, groups.

Negative checks are exact (tests/integration/test_subscriptions.py explains the trick):
eventIds are global and every instance receives events in increasing eventId order, so a
client that has seen eventId ≥ N has received everything it was owed below N. The forbidden
fixes are produced first, their eventIds learned from clients that legitimately get them,
then the checked client must reach a later eventId of its own without ever seeing them.
"""

from __future__ import annotations

import statistics
import time

import orjson

from tests.conftest import Cluster
from tests.support.checks import live_positions, reach_event_id, wait_position
from tests.support.client import WsClient, gather_close
from tests.support.cluster import (
    at,
    frame_event_ids,
    interest_of,
    register_company,
    send_round,
    spread_ids,
    strictly_increasing,
    until,
    wait_round,
    warm_up,
)
from tests.support.fleet import Company, FleetDriver
from tracker_ws.agents.positions import partition_of


def lats_of(client: WsClient, vehicle_id: str) -> list[float]:
    return [p["lat"] for m in client.received for _, v, p in live_positions(m) if v == vehicle_id]


def holders(table: dict[str, list[str]], key: str) -> set[str]:
    """Instances listed under routing key `key` on any partition."""
    return {i for k, ids in table.items() if k.rpartition("#p")[0] == key for i in ids}


async def test_vehicle_owned_by_another_instance_arrives_complete_in_order(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids())
    vid = company.vehicles[0]
    owner = cluster3.owner_of(vid)
    others = [w for w in cluster3.workers if w is not owner]
    clients = [await WsClient.connect(w.ws_url, company.token()) for w in others]
    try:
        for c in clients:
            sub = await c.subscribe("vehicles", {"type": "byIds", "ids": [vid]})
            assert sub["type"] == "subscribed" and sub["count"] == 1, sub
        took = await warm_up(fleet, [(c, {vid}) for c in clients])
        print(f"\ninterest reached the owner {took:.2f} s after subscribing")

        # Lock-step: each fix is produced once the previous one arrived, so the flush window
        # never coalesces two of them and every single fix must be delivered.
        latency = []
        base_ts = int(time.time() * 1000)
        for i in range(50):
            lat = 10.0 + i
            sent = time.monotonic()
            await fleet.send_fix(vid, lat=lat, ts_ms=base_ts + i)
            for c in clients:
                await wait_position(c, vid, at(lat), timeout=10)
            latency.append(time.monotonic() - sent)
        for c in clients:
            # (a warm-up fix may still arrive after warm_up returned, always before these)
            assert [lat for lat in lats_of(c, vid) if lat >= 10] == [10.0 + i for i in range(50)]
            assert strictly_increasing(frame_event_ids(c)), frame_event_ids(c)
        print(
            f"50 fixes owner {owner.instance_id} -> clients on {[w.instance_id for w in others]}: "
            f"latency median {statistics.median(latency) * 1000:.1f} ms, "
            f"max {max(latency) * 1000:.1f} ms (produce -> both clients)"
        )

        # A burst: the flush window may coalesce, but never reorders or repeats.
        for i in range(50):
            await fleet.send_fix(vid, lat=-(1.0 + i), ts_ms=base_ts + 100 + i)
        for c in clients:
            await wait_position(c, vid, at(-50.0), timeout=10)
            burst = [lat for lat in lats_of(c, vid) if lat < 0]
            assert burst == sorted(burst, reverse=True) and len(set(burst)) == len(burst), burst
            assert burst[-1] == -50.0
            assert strictly_increasing(frame_event_ids(c)), frame_event_ids(c)
        assert cluster3.owner_of(vid) is owner, "partitions moved during the test"
    finally:
        await gather_close(*clients)


async def test_two_companies_on_every_instance_never_see_each_other(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    x = await register_company(fleet, cluster3.workers, spread_ids())
    y = await register_company(fleet, cluster3.workers, spread_ids())
    # client -> (its company, the vehicles its filter covers)
    clients: dict[WsClient, tuple[Company, set[str]]] = {}
    try:
        for w in cluster3.workers:
            for own, foreign in ((x, y), (y, x)):
                everything = await WsClient.connect(w.ws_url, own.token())
                sub = await everything.subscribe("vehicles", {"type": "all"})
                assert sub["type"] == "subscribed" and sub["count"] == 12, sub
                clients[everything] = (own, set(own.vehicles))

                picked = own.vehicles[::2]
                by_ids = await WsClient.connect(w.ws_url, own.token())
                flt = {"type": "byIds", "ids": foreign.vehicles[:1]}
                denied = await by_ids.subscribe("vehicles", flt)
                assert denied["type"] == "error" and denied["code"] == "SUBSCRIPTION_DENIED"
                sub = await by_ids.subscribe("vehicles", {"type": "byIds", "ids": picked})
                assert sub["type"] == "subscribed" and sub["count"] == len(picked), sub
                clients[by_ids] = (own, set(picked))
        took = await warm_up(fleet, [(c, v) for c, (_, v) in clients.items()])
        print(f"\n12 clients on 3 instances warmed up in {took:.2f} s")

        def of(company: Company) -> list[WsClient]:
            return [c for c, (own, _) in clients.items() if own is company]

        all_x = next(c for c in of(x) if clients[c][1] == set(x.vehicles))
        all_y = next(c for c in of(y) if clients[c][1] == set(y.vehicles))
        # Y's last fixes first, then X's: X's clients must pass every Y eventId; then Y again.
        await send_round(fleet, y.vehicles, lat=70.0)
        last_y = await wait_round(all_y, y.vehicles, 70.0)
        await send_round(fleet, x.vehicles, lat=71.0)
        last_x = await wait_round(all_x, x.vehicles, 71.0)
        await send_round(fleet, y.vehicles, lat=72.0)
        await wait_round(all_y, y.vehicles, 72.0)
        for c, (own, covered) in clients.items():
            lat, forbidden = (71.0, last_y) if own is x else (72.0, last_x)
            await wait_round(c, covered, lat)
            await reach_event_id(c, forbidden)
            assert c.vehicles_seen() == covered
            other = y if own is x else x
            # (the refused subscription's error echoes the id this client itself asked for)
            raw = orjson.dumps([m for m in c.received if m.get("type") != "error"]).decode()
            leaked = [m for m in (other.company_id, *other.vehicles) if m in raw]
            assert not leaked, f"{own.company_id} client got another company's data: {leaked}"
            assert strictly_increasing(frame_event_ids(c)), frame_event_ids(c)
    finally:
        await gather_close(*clients)


async def test_unsubscribe_stops_delivery_and_withdraws_interest(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids())
    here = cluster3.workers[0]
    # Both vehicles owned by other instances, so the interest lives in their tables.
    gone, kept = [v for v in company.vehicles if cluster3.owner_of(v) is not here][:2]
    watch_on = next(w for w in cluster3.workers if w is not here)
    client = await WsClient.connect(here.ws_url, company.token())
    watch = await WsClient.connect(watch_on.ws_url, company.token())
    try:
        sub = await client.subscribe("vehicles", {"type": "byIds", "ids": [gone, kept]})
        assert sub["type"] == "subscribed" and sub["count"] == 2, sub
        await watch.subscribe("vehicles", {"type": "all"})
        await warm_up(fleet, [(client, {gone, kept}), (watch, set(company.vehicles))])
        table = interest_of(cluster3.workers)
        assert here.instance_id in holders(table, f"vehicle:{gone}"), table
        assert here.instance_id in holders(table, f"vehicle:{kept}"), table
        assert f"vehicle:{gone}#p{partition_of(gone, 12)}" in table

        reply = await client.request(
            {
                "type": "unsubscribe",
                "subscriptionType": "vehicles",
                "filter": {"type": "byIds", "ids": [gone]},
            },
            "unsubscribed",
        )
        assert reply["eventId"] == 0
        await fleet.send_fix(gone, lat=-2.0)
        forbidden, _ = await wait_position(watch, gone, at(-2.0))
        await fleet.send_fix(kept, lat=-3.0)
        await wait_position(client, kept, at(-3.0))
        await reach_event_id(client, forbidden)
        assert -2.0 not in lats_of(client, gone)

        def withdrawn(vid: str) -> bool:
            return here.instance_id not in holders(interest_of(cluster3.workers), f"vehicle:{vid}")

        took = await until(lambda: withdrawn(gone), 20, "interest in the unsubscribed vehicle")
        print(f"\ninterest entry withdrawn {took:.2f} s after the unsubscribe reply")
        assert not withdrawn(kept), "the other vehicle's interest must stay"

        # Closing the connection withdraws the rest.
        await client.close()
        took = await until(lambda: withdrawn(kept), 20, "interest of the closed connection")
        print(f"interest of a closed connection withdrawn in {took:.2f} s")
    finally:
        await gather_close(client, watch)


async def test_group_and_company_subscriptions_work_across_instances(
    cluster3: Cluster, fleet: FleetDriver
) -> None:
    company = await register_company(fleet, cluster3.workers, spread_ids(), groups=2)
    g0, g1 = company.groups
    in_g0 = set(company.groups[g0])
    by_group: list[WsClient] = []
    by_company: list[WsClient] = []
    try:
        for w in cluster3.workers:
            c = await WsClient.connect(w.ws_url, company.token())
            sub = await c.subscribe("vehicles", {"type": "byGroup", "groupId": g0})
            assert sub["type"] == "subscribed" and sub["count"] == len(in_g0), sub
            by_group.append(c)
            c = await WsClient.connect(w.ws_url, company.token())
            sub = await c.subscribe("vehicles", {"type": "all"})
            assert sub["type"] == "subscribed" and sub["count"] == 12, sub
            by_company.append(c)
        everything = set(company.vehicles)
        await warm_up(fleet, [(c, in_g0) for c in by_group] + [(c, everything) for c in by_company])

        # Coarse keys live once per partition, each listing all three instances.
        ids = {w.instance_id for w in cluster3.workers}
        table = interest_of(cluster3.workers)
        for key in (f"company:{company.company_id}", f"group:{g0}"):
            for p in range(12):
                assert set(table.get(f"{key}#p{p}", [])) == ids, (key, p, table)
        assert not any(k.startswith(f"group:{g1}#") for k in table), table

        await send_round(fleet, company.vehicles, lat=80.0)
        last = max([await wait_round(c, everything, 80.0) for c in by_company])
        await send_round(fleet, sorted(in_g0), lat=81.0)
        for c in by_group:
            await wait_round(c, in_g0, 81.0)
            await reach_event_id(c, last)
            assert c.vehicles_seen() == in_g0
        for c in by_company:
            assert c.vehicles_seen() == everything
    finally:
        await gather_close(*by_group, *by_company)
