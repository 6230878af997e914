"""The settings table: every bad value is one line naming the variable; the README agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracker_ws.config import (
    DEV_JWT_SECRET,
    VARIABLES,
    Settings,
    cluster_nodes,
    describe_values,
    describe_variables,
)
from tracker_ws.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "raw", "wanted"),
    [
        ("TRACKER_WS_PORT", "abc", "must be an integer"),
        ("TRACKER_WS_PORT", "0", "must be ≥ 1"),
        ("TRACKER_WS_PORT", "70000", "must be ≤ 65535"),
        ("TRACKER_WS_PORT", "99999999999999999999999", "must be an integer"),
        ("TRACKER_WS_FLUSH_WINDOW_MS", "-1", "must be ≥ 0"),
        ("TRACKER_WS_QUEUE_LIMIT", "0", "must be ≥ 1"),
        ("TRACKER_WS_PARTITIONS", "0", "must be ≥ 1"),
        ("TRACKER_WS_RATE_PER_SECOND", "x", "must be a number"),
        ("TRACKER_WS_RATE_PER_SECOND", "nan", "must be a finite number"),
        ("TRACKER_WS_HEARTBEAT_TIMEOUT", "inf", "must be a finite number"),
        ("TRACKER_WS_DRAIN_TIMEOUT", "-5", "must be ≥ 0"),
        ("TRACKER_WS_MAX_FRAME_BYTES", "10", "must be ≥ 256"),
        ("TRACKER_WS_REDIS_URL", "http://x", "must be redis://"),
        ("TRACKER_WS_REDIS_URL", "redis://", "must be redis://"),
        ("TRACKER_WS_KAFKA_BROKER", "localhost:9092", "must be kafka://"),
        ("TRACKER_WS_DEV_MODE", "maybe", "must be 1/0"),
        ("TRACKER_WS_INSTANCE_ID", "a b", "must be letters"),
        ("TRACKER_WS_JWT_PUBLIC_KEY", "/nonexistent/key.pem", "cannot read"),
        ("TRACKER_WS_HOST", "   ", "must not be empty"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, raw: str, wanted: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: raw})
    message = err.value.message
    assert message.startswith(name), message
    assert wanted in message
    assert "\n" not in message


def test_values_are_parsed_and_unset_or_empty_means_default() -> None:
    s = Settings.from_env(
        {
            "TRACKER_WS_PORT": " 9000 ",
            "TRACKER_WS_RATE_PER_SECOND": "2.5",
            "TRACKER_WS_DEV_MODE": "yes",
            "TRACKER_WS_REDIS_URL": "redis://127.0.0.1:1/0",
            "TRACKER_WS_QUEUE_LIMIT": "",
        }
    )
    assert Settings.from_env({"TRACKER_WS_REDIS_URL": "memory://"}).redis_url == "memory://"
    assert (s.port, s.rate_per_second, s.dev_mode, s.queue_limit) == (9000, 2.5, True, 1000)
    assert s.uses_redis
    assert Settings.from_env({}).port == 8090


def test_consumer_group_timing_is_read_and_checked_together() -> None:
    s = Settings.from_env(
        {
            "TRACKER_WS_KAFKA_SESSION_TIMEOUT": "10",
            "TRACKER_WS_KAFKA_HEARTBEAT_INTERVAL": "1",
            "TRACKER_WS_KAFKA_REBALANCE_TIMEOUT": "60",
            "TRACKER_WS_STANDBY_REPLICAS": "1",
        }
    )
    assert (s.kafka_session_timeout_s, s.kafka_heartbeat_interval_s) == (10.0, 1.0)
    assert (s.kafka_rebalance_timeout_s, s.standby_replicas) == (60.0, 1)
    # A heartbeat that does not fit three times into the session timeout is refused.
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"TRACKER_WS_KAFKA_HEARTBEAT_INTERVAL": "1"})  # default session 2 s
    message = err.value.message
    assert message.startswith("TRACKER_WS_KAFKA_HEARTBEAT_INTERVAL"), message
    assert "TRACKER_WS_KAFKA_SESSION_TIMEOUT" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"must be ≥ 0\.5"):
        Settings.from_env({"TRACKER_WS_KAFKA_SESSION_TIMEOUT": "0.1"})


def test_a_public_key_switches_to_asymmetric_algorithms(tmp_path: Path) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    path = tmp_path / "key.pem"
    path.write_text(pem)
    s = Settings.from_env({"TRACKER_WS_JWT_PUBLIC_KEY": str(path)})
    assert s.jwt_public_key == pem
    assert s.jwt_algorithms == ("RS256", "ES256")
    not_pem = tmp_path / "junk.txt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM"):
        Settings.from_env({"TRACKER_WS_JWT_PUBLIC_KEY": str(not_pem)})


def test_only_development_mode_accepts_the_documented_secret() -> None:
    assert Settings.from_env({}).auth_problem() is not None
    explicit_dev = {"TRACKER_WS_JWT_SECRET": DEV_JWT_SECRET}
    assert Settings.from_env(explicit_dev).auth_problem() is not None
    assert Settings.from_env({"TRACKER_WS_DEV_MODE": "1"}).auth_problem() is None
    assert Settings.from_env({"TRACKER_WS_JWT_SECRET": "a-real-secret"}).auth_problem() is None


def test_every_variable_is_listed_once_and_the_readme_table_is_generated() -> None:
    envs = [v.env for v in VARIABLES]
    assert len(envs) == len(set(envs))
    listing = describe_variables()
    assert all(env in listing for env in envs)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings:begin -->\n") + len("<!-- settings:begin -->\n")
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == describe_variables(markdown=True), (
        "README's configuration table is stale: paste `python -m tracker_ws config --markdown`"
    )


def test_secrets_are_masked_when_values_are_printed() -> None:
    shown = describe_values(Settings.from_env({"TRACKER_WS_JWT_SECRET": "hunter2-secret"}))
    assert "hunter2" not in shown
    assert "TRACKER_WS_JWT_SECRET=(set)" in shown


# ---------------------------------------------------------------- the command line


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_WS_")}
    return subprocess.run(
        [sys.executable, "-m", "tracker_ws", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_works_whatever_the_environment_holds() -> None:
    got = _cli("--help", env={"TRACKER_WS_PORT": "abc"})
    assert got.returncode == 0, got.stderr
    got = _cli("dev", "--help", env={"TRACKER_WS_PORT": "abc"})
    assert got.returncode == 0, got.stderr


@pytest.mark.parametrize(
    ("command", "env", "variable"),
    [
        (["token", "--user", "u", "--company", "c"], {"TRACKER_WS_PORT": "abc"}, "PORT"),
        (["worker"], {"TRACKER_WS_FLUSH_WINDOW_MS": "-1"}, "FLUSH_WINDOW_MS"),
        (["worker"], {"TRACKER_WS_QUEUE_LIMIT": "0"}, "QUEUE_LIMIT"),
        (["worker"], {"TRACKER_WS_PARTITIONS": "0", "TRACKER_WS_DEV_MODE": "1"}, "PARTITIONS"),
        # Point 3: no secret and no public key outside development mode.
        (["worker"], {}, "JWT_SECRET"),
        (["worker"], {"TRACKER_WS_JWT_SECRET": DEV_JWT_SECRET}, "JWT_SECRET"),
        (["dev"], {"TRACKER_WS_PORT": "abc"}, "PORT"),
        (["config", "--check"], {"TRACKER_WS_REDIS_URL": "http://x"}, "REDIS_URL"),
    ],
)
def test_a_bad_setting_stops_a_command_with_one_line_and_exit_2(
    command: list[str], env: dict[str, str], variable: str
) -> None:
    got = _cli(*command, env=env)
    assert got.returncode == 2, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1, got.stderr
    assert lines[0].startswith("tracker-ws: error: TRACKER_WS_" + variable), lines[0]
    assert "Traceback" not in got.stdout + got.stderr


def test_config_lists_every_variable_with_its_default() -> None:
    got = _cli("config", env={})
    assert got.returncode == 0, got.stderr
    for var in VARIABLES:
        assert var.env in got.stdout
        assert f"default {var.default_text()}" in got.stdout


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("redis+cluster://127.0.0.1:7000", [("127.0.0.1", 7000)]),
        ("redis+cluster://a:1,b:2,[::1]:3", [("a", 1), ("b", 2), ("::1", 3)]),
    ],
)
def test_redis_cluster_url(url: str, nodes: list[tuple[str, int]]) -> None:
    settings = Settings.from_env({"TRACKER_WS_REDIS_URL": url})
    assert settings.uses_redis and settings.uses_redis_cluster
    assert cluster_nodes(settings.redis_url) == nodes


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://host:port",
        "redis+cluster://h:1,,h:2",
        "redis+cluster://h:70000",
        "redis+cluster://h:1/0",
        "redis+cluster://user:pw@h:1",
    ],
)
def test_malformed_redis_cluster_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^TRACKER_WS_REDIS_URL") as caught:
        Settings.from_env({"TRACKER_WS_REDIS_URL": url})
    assert "redis+cluster://" in str(caught.value)  # says what a valid one looks like
