"""Kubernetes manifests: kubernetes-validate (bundled schemas, offline) and the promises made."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gateway.settings import is_loopback, load_settings
from tests.conftest import clear_gateway_env
from tests.deploy.conftest import (
    K8S,
    K8S_VERSION,
    load_yaml_docs,
    project_tool,
    secret_file_names,
    settings_env_names,
)

MANIFESTS = sorted(K8S.glob("*.yaml"))
DOCS = {doc["kind"]: doc for path in MANIFESTS for doc in load_yaml_docs(path)}


def validate(*paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            project_tool("kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            K8S_VERSION,
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_manifests_are_valid_for_the_stated_kubernetes_version():
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "NetworkPolicy"} <= set(DOCS)
    result = validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_rejects_a_broken_manifest(tmp_path):
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    deployment["spec"]["replicaz"] = 2
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert validate(path).returncode != 0


def container() -> dict:
    containers = DOCS["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in container()["env"]}


def test_probes_use_the_health_endpoints_on_the_served_port():
    c = container()
    port = c["ports"][0]
    assert port["name"] == "http" and str(port["containerPort"]) == env()["CIVI_GATEWAY_PORT"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # the readiness check calls CiviCRM: give it longer than the liveness check
    assert c["readinessProbe"]["timeoutSeconds"] > c["livenessProbe"]["timeoutSeconds"]


def test_security_context_non_root_read_only():
    pod = DOCS["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert pod["automountServiceAccountToken"] is False
    sc = container()["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # writable scratch with a read-only root
    secret_volume = volumes[mounts["/run/secrets"]["name"]]
    assert mounts["/run/secrets"]["readOnly"] is True
    assert secret_volume["secret"]["secretName"] == DOCS["Secret"]["metadata"]["name"]


def test_resources_requested_and_limited():
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])  # the HPA needs the cpu request
    assert "memory" in resources["limits"]


def test_environment_and_secret_keys_are_gateway_settings():
    assert set(env()) <= settings_env_names(), set(env()) - settings_env_names()
    keys = set(DOCS["Secret"]["stringData"])
    assert keys <= secret_file_names(), keys - secret_file_names()
    assert "civi_gateway_client_tokens" in keys
    text = (K8S / "secret.yaml").read_text()
    assert "civi_gateway_rate_limit_storage" in text and "redis://" in text


def test_the_gateway_accepts_the_deployment_configuration(tmp_path, monkeypatch):
    clear_gateway_env(monkeypatch)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "civi_gateway_http_api_key").write_text("k" * 40)
    (secrets / "civi_gateway_client_tokens").write_text("app:sha256:" + "cd" * 32)
    monkeypatch.chdir(tmp_path)
    for key, value in env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert not is_loopback(settings.host) and settings.client_tokens is not None


def test_service_hpa_and_budget_select_the_deployment():
    labels = DOCS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert DOCS["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = DOCS["Service"]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    hpa = DOCS["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": DOCS["Deployment"]["metadata"]["name"],
    }
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert DOCS["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policy_admits_only_in_cluster_callers_on_the_gateway_port():
    policy = DOCS["NetworkPolicy"]["spec"]
    labels = DOCS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Ingress" in policy["policyTypes"]
    assert policy["ingress"], "an empty ingress list would refuse everyone"
    for rule in policy["ingress"]:
        assert rule["from"], "a rule without 'from' admits any source, outside the cluster too"
        for peer in rule["from"]:
            assert "ipBlock" not in peer and ({"namespaceSelector", "podSelector"} & set(peer))
        assert [p["port"] for p in rule["ports"]] == [container()["ports"][0]["containerPort"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_real_secret_in_manifests(path):
    for doc in load_yaml_docs(path):
        for value in (doc.get("stringData") or {}).values():
            assert "REPLACE" in value, f"{path.name}: placeholder expected"
        assert "data" not in doc or doc["kind"] != "Secret"
