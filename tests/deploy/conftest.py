"""Helpers for the deployment-file checks: paths, the project's lint tools, settings names."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from gateway.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"  # the Kubernetes version the manifests are validated against

# Names the gateway reads that are not Settings fields.
EXTRA_ENV = {f"{ENV_PREFIX}SECRETS_DIR"}


def settings_env_names() -> set[str]:
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | EXTRA_ENV


def secret_file_names() -> set[str]:
    """File names the gateway reads from its secrets directory: lower-cased env names."""
    return {f"{ENV_PREFIX}{name}".lower() for name in Settings.model_fields}


def project_tool(name: str) -> str:
    """A tool from the `test` extra: next to this Python first, then on PATH; missing = failure."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())
