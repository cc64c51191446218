"""``civicrm-gateway mcp`` (the stdio bridge) as a subprocess, driven by the MCP SDK's own stdio
client, forwarding to a real uvicorn gateway on the sandbox: the tools of the token's policy,
records, refusals as tool errors, and clear errors for a refused token or an absent gateway.
The bridge gets no CIVI_GATEWAY_* environment: the URL and the token file are all it needs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from mcp.types import ErrorData

from tests.conftest import GatewayProcess, free_port
from tests.mcp.session import ok, refused, sandbox_gateway, tools_of

pytestmark = pytest.mark.slow

TOKENS = {
    "admin": "cgw_bridge-admin-0f1e2d3c4b5a69788796",
    "narrow": "cgw_bridge-narrow-a5b4c3d2e1f0a9b8c7d6",
}
POLICIES = {
    "admin": 'allow = ["*"]',
    "narrow": 'allow = ["v4:Contact.get"]\nread_only = true\nfields = {Contact = ["id", "display_name"]}',
}
READ_TOOLS = {"list_entities", "describe_entity", "get_records", "count_records"}
WRITE_TOOLS = {"create_record", "update_records", "delete_records"}
INITIALIZE = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    clients = {n: (TOKENS[n], p) for n, p in POLICIES.items()}
    with sandbox_gateway(tmp_path_factory.mktemp("bridge"), clients) as process:
        yield process


def token_file(folder: Path, token: str, mode: int = 0o600) -> Path:
    path = folder / f"token-{mode:o}-{len(list(folder.iterdir()))}"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def bridge_argv(url: str, token: Path | None) -> list[str]:
    return ["-m", "gateway", "mcp", "--url", url, *(["--token-file", str(token)] if token else [])]


@contextlib.asynccontextmanager
async def bridge_session(url: str, token: Path | None, errlog: Path) -> AsyncIterator[ClientSession]:
    """An SDK session on the bridge's stdio (not initialised); its stderr goes to ``errlog``."""
    server = StdioServerParameters(command=sys.executable, args=bridge_argv(url, token))
    with errlog.open("w") as err:
        async with (
            stdio_client(server, errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            yield session


@contextlib.asynccontextmanager
async def bridged(url: str, token: Path | None, errlog: Path) -> AsyncIterator[ClientSession]:
    async with bridge_session(url, token, errlog) as session:
        await session.initialize()
        yield session


async def refused_at_start(url: str, token: Path | None, errlog: Path) -> ErrorData:
    """The JSON-RPC error the bridge answers ``initialize`` with."""
    async with bridge_session(url, token, errlog) as session:
        with pytest.raises(McpError) as raised:
            await session.initialize()
    return raised.value.error


async def test_tools_records_and_refusals_through_the_bridge(gateway: GatewayProcess, tmp_path: Path) -> None:
    narrow = token_file(tmp_path, TOKENS["narrow"])
    admin = token_file(tmp_path, TOKENS["admin"])
    async with bridged(gateway.url, narrow, tmp_path / "narrow.err") as session:
        assert session.get_server_capabilities() is not None
        tools = await tools_of(session)
        assert set(tools) == READ_TOOLS  # the policy is read-only: no write tool is listed
        assert tools["get_records"].inputSchema["properties"]["entity"]["enum"] == ["Contact"]
        got = await ok(
            session,
            "get_records",
            {"entity": "Contact", "select": ["id", "display_name"], "limit": 3, "orderBy": {"id": "ASC"}},
        )
        # outside the policy's field list: the gateway's problem, as a tool error
        problem = await refused(
            session,
            "get_records",
            {"entity": "Contact", "select": ["id", "email_primary.email"]},
            "gateway-policy-denied",
        )
        assert problem["status"] == 403
        await refused(session, "get_records", {"entity": "Email"}, "gateway-policy-denied")
    async with bridged(f"{gateway.url}/mcp", admin, tmp_path / "admin.err") as session:
        assert set(await tools_of(session)) == READ_TOOLS | WRITE_TOOLS
    async with httpx.AsyncClient(timeout=60) as http:
        expected = await http.post(
            f"{gateway.url}/v4/Contact/get",
            json={"select": ["id", "display_name"], "limit": 3, "orderBy": {"id": "ASC"}},
            headers={"Authorization": f"Bearer {TOKENS['narrow']}"},
        )
    assert got["count"] == 3 and got["records"] == expected.json()
    stderr = (tmp_path / "narrow.err").read_text()
    assert TOKENS["narrow"] not in stderr and "forwarding stdio to" in stderr


async def test_a_wrong_token_is_said_clearly(gateway: GatewayProcess, tmp_path: Path) -> None:
    wrong = token_file(tmp_path, "cgw_bridge-wrong-00000000000000000000")
    error = await refused_at_start(gateway.url, wrong, tmp_path / "wrong.err")
    assert error.message.startswith(f"civicrm-gateway at {gateway.url}/mcp refused the request: ")
    assert "bearer token is not valid" in error.message and "--token-file" in error.message
    assert error.data["type"] == "/problems/unauthenticated" and error.data["status"] == 401
    stderr = (tmp_path / "wrong.err").read_text()
    assert "refused" in stderr and "cgw_bridge-wrong" not in stderr


async def test_an_absent_gateway_is_said_clearly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    error = await refused_at_start(url, token_file(tmp_path, TOKENS["admin"]), tmp_path / "absent.err")
    assert error.message.startswith(f"cannot reach civicrm-gateway at {url}/mcp")
    assert "cannot reach" in (tmp_path / "absent.err").read_text()


@pytest.mark.parametrize(
    ("content", "mode", "said"),
    [
        (TOKENS["admin"], 0o644, "other users can read or change it; make it private first: chmod 600"),
        (TOKENS["admin"], 0o602, "other users can read or change it"),
        ("", 0o600, "expected one client token"),
        (f"{TOKENS['admin']} {TOKENS['narrow']}", 0o600, "expected one client token"),
    ],
    ids=["world-readable", "world-writable", "empty", "two-tokens"],
)
def test_a_token_file_others_can_read_or_that_holds_no_token_is_refused(
    tmp_path: Path, content: str, mode: int, said: str
) -> None:
    path = token_file(tmp_path, content, mode)
    result = subprocess.run(
        [sys.executable, *bridge_argv("http://127.0.0.1:9", path)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert said in result.stderr and str(path) in result.stderr
    assert TOKENS["admin"] not in result.stderr


def test_the_url_must_be_http(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, *bridge_argv("ftp://example.org", None)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "not an http(s) URL" in result.stderr


def test_the_bridge_ends_with_its_input(gateway: GatewayProcess, tmp_path: Path) -> None:
    """An assistant closing stdin ends the bridge, after the answers to what it had sent."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    result = subprocess.run(
        [sys.executable, *bridge_argv(gateway.url, token_file(tmp_path, TOKENS["narrow"]))],
        input="".join(json.dumps(m) + "\n" for m in messages),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = {a["id"]: a for a in map(json.loads, result.stdout.splitlines())}
    assert answers[1]["result"]["serverInfo"]["name"] and set(answers) == {1, 2}
    assert {t["name"] for t in answers[2]["result"]["tools"]} == READ_TOOLS
