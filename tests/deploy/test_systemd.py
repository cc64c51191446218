"""The systemd unit: parsed and checked, and `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.cli.main import build_parser
from gateway.settings import is_loopback
from tests.conftest import missing_tool
from tests.deploy.conftest import DEPLOY, secret_file_names, settings_env_names

UNIT = DEPLOY / "systemd" / "civicrm-gateway.service"
EXEC = "/opt/civicrm-gateway/bin/civicrm-gateway"


def parse(text: str) -> list[tuple[str, str, str]]:
    entries, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"not a unit-file line: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


ENTRIES = parse(UNIT.read_text())


def values(section: str, key: str) -> list[str]:
    return [v for s, k, v in ENTRIES if s == section and k == key]


def environment() -> dict[str, str]:
    env = {}
    for value in values("Service", "Environment"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def test_sections_and_start_command():
    assert {s for s, _, _ in ENTRIES} == {"Unit", "Service", "Install"}
    (exec_start,) = values("Service", "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[0] == EXEC and argv[1:] == ["serve"]
    assert build_parser().parse_args(argv[1:]).command == "serve"
    assert values("Install", "WantedBy") == ["multi-user.target"]
    assert values("Unit", "After") == ["network-online.target"]


def test_runs_unprivileged_and_hardened():
    assert values("Service", "DynamicUser") == ["yes"] or values("Service", "User") not in ([], ["root"])
    for key, expected in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert values("Service", key) == [expected], key


def test_settings_and_credentials_are_gateway_settings():
    env = environment()
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    assert is_loopback(env["CIVI_GATEWAY_HOST"])  # nginx is the front
    assert env["CIVI_GATEWAY_SECRETS_DIR"] == "%d"  # the credentials directory
    names = {v.split(":", 1)[0] for v in values("Service", "LoadCredential")}
    assert names and names <= secret_file_names(), names - secret_file_names()
    assert "civi_gateway_client_tokens" in names


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_tool("systemd-analyze is not installed (Debian package systemd)")
    # verify needs the command to exist: point it at this environment's civicrm-gateway
    local = Path(sys.executable).parent / "civicrm-gateway"
    if not local.is_file():
        missing_tool("civicrm-gateway is not installed next to this Python (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXEC, str(local)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "Failed to connect to bus" not in line
    )  # containers have no system bus
    assert result.returncode == 0 and not output.strip(), output


def test_verify_would_catch_a_bad_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_tool("systemd-analyze is not installed (Debian package systemd)")
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nProtectSystem=bogus\n")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "bogus" in result.stdout + result.stderr
