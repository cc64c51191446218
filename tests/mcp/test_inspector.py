"""The MCP Inspector's CLI (``@modelcontextprotocol/inspector --cli``, pinned in tests/mcp/node,
installed with ``npm ci`` as the OpenAPI tests install theirs) against a real gateway's ``/mcp``
on the sandbox: it lists the tools of the token's policy and calls ``get_records``; a wrong token
is the gateway's 401 problem in its error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.mcp.session import sandbox_gateway

pytestmark = pytest.mark.slow
NODE_DIR = Path(__file__).parent / "node"
TOKENS = {
    "admin": "cgw_inspect-admin-9a8b7c6d5e4f3a2b1c0d",
    "narrow": "cgw_inspect-narrow-1b2c3d4e5f6a7b8c9d0e",
}
POLICIES = {
    "admin": 'allow = ["*"]',
    "narrow": 'allow = ["v4:Contact.get"]\nread_only = true\nfields = {Contact = ["id", "display_name"]}',
}
READ_TOOLS = {"list_entities", "describe_entity", "get_records", "count_records"}
WRITE_TOOLS = {"create_record", "update_records", "delete_records"}


@pytest.fixture(scope="session")
def inspector() -> Path:
    """``npm ci`` in tests/mcp/node once (again only when its lock changed); the CLI's path."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (tests/install-system-packages.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Node.js: {reason}")
        pytest.skip(reason)
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".civicrm-gateway-lock"
    if not stamp.is_file() or stamp.read_text() != lock:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        stamp.write_text(lock)
    return NODE_DIR / "node_modules" / ".bin" / "mcp-inspector"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    clients = {n: (TOKENS[n], p) for n, p in POLICIES.items()}
    with sandbox_gateway(tmp_path_factory.mktemp("inspector"), clients) as process:
        yield process


def inspect(inspector: Path, home: Path, url: str, token: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the Inspector's CLI on ``url``/mcp with ``token``: exit status, the JSON it prints (an
    answer on stdout, or an error on stderr). Its home (catalogue, stored credentials) is
    ``home``, and it never asks for a login."""
    result = subprocess.run(
        [
            str(inspector),
            "--cli",
            f"{url}/mcp",
            "--stored-auth-only",
            "--header",
            f"Authorization: Bearer {token}",
            *args,
        ],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "HOME": str(home),
            "MCP_CATALOG_PATH": str(home / "catalog.json"),
            "DO_NOT_TRACK": "1",
            "NO_UPDATE_NOTIFIER": "1",
        },
    )
    printed = result.stdout if result.returncode == 0 else result.stderr
    try:
        return result.returncode, json.loads(printed)
    except json.JSONDecodeError:
        raise AssertionError(f"exit {result.returncode}: {result.stdout}{result.stderr}") from None


def test_the_inspector_lists_the_tools_of_each_policy(
    inspector: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    listed = {}
    for client in TOKENS:
        status, output = inspect(inspector, tmp_path, gateway.url, TOKENS[client], "--method", "tools/list")
        assert status == 0, output
        listed[client] = {tool["name"]: tool for tool in output["tools"]}
    assert set(listed["narrow"]) == READ_TOOLS
    assert set(listed["admin"]) == READ_TOOLS | WRITE_TOOLS
    get = listed["narrow"]["get_records"]
    assert get["inputSchema"]["properties"]["entity"]["enum"] == ["Contact"]
    assert get["annotations"]["readOnlyHint"] is True
    assert listed["admin"]["delete_records"]["annotations"]["destructiveHint"] is True


def test_the_inspector_calls_get_records(inspector: Path, gateway: GatewayProcess, tmp_path: Path) -> None:
    params = {"select": ["id", "display_name"], "limit": 3, "orderBy": {"id": "ASC"}}
    status, output = inspect(
        inspector,
        tmp_path,
        gateway.url,
        TOKENS["narrow"],
        *("--method", "tools/call", "--tool-name", "get_records", "--tool-arg", "entity=Contact"),
        *(f"{name}={json.dumps(value)}" for name, value in params.items()),
    )
    assert status == 0 and output["isError"] is False, output
    expected = httpx.post(
        f"{gateway.url}/v4/Contact/get",
        json=params,
        headers={"Authorization": f"Bearer {TOKENS['narrow']}"},
        timeout=60,
    )
    assert output["structuredContent"]["records"] == expected.json()
    assert output["structuredContent"]["count"] == 3
    assert output["content"][0]["text"].startswith("3 Contact record(s)")


def test_a_wrong_token_is_the_gateways_401(inspector: Path, gateway: GatewayProcess, tmp_path: Path) -> None:
    status, output = inspect(
        inspector, tmp_path, gateway.url, "cgw_inspect-wrong-000000000000000000", "--method", "tools/list"
    )
    assert status != 0 and output["error"]["code"] == "auth_required", output
    said = output["error"]["message"]
    assert "/problems/unauthenticated" in said and "The bearer token is not valid." in said


def test_the_inspector_sees_a_refusal_as_a_tool_error(
    inspector: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    """A field outside the narrow policy is a tool error, which the Inspector's CLI reports as
    such (not as an answer that breaks the tool's output schema: errors carry the problem in
    their text, without structured content)."""
    status, output = inspect(
        inspector,
        tmp_path,
        gateway.url,
        TOKENS["narrow"],
        *("--method", "tools/call", "--tool-name", "get_records", "--tool-arg", "entity=Contact"),
        f"select={json.dumps(['id', 'birth_date'])}",
    )
    assert status != 0 and output["error"]["code"] == "tool_is_error", output
