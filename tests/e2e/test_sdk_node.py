"""The client SDK's own tests (clients/js/test, `node --test`: backoff and the state machine
against a fake socket), and the check that the copies the server serves are built from the
source (tracker_ws/web/static/sdk, vendor/leaflet: committed, so the Python package carries
them without Node)."""

from __future__ import annotations

import subprocess

from tests.support.node_sdk import NODE, SDK_DIR, build_sdk, requires_node_sdk

pytestmark = requires_node_sdk


def test_sdk_node_tests_pass() -> None:
    assert NODE is not None
    build_sdk()
    done = subprocess.run(
        [NODE, "--test", "--test-reporter=spec", "test/"],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout or "ℹ fail 0" in done.stdout, done.stdout[-2000:]


def test_served_sdk_and_leaflet_are_built_from_the_source() -> None:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "scripts/publish-static.mjs", "--check"],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
