"""The live map page (`/demo?token=…`, tracker_ws/web/static/index.html on the client SDK) in
real headless Chromium (the Debian `chromium`, driven by Playwright).

Vehicles appear as markers and move, a geo event, a notification and a system alert show in
the events panel, and after the worker is restarted (SIGTERM, started again on the same port)
the page reconnects by itself and the markers move again. A bad token shows why it was refused.
With TRACKER_WS_MAP_SCREENSHOT=<path> the screenshot of the running page goes there (the
README's docs/map.png is made so); otherwise into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from tests.conftest import Cluster, start_cluster
from tests.support.checks import warm_up_event_partitions
from tests.support.fleet import Company, EventSource, FleetDriver, new_id
from tracker_ws_dev.stack import Worker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAP_DB = 3
NAMES = ["A123BC", "B456DE", "C789EK", "E012HM", "K345MO", "P678CT"]


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: pip install -e '.[dev]'"
    if not CHROMIUM.is_file():
        return (
            f"{CHROMIUM} is missing: `make test` installs the Debian chromium when run as root "
            "(apt-get install chromium)"
        )
    return None


_MISSING = _missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture
def map_worker(topics: str, redis_url: str, devstack_dir: Path) -> Iterator[Cluster]:
    redis_sync.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{MAP_DB}").flushdb()
    cluster = start_cluster(
        1, broker_url=topics, redis_base_url=redis_url, log_dir=devstack_dir, db=MAP_DB
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def drive(fleet: FleetDriver, vehicles: list[str], stop: asyncio.Event) -> None:
    """Fixes on loops around central Moscow (where the simulator drives), ~3 per second; the
    last vehicle stands still (speed 0)."""
    step = 0
    n = len(vehicles)
    while not stop.is_set():
        for i, vid in enumerate(vehicles):
            still = i == n - 1
            angle = 0.0 if still else step * 0.05 + i * 2 * math.pi / n
            radius = 0.012 + 0.01 * (i % 3)
            lat = 55.75 + 0.05 * math.sin(i * 2.4) + radius * math.sin(angle)
            lon = 37.62 + 0.09 * math.cos(i * 2.4) + 1.8 * radius * math.cos(angle)
            speed = 0.0 if still else 40.0
            await fleet.send_fix(vid, lat=round(lat, 6), lon=round(lon, 6), speed=speed)
        step += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)  # the pace of the simulated fleet


MARKERS_JS = (
    """() => JSON.stringify(trackerPage.vehicles().map((v) => [v.id, v.lat, v.lon]).sort())"""
)


async def markers_move(page: Any, n: int) -> None:
    """`n` vehicle markers on the map, then one of them at another place (a vehicle moved)."""
    await page.wait_for_function(
        f"() => document.querySelectorAll('.vehicle[data-vehicle]').length === {n}",
        timeout=20_000,
    )
    first = await page.evaluate(MARKERS_JS)
    await page.wait_for_function(
        f"(first) => ({MARKERS_JS})() !== first", arg=first, timeout=20_000
    )


@pytest.mark.timeout(180)
async def test_map_page_shows_moving_vehicles_events_and_reconnects_after_a_restart(
    map_worker: Cluster, fleet: FleetDriver, browser: Any, tmp_path: Path
) -> None:
    (worker,) = map_worker.workers
    r = aioredis.Redis.from_url(map_worker.redis_url)
    company = Company()
    for name in NAMES:
        vid = new_id()
        await fleet.register(vid, company.company_id, name=name)
        company.vehicles.append(vid)
    user = new_id()
    await warm_up_event_partitions(fleet, worker)
    stop = asyncio.Event()
    driver = asyncio.create_task(drive(fleet, company.vehicles, stop))
    page = await browser.new_page(viewport={"width": 1280, "height": 760})
    errors: list[str] = []  # script errors, and the page's own files failing to load
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "response",
        lambda res: (
            errors.append(f"{res.status} {res.url}")
            if res.status >= 400 and "/ws" not in res.url
            else None
        ),
    )
    try:
        await page.goto(f"{worker.url}/demo?token={company.token(user)}")
        await page.wait_for_selector("#conn.open", timeout=20_000)
        await markers_move(page, len(NAMES))
        labels = await page.eval_on_selector_all(
            ".vehicle .name", "els => els.map((e) => e.textContent).sort()"
        )
        assert labels == sorted(NAMES), labels
        statuses = await page.eval_on_selector_all(
            ".vehicle",
            "els => els.map((e) => [e.dataset.status, e.querySelector('.dot').style.background])",
        )
        assert {s for s, _ in statuses} <= {"moving", "stopped", "parking"}, statuses
        assert ["moving", "rgb(47, 158, 68)"] in statuses, statuses

        events = EventSource(fleet.producer, r)
        await events.geo(company.company_id, company.vehicles[0], source="kafka")
        await events.notification(user, source="redis")
        await events.maintenance(company.company_id, company.vehicles[1], source="kafka")
        await events.alert([company.company_id], source="redis")
        for kind in ("geo", "notification", "maintenance", "alert"):
            await page.wait_for_selector(f"#events li.{kind}", timeout=20_000)
        # The header has caught up and the map is fitted to the fleet (what the screenshot shows).
        await page.wait_for_function(
            f"() => trackerPage.fitted && document.getElementById('nevt').textContent === '4' "
            f"&& document.getElementById('nveh').textContent === '{len(NAMES)}'"
        )
        geo = await page.text_content("#events li.geo")
        assert geo is not None and "exited Depot" in geo, geo

        shot = Path(os.environ.get("TRACKER_WS_MAP_SCREENSHOT") or tmp_path / "map.png")
        await page.screenshot(path=str(shot))
        print(f"\nscreenshot: {shot}")

        first_connection = await page.evaluate("() => trackerPage.client.connected.connectionId")
        restarted = time.monotonic()
        await asyncio.to_thread(worker.restart)  # SIGTERM, then the same port again
        await page.wait_for_function(
            "(id) => trackerPage.client.state === 'open' && "
            "trackerPage.client.connected.connectionId !== id",
            arg=first_connection,
            timeout=60_000,
        )
        back = time.monotonic() - restarted
        seen_states = await page.evaluate("() => trackerPage.states")
        assert "reconnecting" in seen_states, seen_states
        await markers_move(page, len(NAMES))
        print(f"map page reconnected {back:.1f} s after the SIGTERM; states {seen_states}")
    finally:
        stop.set()
        await driver
        await r.aclose()
        await page.close()
    assert not errors, errors


async def test_map_page_shows_why_a_bad_token_is_refused(worker: Worker, browser: Any) -> None:
    page = await browser.new_page()
    try:
        await page.goto(f"{worker.url}/demo?token=not-a-jwt")
        await page.wait_for_selector("#conn.closed", timeout=20_000)
        why = await page.text_content("#why")
        assert why is not None and "4001" in why and "UNAUTHORIZED" in why, why
        # Final: it does not retry with the refused token.
        assert await page.evaluate("() => trackerPage.client.state") == "closed"
    finally:
        await page.close()
