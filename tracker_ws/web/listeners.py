"""The web server's listeners: Faust's aiohttp driver, subclassed (README "Ports").

Faust serves its own views (`/router`, `/table`, stats) and ours from one aiohttp application
on one port, with no authentication and aiohttp's defaults: an hour of keep-alive, no limit on
how long a request head may take to arrive, and a traceback (with the offending request line)
for every malformed request. This driver, registered as the `tracker://` web driver through
the `faust.web.drivers` entry point, keeps three doors instead:

- public (`TRACKER_WS_HOST:TRACKER_WS_PORT`): our routes only — /ws, /health, /metrics, REST;
- TLS (`TRACKER_WS_TLS_PORT`, when `TRACKER_WS_TLS_CERT`/`_KEY` are set): the same routes;
- internal (`TRACKER_WS_INTERNAL_HOST:TRACKER_WS_INTERNAL_PORT`, loopback by default): Faust's
  views and its stats (`/stats/`, `/performance/`). This is Faust's `web_bind`/`web_port`, so
  the URL instances advertise to each other for key routing is where those views are.

Only public aiohttp API is used: runners, `runner.server` (the protocol factory) behind a small
delegating protocol in our own `loop.create_server` (which also gives TLS a handshake timeout),
a middleware, and the documented `keepalive_timeout`/`logger` handler arguments.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from faust.types.web import View
from faust.web.drivers import aiohttp as faust_aiohttp

from tracker_ws.config import Settings
from tracker_ws.domain.errors import ConfigError

if TYPE_CHECKING:
    from tracker_ws.app import TrackerApp

BACKLOG = 128  # as aiohttp's TCPSite


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server context for the TLS listener, None when no certificate is configured.

    Raises ConfigError (one line naming the variable) when only one of the two is set or a
    file cannot be read, so a worker fails at start rather than serving without WSS."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return None
    if not cert or not key:
        missing = "TRACKER_WS_TLS_KEY" if cert else "TRACKER_WS_TLS_CERT"
        raise ConfigError(f"{missing} must be set too: TLS needs a certificate and its key")
    for name, path in (("TRACKER_WS_TLS_CERT", cert), ("TRACKER_WS_TLS_KEY", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror}") from None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"TRACKER_WS_TLS_CERT/TRACKER_WS_TLS_KEY: {cert!r} and {key!r} are not a usable "
            f"PEM certificate and key: {exc}"
        ) from None
    return ctx


class BadRequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The `logger` of aiohttp's request handler.

    aiohttp logs a request it cannot parse at ERROR with a traceback whose message quotes the
    request line (tokens included), or at DEBUG for a bad method. Those become one INFO line
    with the peer and the error kind; everything else passes through unchanged."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = args[0] if args else "unknown"
            self.logger.info(
                "bad HTTP request from %s: %s (%s), connection closed",
                peer,
                type(exc).__name__,
                exc.code,
            )
            return
        super().log(level, msg, *args, **kwargs)


class HeadTimeout:
    """Closes a connection whose request head has not arrived `timeout` seconds after accept.

    aiohttp has a keep-alive timeout but no header-read timeout: a client sending half a
    request head (slowloris) holds its socket until keep-alive (3,630 s by default). The timer
    starts when the listener accepts (so it covers a TLS handshake too) and stops at the end
    of the first head, seen in the bytes as they arrive (not when a busy loop gets round to
    the handler) or, failing that, when the middleware sees the request. A request body must
    then arrive within the same time. Later requests on a kept-alive connection are bounded
    by the keep-alive timeout, which aiohttp enforces for idle and half-received requests
    alike. Upgraded WebSockets are untouched; they have their own heartbeat."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting: dict[web.RequestHandler, asyncio.TimerHandle] = {}

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            handler = server()
            loop = asyncio.get_running_loop()
            self._waiting[handler] = loop.call_later(self.timeout, self._expire, handler)
            return _HeadWatch(handler, self)

        return make

    def arrived(self, handler: web.RequestHandler) -> None:
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, handler: web.RequestHandler) -> None:
        if self._waiting.pop(handler, None) is not None and handler.transport is not None:
            handler.force_close()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.arrived(request.protocol)
        if request.body_exists and not request.content.is_eof():
            # read() keeps the body, so the handler's json()/text() gets it from memory.
            try:
                async with asyncio.timeout(self.timeout):
                    await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout() from None
        return await handler(request)


class _HeadWatch(asyncio.Protocol):
    """aiohttp's request handler as the connection's protocol, watching for the end of the
    first request head (an empty line) on the way in."""

    def __init__(self, handler: web.RequestHandler, guard: HeadTimeout) -> None:
        self._handler = handler
        self._guard: HeadTimeout | None = guard
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._guard is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._guard.arrived(self._handler)
                self._guard = None
            else:
                self._tail = seen[-3:]
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()  # None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.arrived(self._handler)  # forget it
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class TrackerWeb(faust_aiohttp.Web):
    """Faust's aiohttp driver with separate public, TLS and internal listeners."""

    # Faust mounts its stats at "/" (where the production index would be); keep them under
    # /stats/ so "/" on the internal port does not pretend to be the service.
    debug_blueprints: ClassVar[list[tuple[str, Any]]] = [
        ("/graph", "faust.web.apps.graph:blueprint"),
        ("/stats", "faust.web.apps.stats:blueprint"),
    ]

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # Faust's views and `@app.page`s go here (route() below); web_app keeps ours.
        self.internal_app = web.Application()
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []

    def route(
        self,
        pattern: str,
        handler: Callable[..., Any],
        cors_options: Any = None,  # not used: no CORS on the internal port
    ) -> None:
        view: View = handler  # type: ignore[assignment]  # Faust passes View instances

        async def dispatch(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse = await view(request)  # type: ignore[arg-type]
            return response

        for method in view.get_methods():
            self.internal_app.router.add_route(method, pattern, dispatch)

    async def start_server(self) -> None:
        app: TrackerApp = self.app  # type: ignore[assignment]
        s = app.rt.settings
        guard = HeadTimeout(s.request_timeout_s)
        for aio in (self.web_app, self.internal_app):
            aio.middlewares.append(guard.middleware)
        handler_args: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": s.keepalive_timeout_s,
            "logger": BadRequestLog(logging.getLogger("tracker_ws.web.http"), {}),
        }
        public = web.AppRunner(self.web_app, **handler_args)
        internal = web.AppRunner(self.internal_app, **handler_args)
        self._runners = [public, internal]
        for runner in self._runners:
            await runner.setup()
        await self._listen("public", guard, public, s.host, s.port, None)
        if app.tls_context is not None:
            await self._listen("TLS", guard, public, s.host, s.tls_port, app.tls_context)
        await self._listen("internal", guard, internal, s.internal_host, s.internal_port, None)

    async def _listen(
        self,
        name: str,
        guard: HeadTimeout,
        runner: web.AppRunner,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
    ) -> None:
        assert runner.server is not None  # set up above
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            guard.protocol_factory(runner.server),
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=guard.timeout if tls is not None else None,
            backlog=BACKLOG,
        )
        self._servers.append(server)
        scheme = "https" if tls is not None else "http"
        self.log.info("%s listener on %s://%s:%d", name, scheme, host, port)

    async def stop_server(self) -> None:
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()  # closes connections, runs the apps' cleanup
        self._servers, self._runners = [], []

    def add_static(self, prefix: str, path: Any, **kwargs: Any) -> None:
        self.internal_app.router.add_static(prefix, str(path), **kwargs)


__all__ = ["BadRequestLog", "HeadTimeout", "TrackerWeb", "tls_context"]
