"""The fast path for ``/v4|/v3/{entity}/{action}``: the gateway's hot routes, answered without
FastAPI's router, dependency solving and exception middleware.

Measured in process, that machinery cost more than the call itself (about 55% of a call's
time with a stub backend; docs/production.md). Only well-formed targets are taken here (valid
names, GET or POST); everything else, odd paths and methods included, goes on to FastAPI
unchanged, which also still documents these routes in OpenAPI. Both paths answer through
``routes.api.handle_call`` and the app's own error handlers, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.core.params import NAME_PATTERN
from gateway.web.routes.api import handle_call

Handler = Callable[[Request, Exception], Awaitable[Response]]

_TARGET = re.compile(f"/v([34])/({NAME_PATTERN})/({NAME_PATTERN})")


class DirectCallMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[tuple[str, str], BaseRoute],
        on_gateway_error: Handler,
        on_unexpected: Handler,
    ) -> None:
        """``routes``: the FastAPI route per (method, version) these calls stand for (metrics
        and access logs label requests with its path template)."""
        self.app = app
        self.routes = routes
        self.on_gateway_error = on_gateway_error
        self.on_unexpected = on_unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if scope["type"] != "http" or method not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        target = _TARGET.fullmatch(path)
        if target is None:
            await self.app(scope, receive, send)
            return
        version, entity, action = target.groups()
        if version == "4" and action == "changes":
            # the change feed's own route (gateway.web.routes.changes), not a CiviCRM action
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes[(method, version)]
        scope["path_params"] = {"entity": entity, "action": action}
        request = Request(scope, receive)
        try:
            response = await handle_call(request, int(version), entity, action)
        except GatewayError as exc:
            response = await self.on_gateway_error(request, exc)
        except Exception as exc:
            response = await self.on_unexpected(request, exc)
        await response(scope, receive, send)
