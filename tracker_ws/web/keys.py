"""aiohttp application keys (typed, instead of string keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tracker_ws.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("tracker_runtime")
