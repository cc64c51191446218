"""The ``/mcp`` endpoint: the MCP SDK's Streamable HTTP transport, stateless (every HTTP
request stands alone, so each is authenticated from its own ``Authorization`` header, as a REST
call is) with plain JSON answers, around a low-level SDK server whose two handlers are ours:
``tools/list`` (what this client's policy offers) and ``tools/call`` (:mod:`gateway.mcp.tools`).

The handlers are registered directly rather than through the SDK's decorators: those keep one
tool cache per server and check arguments against whichever client listed tools last, while
here every client has its own list and the arguments are checked by :class:`Tools`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import McpError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import __version__
from gateway.core.errors import PROBLEM_CONTENT_TYPE, GatewayError
from gateway.flow.clients import Client
from gateway.flow.flow import CallFlow
from gateway.flow.outcome import problem_body
from gateway.flow.request import Credentials, Origin
from gateway.mcp.tools import Catalogue, Tools

PATH = "/mcp"
# JSON-RPC error code of a refused tools/list (server-defined range)
REFUSED = -32001
_CLIENT_KEY = "gateway.mcp.client"
INSTRUCTIONS = (
    "CiviCRM through civicrm-gateway. Start with list_entities, then describe_entity for the "
    "fields of an entity; get_records and count_records read (APIv4 where clauses). Write tools "
    "appear only when this client may write; try a write with dry_run first."
)


class McpEndpoint:
    """The ASGI app at ``/mcp``."""

    def __init__(
        self,
        flow: CallFlow,
        catalogue: Catalogue,
        *,
        credentials: Callable[[Request], Credentials],
        max_body_bytes: int,
        max_depth: int,
    ) -> None:
        self.flow = flow
        self.credentials = credentials
        self.max_body_bytes = max_body_bytes
        self.tools = Tools(flow, catalogue, max_depth=max_depth)
        self.server: Server[Any, Any] = Server(
            "civicrm-gateway", version=__version__, instructions=INSTRUCTIONS
        )
        self.server.request_handlers[types.ListToolsRequest] = self._list_tools
        self.server.request_handlers[types.CallToolRequest] = self._call_tool
        self.manager = StreamableHTTPSessionManager(
            self.server, stateless=True, json_response=True, max_request_body_size=max_body_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate the HTTP request before the SDK reads it: a wrong or missing token is
        the REST routes' 401 problem, and nothing of MCP runs for it."""
        request = Request(scope, receive)
        declared = request.headers.get("content-length", "")
        try:
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise GatewayError(
                    "payload-too-large", f"The body is larger than {self.max_body_bytes} bytes."
                )
            credentials = self.credentials(request)
            client = self.flow.authenticator.authenticate(
                credentials.authorization, credentials.peer, proxied=credentials.proxied
            )
        except GatewayError as exc:
            response = Response(
                problem_body(exc, PATH),
                status_code=exc.status,
                media_type=PROBLEM_CONTENT_TYPE,
                headers=dict(exc.headers or {}),
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["client"] = client.name  # the access log's client column
        scope[_CLIENT_KEY] = client
        await self.manager.handle_request(scope, receive, send)

    # --- lifetime ------------------------------------------------------------------------
    async def start(self) -> tuple[asyncio.Task[None], asyncio.Event]:
        """Run the SDK's session manager in a task of its own: its task group must be entered
        and left by one task, and an app's lifespan may be entered and left by two (an
        embedding program's, a test fixture's setup and teardown)."""
        started, stopping = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with self.manager.run():
                started.set()
                await stopping.wait()

        task = asyncio.get_running_loop().create_task(hold(), name="mcp-session-manager")
        ready = asyncio.ensure_future(started.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # it failed to start: say why
            ready.cancel()
            task.result()
        return task, stopping

    @staticmethod
    async def stop(running: tuple[asyncio.Task[None], asyncio.Event]) -> None:
        task, stopping = running
        stopping.set()
        await task

    # --- the handlers --------------------------------------------------------------------
    def _request(self) -> Request:
        request = self.server.request_context.request
        assert isinstance(request, Request), "the Streamable HTTP transport carries the request"
        return request

    async def _list_tools(self, _: types.ListToolsRequest) -> types.ServerResult:
        request = self._request()
        client: Client = request.scope[_CLIENT_KEY]
        # Listing counts against the client's rate, as any call does (and may be refused)
        try:
            await self.flow.authenticate(self.credentials(request))
        except GatewayError as exc:
            raise _refusal(exc) from None
        return types.ServerResult(types.ListToolsResult(tools=await self.tools.listed(client)))

    async def _call_tool(self, call: types.CallToolRequest) -> types.ServerResult:
        request = self._request()
        state = request.scope.get("state") or {}
        origin = Origin(
            face="mcp",
            request_id=state.get("request_id"),
            source=request.client.host if request.client else None,
        )
        result = await self.tools.run(
            call.params.name, call.params.arguments or {}, self.credentials(request), origin
        )
        return types.ServerResult(result)


def _refusal(error: GatewayError) -> McpError:
    """A refusal outside a tool call (tools/list): a JSON-RPC error carrying the problem."""
    body = orjson.loads(problem_body(error, PATH))
    return McpError(
        types.ErrorData(
            code=REFUSED, message=f"{body['title']} ({body['status']}): {body['detail']}", data=body
        )
    )


def install_mcp(
    app: Starlette,
    flow: CallFlow,
    catalogue: Catalogue,
    *,
    credentials: Callable[[Request], Credentials],
    max_body_bytes: int,
    max_depth: int,
) -> McpEndpoint:
    """Serve MCP at ``/mcp``; its session manager runs for the app's lifetime."""
    endpoint = McpEndpoint(
        flow, catalogue, credentials=credentials, max_body_bytes=max_body_bytes, max_depth=max_depth
    )
    route = Route(PATH, endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    app.router.routes.append(route)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Any]:
        async with inner(app) as state:
            running = await endpoint.start()
            try:
                yield state
            finally:
                await endpoint.stop(running)

    app.router.lifespan_context = lifespan
    return endpoint
