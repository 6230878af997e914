"""web/listeners.py without a server: TLS settings, the bad-request log line, the settings."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadStatusLine

from tests.support.tls import make_pki
from tracker_ws.config import Settings
from tracker_ws.domain.errors import ConfigError
from tracker_ws.web.listeners import BadRequestLog, tls_context

SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"


def test_no_certificate_means_no_tls_listener() -> None:
    assert tls_context(Settings()) is None


def test_a_usable_certificate_gives_a_server_context(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ctx = tls_context(Settings(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)))
    assert ctx is not None


@pytest.mark.parametrize(
    ("cert", "key", "expected"),
    [
        ("server.pem", None, "TRACKER_WS_TLS_KEY must be set too"),
        (None, "server-key.pem", "TRACKER_WS_TLS_CERT must be set too"),
        ("missing.pem", "server-key.pem", "TRACKER_WS_TLS_CERT: cannot read"),
        ("server.pem", "missing.pem", "TRACKER_WS_TLS_KEY: cannot read"),
        ("ca.pem", "server-key.pem", "are not a usable PEM certificate and key"),
        ("server.pem", "server.pem", "are not a usable PEM certificate and key"),
    ],
)
def test_unusable_tls_settings_are_one_line_config_errors(
    tmp_path: Path, cert: str | None, key: str | None, expected: str
) -> None:
    make_pki(tmp_path)
    settings = Settings(
        tls_cert=str(tmp_path / cert) if cert else None,
        tls_key=str(tmp_path / key) if key else None,
    )
    with pytest.raises(ConfigError) as err:
        tls_context(settings)
    assert expected in err.value.message
    assert "\n" not in err.value.message


def _capture(caplog: pytest.LogCaptureFixture) -> BadRequestLog:
    caplog.set_level(logging.DEBUG, logger="test.http")
    return BadRequestLog(logging.getLogger("test.http"), {})


def test_a_bad_request_is_one_info_line_without_the_request_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = _capture(caplog)
    exc = BadStatusLine(f"GET /ws?token={SECRET} HTTP/1.1 x")
    for call in (log.exception, log.debug):  # aiohttp's two paths (bad method: debug)
        call("Error handling request from %s", "10.1.2.3", exc_info=exc)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "bad HTTP request from 10.1.2.3: BadStatusLine (400), connection closed")
    ] * 2
    assert all(r.exc_info is None for r in caplog.records)


def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = _capture(caplog)
    try:
        raise RuntimeError("handler bug")
    except RuntimeError as exc:
        log.exception("Error handling request from %s", "10.1.2.3", exc_info=exc)
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is not None


def test_listener_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TRACKER_WS_ADVERTISED_HOST",
        "TRACKER_WS_INTERNAL_HOST",
        "TRACKER_WS_INTERNAL_PORT",
        "TRACKER_WS_TLS_CERT",
    ):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert (s.advertised_host, s.internal_host, s.internal_port) == (
        socket.gethostname(),
        "127.0.0.1",
        8092,
    )
    assert (s.request_timeout_s, s.keepalive_timeout_s, s.tls_cert, s.tls_port) == (
        5.0,
        15.0,
        None,
        8091,
    )
    monkeypatch.setenv("TRACKER_WS_ADVERTISED_HOST", "ws-3.tracker.internal")
    monkeypatch.setenv("TRACKER_WS_INTERNAL_PORT", "9100")
    s = Settings.from_env()
    assert (s.advertised_host, s.internal_port) == ("ws-3.tracker.internal", 9100)
