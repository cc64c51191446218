"""deploy/compose/first-run.sh: the secrets it writes and how it hands the API key to CiviCRM."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import load_settings
from tests.conftest import clear_gateway_env
from tests.deploy.conftest import DEPLOY

SCRIPT = DEPLOY / "compose" / "first-run.sh"
SECRETS = (
    "db_password",
    "db_root_password",
    "civicrm_admin_password",
    "civi_gateway_http_api_key",
    "civi_gateway_client_tokens",
    "sandbox_api_key",
)


@pytest.fixture()
def tree(tmp_path):
    """A copy of the script at its place in a repository layout, and a PATH with fakes."""
    (tmp_path / "deploy" / "compose").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "deploy" / "compose" / "first-run.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return tmp_path


def run(tree: Path, *args: str, path_prefix: str = "") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{path_prefix}{tree / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    return subprocess.run(
        ["bash", str(tree / "deploy" / "compose" / "first-run.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_script_is_valid_bash_and_executable():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], timeout=30).returncode == 0
    assert SCRIPT.stat().st_mode & stat.S_IXUSR


def test_secrets_are_written_once_and_accepted_by_the_gateway(tree, monkeypatch):
    first = run(tree, "secrets", "reporting")
    assert first.returncode == 0, first.stderr
    secrets = tree / "deploy" / "compose" / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    contents = {}
    for name in SECRETS:
        path = secrets / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name  # readable by the containers' users
        contents[name] = path.read_text()
        assert len(contents[name].strip()) >= 40, name  # (43 for the random ones)
    assert contents["civi_gateway_client_tokens"].startswith("reporting:sha256:")
    assert "cgw_" in first.stderr  # the token itself, once, on the terminal
    second = run(tree, "secrets")
    assert second.returncode == 0
    assert {n: (secrets / n).read_text() for n in SECRETS} == contents  # nothing overwritten
    # the files are what the gateway reads from /run/secrets
    clear_gateway_env(monkeypatch)
    monkeypatch.chdir(tree)
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(secrets))
    settings = load_settings(backend="http", http_url="http://civicrm", host="0.0.0.0")
    assert settings.http_api_key.get_secret_value() == contents["civi_gateway_http_api_key"].strip()


FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "{log}"
if [[ "$*" == *"test -f"* ]]; then exit {installed}; fi
if [[ "$*" == *"cv ev"* ]]; then cat > "{stdin}"; fi
exit 0
"""


@pytest.mark.parametrize("installed", [True, False])
def test_civicrm_step_passes_the_key_on_stdin_only(tree, installed):
    assert run(tree, "secrets").returncode == 0
    log, stdin = tree / "docker.log", tree / "stdin"
    fake = tree / "bin" / "docker"
    fake.write_text(FAKE_DOCKER.format(log=log, stdin=stdin, installed=0 if installed else 1))
    fake.chmod(0o755)
    result = run(tree, "civicrm")
    assert result.returncode == 0, result.stderr
    key = (tree / "deploy" / "compose" / "secrets" / "civi_gateway_http_api_key").read_text()
    calls = log.read_text()
    assert stdin.read_text() == key
    assert key.strip() not in calls and key.strip() not in result.stdout
    assert ("civicrm-docker-install" in calls) is (not installed)
    assert "-u www-data civicrm cv ev" in calls
    for expected in ("'authenticate with api key'", "Role::save", "User::create", "'api_key', $key"):
        assert expected.strip("'") in calls


def test_civicrm_step_needs_the_secrets_first(tree):
    result = run(tree, "civicrm")
    assert result.returncode != 0 and "secrets" in result.stderr
