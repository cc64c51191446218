"""The document as non-Python tools take it (npm packages pinned in tests/openapi/node):
Redocly CLI (recommended rules) and Spectral (spectral:oas) find no error; openapi-typescript
types, strictly typechecked, drive a Node program (openapi-fetch) that lists, creates, updates,
reads back and deletes a contact on a live gateway and reads a problem+json; orval and
@hey-api/openapi-ts generate their clients without error."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.openapi.conftest import CLIENT_TOKEN, fetch_document

pytestmark = pytest.mark.slow
NODE_DIR = Path(__file__).parent / "node"
BIN = NODE_DIR / "node_modules" / ".bin"
# No telemetry nor update checks: the tools run offline but for the gateway on loopback.
QUIET = {
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "NO_UPDATE_NOTIFIER": "1",
    "DO_NOT_TRACK": "1",
}


def run(
    argv: list[str], *, cwd: Path = NODE_DIR, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **QUIET, **(env or {})},
    )


@pytest.fixture(scope="session")
def node_tools() -> Path:
    """``npm ci`` once (again only when package-lock.json changed); the tools' bin folder."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (tests/install-system-packages.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Node.js: {reason}")
        pytest.skip(reason)
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".civicrm-gateway-lock"
    if not stamp.is_file() or stamp.read_text() != lock:
        result = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
        stamp.write_text(lock)
    return BIN


@pytest.fixture(scope="module")
def documents(served, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("documents")
    found = {}
    for name, path in (
        ("full", "/openapi.json"),
        ("contact", "/openapi/Contact.json"),
        ("generic", "/openapi/generic.json"),
    ):
        found[name] = folder / f"{name}.json"
        found[name].write_bytes(fetch_document(served, path))
    return found


@pytest.mark.parametrize("which", ["full", "contact", "generic"])
def test_redocly_recommended_rules_find_no_error(node_tools, documents, which):
    result = run(
        [
            str(node_tools / "redocly"),
            "lint",
            "--config",
            "redocly.yaml",
            "--format",
            "json",
            str(documents[which]),
        ]
    )
    report = json.loads(result.stdout[result.stdout.index("{") :])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [] and report["totals"]["errors"] == 0, errors[:5]
    # The warnings left are the ones docs/openapi.md lists and justifies.
    rules = {p["ruleId"] for p in report["problems"]}
    assert rules <= {"operation-4xx-response", "no-unused-components"}, rules


@pytest.mark.parametrize("which", ["full", "contact", "generic"])
def test_spectral_oas_rules_find_no_error(node_tools, documents, which):
    result = run(
        [
            str(node_tools / "spectral"),
            "lint",
            "--ruleset",
            "spectral.yaml",
            "--format",
            "json",
            "--quiet",
            str(documents[which]),
        ]
    )
    found: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    errors = [f"{'.'.join(map(str, p['path']))}: {p['message']}" for p in found if p["severity"] == 0]
    assert errors == [] and result.returncode == 0, errors[:5] or result.stderr
    assert {p["code"] for p in found} <= {"info-contact", "oas3-unused-component"}, found[:5]


def test_typescript_client_runs_against_the_gateway(node_tools, documents, served):
    client = NODE_DIR / "client"
    generated = client / "generated"
    generated.mkdir(exist_ok=True)
    result = run(
        [str(node_tools / "openapi-typescript"), str(documents["full"]), "-o", str(generated / "gateway.ts")]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([str(node_tools / "tsc"), "-p", str(client / "tsconfig.json")])
    assert result.returncode == 0, result.stdout + result.stderr  # strict typecheck
    result = run(
        ["node", str(client / "out" / "flow.js")],
        env={"GATEWAY_URL": served.url, "GATEWAY_TOKEN": CLIENT_TOKEN},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    assert len(seen["listed"]) == 3 and set(seen["listed"]) == {"Garcia"}
    assert seen["created"]["first_name"] == "Grace" and seen["created"]["id"] > 2
    assert seen["updated"] == 1 and seen["deleted"] == 1 and seen["gone"] == 0
    assert seen["read"] == {
        "display_name": "Grace Hopper",
        "job_title": "Rear Admiral",
        "label_key": True,
        "count": "1",
    }
    assert seen["problem"] == {
        "status": 404,
        "content_type": "application/problem+json",
        "type": "/problems/unknown-api",
    }


def test_orval_and_hey_api_generate_clients(node_tools, documents, tmp_path):
    result = run(
        [
            str(node_tools / "orval"),
            "--input",
            str(documents["full"]),
            "--output",
            str(tmp_path / "orval" / "gateway.ts"),
            "--client",
            "fetch",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    orval = (tmp_path / "orval" / "gateway.ts").read_text()
    assert "contactCreate" in orval and "v4CallQuery" in orval
    result = run(
        [
            str(node_tools / "openapi-ts"),
            "--input",
            str(documents["full"]),
            "--output",
            str(tmp_path / "hey-api"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sdk = (tmp_path / "hey-api" / "sdk.gen.ts").read_text()
    assert "contactCreate" in sdk and "v4CallQuery" in sdk
