"""An MCP client from the official SDK, over real Streamable HTTP, on a gateway's ``/mcp``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from gateway.flow.clients import hash_token
from tests.conftest import GatewayProcess


@contextlib.asynccontextmanager
async def mcp_session(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialised session on ``url``/mcp, authenticated with ``token`` (None: none)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def tools_of(session: ClientSession) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in (await session.list_tools()).tools}


async def ok(session: ClientSession, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The structured content of a successful tool call."""
    result = await session.call_tool(name, arguments)
    assert not result.isError, result.content
    assert result.structuredContent is not None
    # the text holds the same content after its one-line summary (clients reading text only)
    text = result.content[0]
    assert isinstance(text, types.TextContent) and text.text.strip()
    return result.structuredContent


async def refused(session: ClientSession, name: str, arguments: dict[str, Any], slug: str) -> dict[str, Any]:
    """The problem of a tool error of type ``slug`` (the REST route's problem body)."""
    result = await session.call_tool(name, arguments)
    assert result.isError, result.structuredContent
    problem = problem_of(result)
    assert problem["type"] == f"/problems/{slug}", problem
    assert problem["instance"] == f"/mcp/tools/{name}"
    return problem


def problem_of(result: types.CallToolResult) -> dict[str, Any]:
    """A tool error's problem: the JSON after its one-line summary (and no structured content,
    which a tool's output schema describes only for results)."""
    assert result.isError and result.structuredContent is None, result
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    summary, _, body = text.text.partition("\n")
    problem: dict[str, Any] = json.loads(body)
    assert problem["detail"] in summary and problem["type"] in summary
    return problem


def clients_toml(policies: dict[str, tuple[str, str]]) -> str:
    """A clients file: name -> (token, the policy's TOML lines)."""
    parts = []
    for name, (token, policy) in policies.items():
        parts.append(f'[clients.{name}]\ntoken_sha256 = "{hash_token(token)}"\n{policy.strip()}\n')
    return "\n".join(parts)


@contextlib.contextmanager
def sandbox_gateway(
    directory: Path, clients: dict[str, tuple[str, str]], **env: str
) -> Iterator[GatewayProcess]:
    """A uvicorn gateway on the sandbox with these clients (name -> (token, policy lines)), its
    state in ``directory``; ``env``: more ``CIVI_GATEWAY_*`` settings."""
    path = directory / "clients.toml"
    path.write_text(clients_toml(clients))
    process = GatewayProcess(
        {
            "CIVI_GATEWAY_BACKEND": "sandbox",
            "CIVI_GATEWAY_STATE_DIR": str(directory / "state"),
            "CIVI_GATEWAY_CLIENTS_FILE": str(path),
            **env,
        },
        directory,
    )
    try:
        yield process.wait_ready(timeout=60)
    finally:
        process.stop()
