"""WebSocket close codes the service sends (seed §3, ARCHITECTURE "contracts"), one place."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # a write failed: the peer is gone
    POLICY = 1008  # too many messages
    TOO_BIG = 1009
    RESTART = 1012  # this instance is draining for a restart: reconnect elsewhere
    UNAUTHORIZED = 4001
    TOKEN_EXPIRED = 4002
    SLOW_CONSUMER = 4009  # replayable events no longer fit the outbound queue
    KICKED = 4010  # an admin disconnected the user
