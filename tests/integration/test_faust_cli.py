"""`faust -A tracker_ws.app …` for data engineers: one help listing Faust's commands and the
project's (token, config, dev, simulate, listen), each with its options; agents, tables and the
GPS model described; and no directory left behind by commands that only load the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

FAUST = [sys.executable, "-m", "faust", "-A", "tracker_ws.app"]
USER = "11111111-1111-4111-8111-111111111111"
COMPANY = "22222222-2222-4222-8222-222222222222"
VEHICLES = ["33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"]


def faust(cwd: Path, *args: str) -> str:
    env = {**os.environ, "TRACKER_WS_DEV_MODE": "1", "TRACKER_WS_REDIS_URL": "memory://"}
    env.pop("TRACKER_WS_DATA_DIR", None)
    done = subprocess.run(
        [*FAUST, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    return tmp_path


def test_one_help_lists_the_projects_commands(empty: Path) -> None:
    out = faust(empty, "--help")
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert {"token", "config", "dev", "simulate", "listen"} <= listed
    assert {"worker", "agents", "tables", "models", "send"} <= listed
    assert "--vehicles" in faust(empty, "simulate", "--help")
    assert list(empty.iterdir()) == []  # no .dev/faust/… from a command that only loads the app


def test_token_through_faust(empty: Path) -> None:
    args = ["token", "--user", USER, "--company", COMPANY, "--admin"]
    for vid in VEHICLES:
        args += ["--vehicles", vid]
    token = faust(empty, *args).strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == USER and claims["companyId"] == COMPANY
    assert claims["roles"] == ["admin"] and claims["vehicleIds"] == VEHICLES


def test_agents_tables_and_model_are_described(empty: Path) -> None:
    agents = faust(empty, "agents")
    for name in ("@tracker_ws.positions", "@tracker_ws.subscriptions", "geo-events"):
        assert name in agents
    assert "<N/A>" not in agents
    tables = faust(empty, "tables")
    assert "last_positions" in tables and "Missing description" not in tables
    assert "tracker_ws.tables.records.GpsEvent" in faust(empty, "models")
    fields = faust(empty, "model", "tracker_ws.tables.records.GpsEvent")
    assert all(f in fields for f in ("vehicleId", "latitude", "timestamp", "sensors"))
    assert list(empty.iterdir()) == []
