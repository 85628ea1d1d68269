"""Alerts, dashboard and the live /metrics, checked against what the server really exposes.

A rule or panel naming a metric that does not exist stays silent forever, which is worse
than no rule; so every ``dprscope_*`` series (and every label a selector filters on) must
be in the exposition of a fresh ``Metrics``. Prometheus's own ``promtool`` then checks the
rules, the config and a live scrape (skipped without promtool, unless CI sets
``DPRSCOPE_REQUIRE_PROMTOOL=1``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from dprscope_client import RetrieverError
from tests.deploy._files import DEPLOY, METRIC_NAME, exposed_sample_names

ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dprscope.json"
SELECTOR = re.compile(r"\b(dprscope_[a-z0-9_]+)\{([^}]*)\}")
LABEL_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
PROMQL_LABELS = {"instance", "job"}  # added by Prometheus at scrape time


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def _check_references(exprs: list[str], where: str) -> int:
    exposed = exposed_sample_names()
    checked = 0
    for expr in exprs:
        for name in METRIC_NAME.findall(expr):
            assert name in exposed, f"{where}: {name} is not exposed by dprscope.metrics (in: {expr.strip()[:80]})"
            checked += 1
        for name, matchers in SELECTOR.findall(expr):
            for label in LABEL_MATCHER.findall(matchers):
                assert label in exposed[name] | PROMQL_LABELS, f"{where}: {name} has no label {label!r}"
    return checked


def test_alert_rules_cover_the_failure_modes_and_reference_real_metrics():
    rules = _alert_rules()
    names = {r["alert"] for r in rules}
    for required in ("DprscopeHighErrorRate", "DprscopeSearchP99High", "DprscopeEncodeQueueSaturated",
                     "DprscopeSwapFailed", "DprscopeStaleIndex"):
        assert required in names
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "warn", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert _check_references([r["expr"] for r in rules], "alerts.yaml") >= 10
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    for rule in rules:
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']} filters on job {job!r}, which nothing scrapes"


def test_label_values_the_alerts_filter_on_are_ones_the_code_emits():
    """``result="failed"`` only fires if the swap code really records that value."""
    swap_code = (DEPLOY.parent / "services" / "dprscope" / "models" / "swap.py").read_text()
    assert re.search(r'swaps\.labels\([^)]*"failed"\)', swap_code)
    assert re.search(r'checkpoint_loads\.labels\([^)]*"failed"\)', swap_code)
    assert '"RESOURCE_EXHAUSTED"' in ALERTS.read_text()


def test_dashboard_panels_reference_real_metrics_and_cover_the_brief():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "duplicate panel ids"
    for panel in panels:
        assert panel["targets"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("qps", "p50 / p99", "stage", "batch size", "queue depth", "errors by code", "active model version",
                  "swaps", "re-index progress", "analysis jobs"):
        assert topic in titles, topic
    assert _check_references(_dashboard_exprs(), "dprscope.json") >= 20


def _promtool() -> str | None:
    path = shutil.which("promtool")
    if path is None and os.environ.get("DPRSCOPE_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is required (DPRSCOPE_REQUIRE_PROMTOOL=1) but not on PATH; "
                    "apt-get install prometheus")
    if path is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus'); CI requires it")
    return path


def test_promtool_accepts_rules_and_config():
    promtool = _promtool()
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(PROMETHEUS_CONFIG)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_live_metrics_exposition(server, client):
    """A real Prometheus must accept what a running server exposes (names, types, help)."""
    promtool = _promtool()
    client.search("who discovered penicillin", top_k=3)
    client.batch_search(["what is the boiling point of water", "who wrote war and peace"], top_k=2)
    with pytest.raises(RetrieverError):
        client.search("", top_k=3)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read()
    assert b"dprscope_requests_total" in body
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
