"""``civicrm-gateway mcp --url URL --token-file F``: a stdio MCP server that forwards every
message to a gateway's ``/mcp``, for assistants that start only local (stdio) servers.

The stdio side is the MCP SDK's own (framing and message validation); the HTTP side posts each
JSON-RPC message to ``/mcp`` as the Streamable HTTP transport does, with the client token in
the ``Authorization`` header. It is not the SDK's client transport because that one ends the
whole connection on the first failed POST: here an unreachable gateway, a refused token or a
gateway restart is answered as a JSON-RPC error to the request it hit (and said on stderr), and
the next request tries again. The bridge holds no state the gateway does not send back, so it
works through any proxy, and the assistant's configuration holds no secret, only the token
file's path.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import orjson
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from mcp import types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from gateway.core.net import is_loopback

# JSON-RPC error codes (server-defined range): the gateway could not be reached, or refused.
UNREACHABLE = -32000
REFUSED = -32001
_SESSION_HEADER = "mcp-session-id"
_VERSION_HEADER = "mcp-protocol-version"


class BridgeError(Exception):
    """A problem with the command line or the token file; said on stderr, exit status 2."""


def endpoint(url: str) -> str:
    """The ``/mcp`` URL of the gateway at ``url`` (given with or without ``/mcp``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BridgeError(f"--url: not an http(s) URL of a gateway, e.g. http://127.0.0.1:8000: {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/mcp"):
        path += "/mcp"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def read_token(path: str) -> str:
    """The token in the file at ``path``. Refused when other users may read or change the file
    (as ssh does with a private key), and when it holds anything but one token."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise BridgeError(f"--token-file {path}: not a regular file")
            if os.name == "posix" and mode & (stat.S_IROTH | stat.S_IWOTH):
                raise BridgeError(
                    f"--token-file {path}: other users can read or change it; "
                    f"make it private first: chmod 600 {path}"
                )
            raw = file.read(4097)
    except OSError as exc:
        raise BridgeError(f"--token-file {path}: {exc.strerror}") from None
    token = raw.decode("ascii", "replace").strip()
    if not token or len(raw) > 4096 or not all("!" <= c <= "~" for c in token):
        raise BridgeError(f"--token-file {path}: expected one client token (cgw_...) and nothing else")
    return token


def _refusal_message(url: str, response: httpx.Response) -> tuple[str, Any]:
    """What the gateway said (its problem's title and detail), and the problem as error data."""
    problem: Any = None
    try:
        problem = orjson.loads(response.content)
        said = f"{problem['title']}: {problem['detail']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        said = f"HTTP {response.status_code}"
    message = f"civicrm-gateway at {url} refused the request: {said}"
    if response.status_code == 401:
        message += " (is the token in --token-file one of the gateway's client tokens?)"
    return message, problem if isinstance(problem, dict) else None


@dataclass
class Bridge:
    """Forwards stdio messages to ``url`` and its answers back."""

    url: str
    http: httpx.AsyncClient
    out: MemoryObjectSendStream[SessionMessage]
    protocol_version: str | None = None
    session_id: str | None = None
    _said: set[str] = field(default_factory=set)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.protocol_version:
            headers[_VERSION_HEADER] = self.protocol_version
        if self.session_id:
            headers[_SESSION_HEADER] = self.session_id
        return headers

    def warn(self, message: str) -> None:
        """On stderr (the assistant's log), once per distinct message, not once per call."""
        if message not in self._said:
            self._said.add(message)
            print(f"civicrm-gateway mcp: {message}", file=sys.stderr, flush=True)

    async def forward(self, message: types.JSONRPCMessage) -> None:
        """POST one message; write the answer, or a JSON-RPC error saying why there is none."""
        request_id = message.root.id if isinstance(message.root, types.JSONRPCRequest) else None
        body = message.model_dump_json(by_alias=True, exclude_none=True)
        try:
            response = await self.http.post(self.url, content=body, headers=self._headers())
        except httpx.HTTPError as exc:
            text = f"cannot reach civicrm-gateway at {self.url}: {exc or type(exc).__name__}"
            return await self._fail(request_id, UNREACHABLE, text, None)
        if response.status_code == 202:
            return None
        if response.status_code >= 300:
            text, problem = _refusal_message(self.url, response)
            return await self._fail(request_id, REFUSED, text, problem)
        if _SESSION_HEADER in response.headers:
            self.session_id = response.headers[_SESSION_HEADER]
        media_type = response.headers.get("content-type", "")
        if not media_type.startswith("application/json"):
            text = f"civicrm-gateway at {self.url} answered {media_type!r}, not JSON"
            return await self._fail(request_id, REFUSED, text, None)
        try:
            answer = types.JSONRPCMessage.model_validate_json(response.content)
        except ValueError:
            return await self._fail(request_id, REFUSED, f"{self.url} answered no MCP message", None)
        if isinstance(answer.root, types.JSONRPCResponse) and request_id is not None:
            version = answer.root.result.get("protocolVersion")
            if isinstance(version, str) and isinstance(message.root, types.JSONRPCRequest):
                if message.root.method == "initialize":
                    self.protocol_version = version
        await self.out.send(SessionMessage(answer))
        return None

    async def _fail(self, request_id: types.RequestId | None, code: int, text: str, data: Any) -> None:
        self.warn(text)
        if request_id is None:  # a notification: nobody waits for an answer
            return
        error = types.JSONRPCError(
            jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=text, data=data)
        )
        await self.out.send(SessionMessage(types.JSONRPCMessage(error)))


async def run_bridge(url: str, token: str | None, *, read_timeout: float = 300.0) -> None:
    """Serve stdio until its input ends, then finish the calls in flight and return (stdout is
    closed last: the SDK's stdio server waits for that). Each request is forwarded in a task of
    its own, so a long tool call holds up neither pings nor other calls."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(30.0, read=read_timeout)
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False) as http,
        stdio_server() as (incoming, outgoing),
        outgoing,
        anyio.create_task_group() as tasks,
    ):
        await _pump(incoming, Bridge(url, http, outgoing), tasks)


async def _pump(incoming: Any, bridge: Bridge, tasks: TaskGroup) -> None:
    """Every message read from stdin to the gateway; returns when stdin ends."""
    async with incoming:
        async for item in incoming:
            if isinstance(item, Exception):  # a line that is no JSON-RPC message
                bridge.warn(f"ignored a message from the assistant: {item}")
                continue
            tasks.start_soon(bridge.forward, item.message)


def cmd_mcp(url: str, token_file: str | None) -> int:
    try:
        target = endpoint(url)
        token = read_token(token_file) if token_file else None
    except BridgeError as exc:
        print(f"civicrm-gateway mcp: {exc}", file=sys.stderr)
        return 2
    host = urlsplit(target).hostname or ""
    if target.startswith("http://") and not is_loopback(host) and token:
        print(
            f"civicrm-gateway mcp: warning: {host} is reached over plain http: the token "
            "crosses the network unencrypted (use the gateway's https URL)",
            file=sys.stderr,
        )
    print(f"civicrm-gateway mcp: forwarding stdio to {target}", file=sys.stderr, flush=True)
    anyio.run(run_bridge, target, token)
    return 0
