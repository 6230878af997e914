"""tracker-ws: the real-time WebSocket service of the GPS fleet-tracking platform."""

__version__ = "0.1.0"
