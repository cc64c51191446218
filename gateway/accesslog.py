"""One ``gateway.access`` log line per HTTP request, written when its answer is finished."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from .asgiutil import StatusRecorder

access_log = logging.getLogger("gateway.access")


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v4/{entity}/{action}``), never the raw path: a
    bounded label for metrics and a stable field for log queries."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class AccessLogMiddleware:
    """Method, path, status, duration, client name, request id and route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = StatusRecorder(send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, recorder)
        finally:
            state = scope.get("state", {})
            method, path, status = scope["method"], scope["path"], recorder.status
            access_log.info(
                "%s %s %s", method, path, status,
                extra={"method": method, "path": path, "status": status,
                       "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                       "client": state.get("client"), "request_id": state.get("request_id"),
                       "route": route_template(scope)},
            )
