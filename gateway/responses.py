"""JSON responses encoded with orjson, and problem+json for errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from .errors import PROBLEM_CONTENT_TYPE, GatewayError
from .redact import REDACTOR


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem_response(error: GatewayError, instance: str | None = None) -> Response:
    """The error as RFC 9457 problem+json, with any configured secret masked."""
    body = orjson.dumps(error.body(instance)).decode()
    return Response(REDACTOR.text(body), status_code=error.status,
                    media_type=PROBLEM_CONTENT_TYPE, headers=error.headers)
