"""One exception tree for the whole service. Every error carries a stable code.

Codes travel to clients in `error` messages (`code` field) and to the admin API as JSON
bodies, so they are part of the contract: add new ones, never rename.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the service raises on purpose."""

    code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMessage(TrackerError):
    """A client frame that is not valid JSON or does not match the protocol schema."""

    code = "INVALID_MESSAGE"
    http_status = 400


class UnsupportedFrame(InvalidMessage):
    """A binary (or otherwise non-text) WebSocket frame."""

    code = "UNSUPPORTED_FRAME"


class MessageTooLarge(TrackerError):
    code = "MESSAGE_TOO_LARGE"
    http_status = 413


class SubscriptionDenied(TrackerError):
    """The user may not see (some of) what was asked for. `denied` names the ids refused."""

    code = "SUBSCRIPTION_DENIED"
    http_status = 403

    def __init__(self, message: str, denied: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.denied = denied


class SubscriptionLimit(TrackerError):
    """A subscribe that would take the connection past its cap of routing keys."""

    code = "SUBSCRIPTION_LIMIT"
    http_status = 429

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class SubscriptionRevoked(TrackerError):
    code = "SUBSCRIPTION_REVOKED"
    http_status = 403


class RateLimited(TrackerError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(TrackerError):
    """Missing, malformed, forged or otherwise unacceptable credentials."""

    code = "UNAUTHORIZED"
    http_status = 401


class TokenExpired(AuthError):
    code = "TOKEN_EXPIRED"


class Forbidden(TrackerError):
    """Authenticated, but lacking the role the operation needs."""

    code = "FORBIDDEN"
    http_status = 403


class NotFound(TrackerError):
    code = "NOT_FOUND"
    http_status = 404


class InvalidEvent(TrackerError):
    """A stream input event (Kafka or Redis) that cannot be processed: counted and dead-lettered."""

    code = "INVALID_EVENT"
    http_status = 400


class TooManyTargets(InvalidEvent):
    """An alert or broadcast naming more companies than TRACKER_WS_MAX_BROADCAST_TARGETS."""

    code = "TOO_MANY_TARGETS"


class ConfigError(TrackerError):
    code = "CONFIG_ERROR"


class IncompatibleLibrary(ConfigError):
    """An installed faust-streaming, mode or aiokafka lacks a private name tracker_ws.kafka
    relies on (tracker_ws/kafka/compat.py): refuse to start rather than run without a fix."""

    code = "INCOMPATIBLE_LIBRARY"


class BackendUnavailable(TrackerError):
    """Redis or the broker cannot be reached right now."""

    code = "BACKEND_UNAVAILABLE"
    http_status = 503


class PortInUse(TrackerError):
    """The port a server is to listen on is taken (another instance, another stack)."""

    code = "PORT_IN_USE"
