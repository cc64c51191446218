"""docker-compose.yml: compose-spec schema, yamllint, and what the deployment promises."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from gateway.settings import load_settings
from tests.conftest import clear_gateway_env

from .conftest import ROOT, project_tool, secret_file_names, settings_env_names
from .test_dockerfile import STAGES

COMPOSE_FILE = ROOT / "docker-compose.yml"
YAMLLINT_CONFIG = ROOT / "tests" / "deploy" / "yamllint.yml"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|API_KEY|SITE_KEY|TOKEN|SECRET", re.I)


def schema_check(path) -> subprocess.CompletedProcess:
    # The compose-spec JSON schema ships inside check-jsonschema ("vendor.compose-spec").
    return subprocess.run([project_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec_schema():
    result = schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_compose_file(tmp_path, compose):
    broken = dict(compose)
    broken["services"] = dict(compose["services"])
    broken["services"]["gateway"] = {**compose["services"]["gateway"],
                                     "depends_on": {"civicrm": {"condition": "when_ready"}}}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert schema_check(path).returncode != 0


def test_yamllint_passes_on_every_deployment_yaml():
    files = [COMPOSE_FILE, *sorted((ROOT / "deploy").rglob("*.yaml"))]
    result = subprocess.run([project_tool("yamllint"), "--strict", "-c", str(YAMLLINT_CONFIG),
                             *map(str, files)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_when_a_compose_client_is_installed(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                         timeout=30).returncode != 0:
        pytest.skip("no `docker compose` client here; the schema test above covers the file")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "--profile", "cv", "config",
                             "--quiet", "--no-interpolate"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_no_secret_in_environment_literals(compose):
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if SECRET_WORDS.search(key):
                # only pointers to secret files, never a value
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
        text = yaml.safe_dump(service)
        assert not re.search(r"(?i)(password|api_key)\s*[:=]\s*['\"]?[A-Za-z0-9]{8,}", text), name


def test_secrets_are_files_under_the_git_ignored_directory(compose):
    secrets = compose["secrets"]
    used = {s if isinstance(s, str) else s["source"]
            for service in compose["services"].values() for s in service.get("secrets", [])}
    assert used == set(secrets)
    for name, spec in secrets.items():
        assert spec["file"] == f"./deploy/compose/secrets/{name}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/secrets/db_password"],
                             cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, "deploy/compose/secrets/* must be ignored by git"
    tracked = subprocess.run(["git", "ls-files", "deploy/compose/secrets"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30).stdout.split()
    assert set(tracked) <= {"deploy/compose/secrets/.gitignore"}


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services
            assert spec["condition"] == "service_healthy", (name, dependency)
    assert "db" in services["civicrm"]["depends_on"]
    assert "civicrm" in services["gateway"]["depends_on"]
    for name in ("gateway", "gateway-cv"):
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])


def test_state_lives_in_named_volumes(compose):
    declared = set(compose["volumes"])
    mounted = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/"):
                # the only bind mount is the docker socket, in the cv profile
                assert name == "gateway-cv" and source == "/var/run/docker.sock", (name, volume)
            else:
                assert source in declared, (name, volume)
                mounted.add(source)
    assert mounted == declared
    assert any(v.endswith(":/var/lib/mysql") for v in compose["services"]["db"]["volumes"])
    assert {v.split(":")[1] for v in compose["services"]["civicrm"]["volumes"]} == {
        "/var/www/html/private", "/var/www/html/public", "/var/www/html/ext"}


def test_gateway_service_uses_the_http_backend_with_client_tokens(compose):
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    assert env["CIVI_GATEWAY_BACKEND"] == "http"
    assert env["CIVI_GATEWAY_HTTP_URL"] == "http://civicrm"
    assert set(gateway["secrets"]) <= secret_file_names()
    assert {"civi_gateway_http_api_key", "civi_gateway_client_tokens"} <= set(gateway["secrets"])
    assert gateway["build"]["target"] in {s["name"] for s in STAGES}
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert "ports" not in compose["services"]["db"]


def test_cv_profile_runs_pipe_through_docker_exec(compose):
    cv = compose["services"]["gateway-cv"]
    assert cv["profiles"] == ["cv"]
    assert cv["build"]["target"] == "cv" and "cv" in {s["name"] for s in STAGES}
    env = cv["environment"]
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    assert env["CIVI_GATEWAY_BACKEND"] in ("cv", "pipe")
    context = env["CIVI_GATEWAY_CV_CONTEXT"].split()
    assert context[:3] == ["docker", "exec", "-i"] and "www-data" in context
    assert "/var/run/docker.sock:/var/run/docker.sock" in cv["volumes"]
    assert cv["group_add"], "the socket's group must be added for the non-root user"
    # the trade-off is stated where the service is defined
    text = COMPOSE_FILE.read_text()
    assert re.search(r"docker socket.*root on the host", text, re.I | re.S)
    for name, service in compose["services"].items():
        if name != "gateway-cv":
            assert "profiles" not in service, name


def _materialise(tmp_path, monkeypatch, env: dict, secrets: dict) -> None:
    clear_gateway_env(monkeypatch)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value + "\n")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(secrets_dir))
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))


TOKENS = "app:sha256:" + "ab" * 32


@pytest.mark.parametrize("service", ["gateway", "gateway-cv"])
def test_the_gateway_accepts_the_compose_configuration(service, compose, tmp_path, monkeypatch):
    spec = compose["services"][service]
    values = {"civi_gateway_http_api_key": "k" * 40, "civi_gateway_client_tokens": TOKENS}
    _materialise(tmp_path, monkeypatch, spec["environment"],
                 {name: values[name] for name in spec["secrets"]})
    settings = load_settings()
    assert settings.host == "0.0.0.0"
    assert settings.client_tokens is not None
    assert settings.backend == spec["environment"]["CIVI_GATEWAY_BACKEND"]


def test_cv_profile_runs_an_init_to_reap_children():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["gateway-cv"]["init"] is True
