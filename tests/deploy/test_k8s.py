"""deploy/k8s: parse every manifest and check the fields the deployment relies on.

No cluster here, so the test plays the parts of the API server (kinds, required fields)
and of the controllers (selectors that must match, ports that must resolve by name).
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest
import yaml

from tests.deploy._files import DEPLOY, cli_env_names, load_yaml_docs

K8S = DEPLOY / "k8s"
GRPC_PORT = 50051
ANALYSIS_PORT = 50052
METRICS_PORT = 9464


@pytest.fixture(scope="module")
def objects() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml and the manifests on disk disagree"
    for name in sorted(listed):
        for doc in load_yaml_docs(K8S / name):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
            by_kind[doc["kind"]].append(doc)
    return by_kind


@pytest.fixture(scope="module")
def deployment(objects) -> dict:
    (dep,) = objects["Deployment"]
    return dep


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_kinds_present(objects):
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret", "ServiceMonitor",
                 "PersistentVolumeClaim"):
        assert objects[kind], kind


def test_probes_are_native_grpc_health_on_the_retriever_port(container):
    ready, live, startup = container["readinessProbe"], container["livenessProbe"], container["startupProbe"]
    for probe in (ready, live, startup):
        assert set(probe) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}
        assert probe["grpc"]["port"] == GRPC_PORT
    # readiness follows the Retriever service (NOT_SERVING with no active model or while draining)
    assert ready["grpc"]["service"] == "dprscope.v1.Retriever"
    assert live["grpc"].get("service", "") == ""
    # the startup probe covers model load + warm-up, so liveness never kills a slow start
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]


def test_ports_resources_and_security(deployment, container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "analysis": ANALYSIS_PORT, "metrics": METRICS_PORT}
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"], "without a memory limit one pod can starve its node"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["args"] == ["serve"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_config_map_is_cli_configuration_and_drain_fits_the_grace_period(objects, deployment, container, monkeypatch):
    from dprscope.cli import build_parser, settings_from_args

    (config,) = objects["ConfigMap"]
    assert any(src["configMapRef"]["name"] == config["metadata"]["name"] for src in container["envFrom"])
    data = config["data"]
    unknown = set(data) - cli_env_names() - {"DPRSCOPE_LOG_LEVEL"}
    assert not unknown, f"ConfigMap keys the CLI never reads: {sorted(unknown)}"
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    for key in [k for k in os.environ if k.startswith("DPRSCOPE_")]:
        monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = settings_from_args(build_parser().parse_args(container["args"]))
    assert settings.port == GRPC_PORT and settings.analysis_port == ANALYSIS_PORT
    assert settings.metrics_port == METRICS_PORT
    assert str(settings.index_dir) == "/var/lib/dprscope/index"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.drain_s + settings.grace_s, "kubelet would SIGKILL before in-flight requests finish"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(settings.index_dir)].get("readOnly") is True
    assert str(settings.checkpoint_root) in mounts and str(settings.reindex_dir) in mounts


def test_admin_token_comes_from_the_secret_and_is_off_by_default(objects, deployment, container, tmp_path,
                                                               monkeypatch):
    from dprscope.cli import build_parser, settings_from_args

    (secret,) = objects["Secret"]
    env = {e["name"]: e for e in container["env"]}
    token_file = env["DPRSCOPE_ADMIN_TOKEN_FILE"]["value"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    assert token_file == f"{mounts[name]['mountPath']}/token" and mounts[name]["readOnly"] is True
    assert "token" in secret["stringData"]
    # the shipped placeholder is empty: the server then disables ModelAdmin (never a known token)
    (tmp_path / "token").write_text(secret["stringData"]["token"])
    monkeypatch.delenv("DPRSCOPE_ADMIN_TOKEN", raising=False)
    args = build_parser().parse_args(["serve", "--index", "/x", "--admin-token-file", str(tmp_path / "token")])
    assert settings_from_args(args).admin_token is None


def test_services_select_the_pods_and_analysis_is_its_own_service(objects, deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = {s["metadata"]["name"]: s for s in objects["Service"]}
    assert set(services) == {"dprscope", "dprscope-analysis"}
    for service in services.values():
        assert _matches(service["spec"]["selector"], pod_labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    assert [p["port"] for p in services["dprscope-analysis"]["spec"]["ports"]] == [ANALYSIS_PORT]
    assert {p["port"] for p in services["dprscope"]["spec"]["ports"]} == {GRPC_PORT, METRICS_PORT}
    assert ANALYSIS_PORT not in {p["port"] for p in services["dprscope"]["spec"]["ports"]}


def test_pdb_and_service_monitor_point_at_real_things(objects, deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = objects["PodDisruptionBudget"]
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a PDB that never allows a drain"
    (monitor,) = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [s for s in objects["Service"] if _matches(monitor["spec"]["selector"]["matchLabels"],
                                                          s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == ["dprscope"]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_volumes_resolve(objects, deployment, container):
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claims = {c["metadata"]["name"] for c in objects["PersistentVolumeClaim"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
