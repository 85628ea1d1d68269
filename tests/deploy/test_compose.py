"""deploy/compose.yaml and what it mounts: services, ports, volumes, scrape config, Grafana.

Compose cannot run here, so the test follows every reference the file makes (build
context, Dockerfile, bind-mounted config directories, scrape target, datasource uid) and
checks that the other end exists and agrees.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy._files import DEPLOY, REPO, env_of, parse_dockerfile, stages


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return env_of(stages(parse_dockerfile(DEPLOY / "docker" / "Dockerfile.cpu"))[-1])


def _published(service: dict) -> dict[int, int]:
    out = {}
    for spec in service["ports"]:
        host, _, container = str(spec).rpartition(":")
        out[int(container)] = int(host)
    return out


def test_services_and_build(compose):
    assert {"dprscope", "prometheus", "grafana"} <= set(compose["services"])
    build = compose["services"]["dprscope"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()
    assert compose["services"]["dprscope"]["command"] == ["serve"]


def test_dprscope_ports_volumes_and_secret(compose, image_env):
    svc = compose["services"]["dprscope"]
    ports = _published(svc)
    for key in ("DPRSCOPE_PORT", "DPRSCOPE_ANALYSIS_PORT", "DPRSCOPE_METRICS_PORT"):
        assert int(image_env[key]) in ports, key
    targets = {}
    for volume in svc["volumes"]:
        if isinstance(volume, str):
            _, _, target = volume.partition(":")
            targets[target] = volume
        else:
            targets[volume["target"]] = volume
    index = targets[image_env["DPRSCOPE_INDEX"]]
    assert index["read_only"] is True, "serving never writes the index directory"
    assert image_env["DPRSCOPE_CHECKPOINT_ROOT"] in targets
    assert image_env["DPRSCOPE_REINDEX_DIR"] in targets
    # named volumes are declared at the top level
    for spec in svc["volumes"]:
        if isinstance(spec, str) and not spec.startswith((".", "/", "$")):
            assert spec.split(":")[0] in compose["volumes"]
    assert svc["environment"]["DPRSCOPE_ADMIN_TOKEN_FILE"] == "/run/secrets/admin_token"
    assert "admin_token" in svc["secrets"] and "admin_token" in compose["secrets"]
    assert svc["healthcheck"]["test"][-1] == "/usr/local/bin/dprscope-healthcheck"
    grace = float(svc["environment"]["DPRSCOPE_DRAIN_SECONDS"]) + float(svc["environment"]["DPRSCOPE_GRACE_SECONDS"])
    assert int(svc["stop_grace_period"].rstrip("s")) > grace, "docker would SIGKILL before the drain ends"


def test_prometheus_scrapes_dprscope_and_loads_the_rules(compose, image_env):
    svc = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"] if isinstance(v, str)}
    config_dir = (DEPLOY / mounts["/etc/prometheus"]).resolve()
    assert config_dir == DEPLOY / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in svc["command"]
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (config_dir / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["dprscope"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"dprscope:{image_env['DPRSCOPE_METRICS_PORT']}"]
    assert "dprscope" in compose["services"]


def test_grafana_provisions_the_datasource_and_dashboard(compose):
    svc = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in svc["volumes"]
              if isinstance(v, str) and v.startswith("./")}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    prom = next(d for d in datasources if d["type"] == "prometheus")
    assert prom["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    providers = yaml.safe_load((provisioning / "dashboards" / "dprscope.yaml").read_text())["providers"]
    dashboards_path = providers[0]["options"]["path"]
    assert mounts[dashboards_path] == DEPLOY / "grafana" / "dashboards"
    dashboard = json.loads((mounts[dashboards_path] / "dprscope.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {prom["uid"]}
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_path}/dprscope.json"
