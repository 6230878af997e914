"""The client SDK (clients/js) run in Node: `node tests/e2e/sdk_client.mjs` as a subprocess.

Its JSON lines (see the top of sdk_client.mjs) are read by the same machinery as the seed
client's (`NodeSeedClient`: `lines`, `wait_until`, `wait_for`, `stop`). Tests using it set
`pytestmark = requires_node_sdk`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_seed import NodeSeedClient

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "clients" / "js"
SCRIPT = ROOT / "tests" / "e2e" / "sdk_client.mjs"
NODE = shutil.which("node")


def _missing() -> str | None:
    if NODE is None:
        return "node is not on PATH: the client SDK cannot run"
    if not (SDK_DIR / "node_modules" / "typescript").is_dir():
        return "clients/js/node_modules is missing: run `make sdk` (`make test` installs it)"
    return None


MISSING = _missing()
requires_node_sdk = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def build_sdk() -> None:
    """Compile clients/js/src into clients/js/dist (what the Node tests import)."""
    import subprocess

    assert NODE is not None, MISSING
    tsc = SDK_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    subprocess.run([NODE, str(tsc), "-p", str(SDK_DIR / "tsconfig.json")], check=True)


class NodeSdkClient(NodeSeedClient):
    """`node sdk_client.mjs` with a config."""

    @classmethod
    async def start_sdk(
        cls,
        ws_url: str,
        token: str,
        subscriptions: list[dict[str, Any]],
        *,
        options: dict[str, Any] | None = None,
        duration_ms: int = 300_000,
    ) -> NodeSdkClient:
        assert NODE is not None, MISSING
        config = {
            "url": ws_url,
            "token": token,
            "subscriptions": subscriptions,
            "options": options or {},
            "durationMs": duration_ms,
        }
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(SCRIPT),
            json.dumps(config),
            env=dict(os.environ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )
        return cls(proc)

    def states(self) -> list[dict[str, Any]]:
        return [line["state"] for line in self.lines if isinstance(line.get("state"), dict)]

    def hellos(self) -> list[dict[str, Any]]:
        return [line["connected"] for line in self.lines if "connected" in line]

    def replayable(self) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("cb") in ("geoEvent", "notification", "systemAlert")
        ]
