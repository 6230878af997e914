"""Live delivery, in-process (ARCHITECTURE §4): an idle connection gets a position at once,
positions within the flush window after it coalesce to the latest per vehicle in one
positionBatch, and every frame of the event stream comes in eventId order."""

from __future__ import annotations

from tests.support.checks import live_positions
from tests.support.eventcases import NOTIF, notification
from tests.support.fleet import new_id
from tests.support.inproc import Instance, running, settings


async def test_positions_within_the_window_coalesce_to_the_latest_per_vehicle() -> None:
    # Long enough that a loaded machine publishes the next three fixes within it (the batch
    # waits for its end: this test costs the window).
    async with running(settings(flush_window_ms=500)) as inst:
        company = inst.company(2)
        a, b = company.vehicles
        client = await inst.connect(company.token())
        await client.subscribe("vehicles", {"type": "all"})
        await inst.send_fix(a, lat=1.0)
        first = await client.wait_for(lambda m: bool(live_positions(m)), 5, "the first fix")
        assert first["type"] == "position" and first["position"]["lat"] == 1.0, first

        # Three publishes, three deliveries to the hub, within the window.
        await inst.send_fix(a, lat=2.0)
        await inst.send_fix(b, lat=3.0)
        await inst.send_fix(a, lat=4.0)
        batch = await client.wait_for(lambda m: bool(live_positions(m)), 5, "the batch")
        assert batch["type"] == "positionBatch", batch
        assert sorted((p["vehicleId"], p["position"]["lat"]) for p in batch["positions"]) == sorted(
            [(a, 4.0), (b, 3.0)]
        ), batch
        assert batch["eventId"] == first["eventId"] + 3, (first, batch)  # the largest it holds


async def test_positions_and_events_arrive_in_event_id_order(inst: Instance) -> None:
    company = inst.company(3)
    user = new_id()
    client = await inst.connect(company.token(user))
    await client.subscribe("vehicles", {"type": "all"})
    await client.subscribe("notifications", {"type": "all"})
    last = ""
    for i in range(20):
        await inst.send_fix(company.vehicles[i % 3], lat=10.0 + i)
        if i % 4 == 0:
            value = notification(user)
            last = value["notification"]["id"]
            await inst.event(NOTIF, value)
    await inst.send_fix(company.vehicles[0], lat=89.0)
    await client.wait_for(
        lambda m: any(p["lat"] == 89.0 for _, _, p in live_positions(m)), 5, "the last fix"
    )
    ids = [m["eventId"] for m in client.received if m.get("eventId")]
    assert ids == sorted(set(ids)), ids
    notes = [m for m in client.received if m["type"] == "notification"]
    assert len(notes) == 5 and notes[-1]["notification"]["id"] == last
    # Every vehicle's positions in the order they were sent.
    for vid in company.vehicles:
        lats = [p["lat"] for m in client.received for _, v, p in live_positions(m) if v == vid]
        assert lats == sorted(lats) and lats, (vid, lats)
