"""The command line against a running worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tracker_ws.auth import mint_token
from tracker_ws_dev import stack as devstack

ROOT = Path(__file__).resolve().parents[2]
LISTEN = [sys.executable, "-m", "tracker_ws", "listen"]


def _listen(worker: devstack.Worker, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LISTEN, "--port", str(worker.port), "--token", token, "--duration", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_listen_prints_the_servers_error_for_a_rejected_token(worker: devstack.Worker) -> None:
    got = _listen(worker, "not-a-jwt")
    assert got.returncode == 1
    assert "Traceback" not in got.stderr
    assert got.stderr.strip().startswith("rejected: 401 UNAUTHORIZED:"), got.stderr
    forged = mint_token("u", "c", secret="another-secret-of-at-least-32-bytes!", ttl_s=60)
    got = _listen(worker, forged)
    assert got.stderr.strip().startswith("rejected: 401 UNAUTHORIZED:"), got.stderr


def test_listen_says_when_nothing_listens(unused_tcp_port: int) -> None:
    got = subprocess.run(
        [*LISTEN, "--port", str(unused_tcp_port), "--token", "t", "--duration", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 1
    assert got.stderr.startswith(f"cannot connect to 127.0.0.1:{unused_tcp_port}"), got.stderr
    assert "Traceback" not in got.stderr
