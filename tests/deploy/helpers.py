"""Helpers shared by the deployment tests and tests/docker (no tests here): the Dockerfiles
parsed into stages, and the Compose client."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CV_DOCKERFILE = ROOT / "deploy" / "docker" / "cv.Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    return result


def stages(text: str) -> list[dict]:
    """One dict per build stage: its name, base and instructions."""
    found: list[dict] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            found.append({"base": parts[0], "name": name, "body": []})
        elif found:
            found[-1]["body"].append((keyword, args))
    return found


def compose_client() -> list[str]:
    """Compose v2 (`docker compose`) when installed, else v1 (`docker-compose`, Debian's 1.29).
    tests/install-system-packages.sh installs one: missing fails under CI."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0
    ):
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    message = "no Compose client (docker compose or docker-compose): bash tests/install-system-packages.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
