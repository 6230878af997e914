"""TRACKER_WS_LOG_FORMAT=json: the logging configuration Faust hands its worker, applied the way
the worker applies it (mode's setup_logging, merged with mode's defaults), writes one JSON
object per line with the time, level, logger, message, instance and any traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
from mode.utils.logging import setup_logging

from tracker_ws import logjson
from tracker_ws.config import Settings
from tracker_ws.domain.errors import ConfigError


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_worker_log_lines_are_json_objects(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(loglevel="INFO", logging_config=logjson.logging_config("json", "ws-9"))
    log = logging.getLogger("tracker_ws.test")
    log.info("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    log.debug("not at INFO")
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "tracker_ws.test", "hello world"),
        ("ERROR", "tracker_ws.test", "it failed"),
    ]
    assert all(x["instance"] == "ws-9" and x["time"].endswith("+00:00") for x in lines)
    assert "ValueError: boom" in lines[1]["exception"] and "exception" not in lines[0]


def test_text_keeps_modes_own_format() -> None:
    assert logjson.logging_config("text", "ws-9") is None


def test_the_formatter_survives_odd_arguments() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", (object(),), None)
    out = orjson.loads(logjson.JsonFormatter("i").format(record))
    assert out["message"].startswith("<object object") and out["level"] == "WARNING"


def test_a_bad_format_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_WS_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as err:
        Settings.from_env()
    assert err.value.message == "TRACKER_WS_LOG_FORMAT must be one of text, json, got 'xml'"
    monkeypatch.setenv("TRACKER_WS_LOG_FORMAT", "JSON")
    assert Settings.from_env().log_format == "json"
