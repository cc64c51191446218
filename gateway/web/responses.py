"""JSON responses encoded with orjson, and problem+json for errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from gateway.core.errors import PROBLEM_CONTENT_TYPE, GatewayError
from gateway.core.redact import REDACTOR


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem_response(error: GatewayError, instance: str | None = None) -> Response:
    """The error as RFC 9457 problem+json, with any configured secret masked."""
    body = orjson.dumps(error.body(instance)).decode()
    return Response(
        REDACTOR.text(body), status_code=error.status, media_type=PROBLEM_CONTENT_TYPE, headers=error.headers
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path, for a 405's ``Allow``.

    Starlette answers with the methods of the first route whose path matched, which is wrong
    when several routes share a path (GET and POST on ``/v4/{entity}/{action}``).
    """
    routes = request.app.router.routes
    return ", ".join(
        m
        for m in _METHODS
        if any(route.matches({**request.scope, "method": m})[0] == Match.FULL for route in routes)
    )
