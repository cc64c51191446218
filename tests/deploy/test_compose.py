"""docker-compose.yml: compose-spec schema, yamllint, and what the deployment promises."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from gateway.settings import Settings, load_settings
from tests.conftest import clear_gateway_env
from tests.deploy.conftest import ROOT, project_tool, secret_file_names, settings_env_names
from tests.deploy.helpers import COMPOSE_FILE, CV_DOCKERFILE, DOCKERFILE, compose_client, stages

STAGES = stages(DOCKERFILE.read_text())
CV_STAGES = stages(CV_DOCKERFILE.read_text())
YAMLLINT_CONFIG = ROOT / "tests" / "deploy" / "yamllint.yml"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|API_KEY|SITE_KEY|TOKEN|SECRET", re.I)


def schema_check(path) -> subprocess.CompletedProcess:
    # The compose-spec JSON schema ships inside check-jsonschema ("vendor.compose-spec").
    return subprocess.run(
        [project_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_matches_the_compose_spec_schema():
    result = schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_compose_file(tmp_path, compose):
    broken = dict(compose)
    broken["services"] = dict(compose["services"])
    broken["services"]["gateway"] = {
        **compose["services"]["gateway"],
        "depends_on": {"civicrm": {"condition": "when_ready"}},
    }
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert schema_check(path).returncode != 0


def test_yamllint_passes_on_every_deployment_yaml():
    files = [COMPOSE_FILE, *sorted((ROOT / "deploy").rglob("*.yaml"))]
    result = subprocess.run(
        [project_tool("yamllint"), "--strict", "-c", str(YAMLLINT_CONFIG), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profiles", [[], ["cv", "sandbox"]], ids=["real-civicrm", "all-profiles"])
def test_compose_client_accepts_the_file(profiles):
    """`config` with whichever Compose is installed: v1 refused the top-level `name:` (19.6)."""
    client = compose_client()
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), *flags, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_top_level_name_so_compose_v1_accepts_it(compose):
    assert "name" not in compose
    assert compose["services"]["civicrm"]["container_name"] == "${CIVICRM_CONTAINER:-civicrm-gateway-civicrm}"
    context = compose["services"]["gateway-cv"]["environment"]["CIVI_GATEWAY_CV_CONTEXT"]
    assert context.endswith(" ${CIVICRM_CONTAINER:-civicrm-gateway-civicrm}")


def test_stop_grace_outlasts_the_gateway_drain(compose):
    """Issue 19.4: Docker's default 10 s would SIGKILL calls the gateway still drains."""
    grace = Settings.model_fields["shutdown_grace"].default
    for name, service in compose["services"].items():
        if name.startswith("gateway"):
            value = service["stop_grace_period"]
            assert value.endswith("s") and float(value[:-1]) > grace, (name, value)


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
    used = {
        s if isinstance(s, str) else s["source"]
        for service in compose["services"].values()
        for s in service.get("secrets", [])
    }
    assert used == set(secrets)
    for name, spec in secrets.items():
        assert spec["file"] == f"./deploy/compose/secrets/{name}"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/compose/secrets/db_password"], cwd=ROOT, timeout=30
    )
    assert ignored.returncode == 0, "deploy/compose/secrets/* must be ignored by git"
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/compose/secrets"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout.split()
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
        "/var/www/html/private",
        "/var/www/html/public",
        "/var/www/html/ext",
    }


def test_gateway_service_uses_the_http_backend_with_client_tokens(compose):
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    assert env["CIVI_GATEWAY_BACKEND"] == "http"
    assert env["CIVI_GATEWAY_HTTP_URL"] == "http://civicrm"
    assert set(gateway["secrets"]) <= secret_file_names()
    assert {"civi_gateway_http_api_key", "civi_gateway_client_tokens"} <= set(gateway["secrets"])
    assert "target" not in gateway["build"] and STAGES[-1]["name"] == "runtime"
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert "ports" not in compose["services"]["db"]


def test_cv_profile_runs_pipe_through_docker_exec(compose):
    cv = compose["services"]["gateway-cv"]
    assert cv["profiles"] == ["cv"]
    assert cv["build"] == {
        "context": "./deploy/docker",
        "dockerfile": "cv.Dockerfile",
        "args": {"GATEWAY_IMAGE": compose["services"]["gateway"]["image"]},
    }
    assert CV_STAGES[-1]["name"] == "cv"
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
        if name not in ("gateway-cv", "civicrm-sandbox", "gateway-sandbox"):
            assert "profiles" not in service, name


def test_sandbox_profile_stays_on_loopback(compose):
    """Profile "sandbox": the emulator and a gateway on the host's network, bound to 127.0.0.1."""
    services = compose["services"]
    sandbox, gateway = services["civicrm-sandbox"], services["gateway-sandbox"]
    for service in (sandbox, gateway):
        assert service["profiles"] == ["sandbox"] and service["network_mode"] == "host"
        assert "ports" not in service and service["image"] == services["gateway"]["image"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "--host 127.0.0.1" in sandbox["entrypoint"][-1]
    assert gateway["environment"]["CIVI_GATEWAY_HOST"] == "127.0.0.1"
    assert gateway["environment"]["CIVI_GATEWAY_HTTP_URL"].startswith("http://127.0.0.1:")
    assert gateway["secrets"] == [{"source": "sandbox_api_key", "target": "civi_gateway_http_api_key"}]


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


@pytest.mark.parametrize("service", ["gateway", "gateway-cv", "gateway-sandbox"])
def test_the_gateway_accepts_the_compose_configuration(service, compose, tmp_path, monkeypatch):
    spec = compose["services"][service]
    values = {"civi_gateway_http_api_key": "k" * 40, "civi_gateway_client_tokens": TOKENS}
    targets = [s if isinstance(s, str) else s["target"] for s in spec["secrets"]]
    _materialise(tmp_path, monkeypatch, spec["environment"], {name: values[name] for name in targets})
    settings = load_settings()
    if service == "gateway-sandbox":
        assert settings.host == "127.0.0.1" and settings.client_tokens is None
    else:
        assert settings.host == "0.0.0.0" and settings.client_tokens is not None
    assert settings.backend == spec["environment"]["CIVI_GATEWAY_BACKEND"]


def test_cv_profile_runs_an_init_to_reap_children():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["gateway-cv"]["init"] is True
