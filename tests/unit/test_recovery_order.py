"""recover(): the subscriptions come back before history is read (web/recovery.py).

Read the other way round, an event published between the history read and the restore is
neither in what was read nor delivered live to the not-yet-subscribed session: the recovery
soak lost an alert that way.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from tracker_ws.domain.errors import BackendUnavailable
from tracker_ws.domain.models import Subscription
from tracker_ws.web.recovery import UNAVAILABLE, recover

COMPANY = "c0d1e2f3-0000-4000-8000-000000000001"
STATE = orjson.dumps(
    {
        "subscriptions": [
            {"subscriptionType": "systemAlerts", "filter": {"type": "all"}},
            {"subscriptionType": "notifications", "filter": {"type": "all"}},
        ],
        "lastEventId": 10,
        "companyId": COMPANY,
    }
)


class FakeSession:
    def __init__(self, bus: Any) -> None:
        async def flush(timeout: float) -> None:
            return None

        self.rt = SimpleNamespace(
            bus=SimpleNamespace(store=bus), writeback=SimpleNamespace(flush=flush)
        )
        self.user = SimpleNamespace(user_id="u-1", company_id=COMPANY)
        self.state_key = "u-1"
        self.restored: list[Subscription] = []
        self.replay: list[tuple[int, bytes]] | None = None

    def restore(self, sub: Subscription) -> list[str]:
        self.restored.append(sub)
        return []


class Store:
    """The bus's store part (tracker_ws/bus/store.py), as recovery uses it."""

    def __init__(self, fail_history: bool = False) -> None:
        self.session: FakeSession | None = None
        self.restored_when_read: int | None = None
        self.fail_history = fail_history

    async def load_state(self, key: str) -> tuple[bytes | None, bool]:
        return STATE, True

    async def read_history(
        self, streams: list[str], after_id: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        assert self.session is not None
        self.restored_when_read = len(self.session.restored)
        if self.fail_history:
            raise BackendUnavailable("history read failed: BUSY")
        return [(11, b"{}")], False


async def test_history_is_read_after_every_subscription_is_back() -> None:
    bus = Store()
    session = FakeSession(bus)
    bus.session = session
    outcome = await recover(session, 10)  # type: ignore[arg-type]
    assert bus.restored_when_read == 2
    assert outcome.recovered and outcome.restored == 2
    assert session.replay == [(11, b"{}")]


async def test_a_failed_history_read_is_an_answer_with_the_subscriptions_back() -> None:
    bus = Store(fail_history=True)
    session = FakeSession(bus)
    bus.session = session
    outcome = await recover(session, 10)  # type: ignore[arg-type]
    assert (outcome.recovered, outcome.reason, outcome.restored) == (False, UNAVAILABLE, 2)
    assert session.replay is None
