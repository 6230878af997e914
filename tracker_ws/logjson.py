"""JSON log lines (TRACKER_WS_LOG_FORMAT=json): one object per line, for log collectors.

Handed to Faust as its `logging_config` (merged with mode's defaults), so the worker's own
handler writes them; the fields: `time` (ISO-8601, UTC, milliseconds), `level`, `logger`,
`message`, `instance`, and `exception` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str = "") -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "instance": self.instance,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def logging_config(log_format: str, instance: str) -> dict[str, Any] | None:
    """Faust's `logging_config` for the format: None keeps mode's own (text, coloured on a
    terminal)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "merge": True,  # mode's levels and root stay; our handler replaces its "default"
        "formatters": {"json": {"()": JsonFormatter, "instance": instance}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
    }
