"""docs/deploy.md: a section per target, and only settings the gateway has."""

from __future__ import annotations

import re

from tests.deploy.conftest import ROOT, settings_env_names

DOC = (ROOT / "docs" / "deploy.md").read_text()


def test_a_section_per_target():
    headings = re.findall(r"^## (.+)$", DOC, re.M)
    for target in ("Container image", "Docker Compose", "Kubernetes", "systemd", "nginx"):
        assert any(h.startswith(target) for h in headings), target


def test_every_documented_setting_exists():
    names = set(re.findall(r"\bCIVI_GATEWAY_[A-Z0-9_]+\b", DOC))
    assert names and names <= settings_env_names(), names - settings_env_names()


def test_docker_socket_trade_off_is_stated():
    assert re.search(r"Docker\s+socket is root on the host", DOC)


def test_documented_paths_exist():
    for path in set(re.findall(r"`((?:deploy|docs|tests/deploy)/[\w./-]+)`", DOC)):
        if path.startswith("deploy/compose/secrets/"):  # written by first-run.sh
            path = "deploy/compose/secrets"
        assert (ROOT / path.rstrip("/")).exists(), path
