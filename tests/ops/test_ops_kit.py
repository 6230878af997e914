"""The operator's kit in docker/: alert rules that promtool accepts and whose unit tests pass,
every alert with a severity and a runbook section, a Grafana dashboard whose every PromQL
expression names only metrics the service exports, and a compose file that docker-compose
accepts. The tools come from Debian (`prometheus` for promtool, `docker-compose`, `haproxy`);
`make test` installs them when it can (Makefile `ops-tools`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracker_ws.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "tracker-ws.json"
RUNBOOK = ROOT / "docs" / "runbook.md"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: apt-get install {package} (make ops-tools)")
    return path


def run(argv: list[str], cwd: Path = DOCKER, **env: str) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DOCKER / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# ------------------------------------------------------------------------------ alerts


def test_promtool_checks_the_rules() -> None:
    out = run([tool("promtool", "prometheus"), "check", "rules", "alerts.yml"])
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = run([tool("promtool", "prometheus"), "test", "rules", "alerts-test.yml"])
    assert "SUCCESS" in out


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((DOCKER / "alerts-test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    anchors = {
        "#" + line[3:].strip().lower()
        for line in RUNBOOK.read_text().splitlines()
        if line[:3] == "## "
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        link = rule["annotations"]["runbook"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]
        assert link.removeprefix("docs/runbook.md") in anchors, rule["alert"]


def test_the_seed_alerts_are_kept() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {"TooManyConnections", "HighMessageLatency"} <= names
    assert {"TrackerWsInstanceDown", "TrackerWsConsumerLagHigh"} <= names
    assert {"TrackerWsPartitionsStalled"} <= names


# ------------------------------------------------------------------------------ dashboard

# PromQL words that are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: strings, label matchers, ranges and the label
    lists of by/without/on go first; then every identifier that is not a function call or
    a keyword is a metric name."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        word = m.group()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # the exponent of 1e9
        names.add(word)
    return names


def exported_names() -> set[str]:
    """Every series name /metrics can carry (one Metrics, as each instance builds it), plus
    Prometheus's own `up`."""
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics("ws-1")
    m.watch_state(lambda: True, lambda: True, lambda: 0)
    m.set_consumer_lag([("gps-events", 0, 0)])
    names = {"up"}
    for family in text_string_to_metric_families(m.render().decode()):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    exprs: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for var in board["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
        assert inner, query
        exprs.append((f"${var['name']}", inner.group(1)))
    return exprs


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, message_type) (rate(a_bucket{x="y}"}[5m])))'
        " / on (instance) group_left b + 1e9 * c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_every_dashboard_expression_names_only_exported_metrics() -> None:
    exported = exported_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    unknown = {(title, name) for title, e in exprs for name in metric_names(e) - exported}
    assert not unknown


def test_the_dashboard_covers_what_operators_watch() -> None:
    used = {name for _, e in dashboard_exprs() for name in metric_names(e)}
    assert {
        "ws_active_connections",
        "ws_messages_received_total",
        "ws_messages_sent_total",
        "ws_message_delivery_duration_seconds_bucket",
        "ws_consumer_lag",
        "ws_slow_consumer_closes_total",
        "ws_recoveries_total",
        "ws_errors_total",
    } <= used
    quantiles = {
        q
        for _, e in dashboard_exprs()
        if "ws_message_delivery_duration_seconds_bucket" in e
        for q in re.findall(r"histogram_quantile\((0\.\d+)", e)
    }
    assert quantiles == {"0.5", "0.95", "0.99"}


# ------------------------------------------------------------------------------ compose


def test_compose_file_is_valid() -> None:
    out = run(
        [tool("docker-compose", "docker-compose"), "-f", "docker-compose.yml", "config"],
        TRACKER_WS_JWT_SECRET="ci",
    )
    config = yaml.safe_load(out)
    services = config["services"]
    assert {"kafka", "redis", "ws-1", "ws-2", "ws-3", "lb", "prometheus", "grafana"} <= set(
        services
    )
    for name in ("ws-1", "ws-2", "ws-3"):
        ws = services[name]
        assert ws["restart"] == "unless-stopped"
        assert ws["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert ws["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ports" not in ws  # reached through the load balancer only
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["redis"]
    assert [p["published"] for p in services["lb"]["ports"]] in (["8090"], [8090])


def test_load_balancer_config_is_valid_and_health_checked() -> None:
    text = (DOCKER / "haproxy.cfg").read_text()
    assert "option httpchk GET /health" in text
    assert "timeout tunnel" in text
    # haproxy -c resolves the server names: give it an /etc/hosts-free copy on loopback.
    haproxy = tool("haproxy", "haproxy")
    checked = DOCKER / "haproxy.cfg"
    local = checked.read_text().replace("resolvers docker init-addr last,libc,none", "")
    local = re.sub(r"(server ws-\d) ws-\d:8090", r"\1 127.0.0.1:8090", local)
    local = local.replace("  nameserver dns 127.0.0.11:53\n", "  nameserver dns 127.0.0.1:53\n")
    tmp = ROOT / ".dev" / "haproxy-check.cfg"
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_text(local)
    run([haproxy, "-c", "-f", str(tmp)])


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/tracker-ws.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = source["datasources"][0]["uid"]
    board = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p} == {uid}
