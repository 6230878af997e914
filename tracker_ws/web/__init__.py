"""aiohttp adapters: the WebSocket session, the admin API, health and metrics."""
