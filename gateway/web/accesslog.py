"""One ``gateway.access`` log line per HTTP request, written when its answer is finished."""

from __future__ import annotations

import logging

from starlette.types import Scope

from gateway.web.asgiutil import ObservingMiddleware

access_log = logging.getLogger("gateway.access")


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v4/{entity}/{action}``), never the raw path: a
    bounded label for metrics and a stable field for log queries."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class AccessLogMiddleware(ObservingMiddleware):
    """Method, path, status, duration, client name, request id and route template."""

    def after(self, scope: Scope, status: int, seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        state = scope.get("state", {})
        method, path = scope["method"], scope["path"]
        # The record made and handled as Logger.info would, less its search of the stack for
        # the caller's file and line (which no format shows): a third of a line's cost.
        record = access_log.makeRecord(
            access_log.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %s",
            (method, path, status),
            None,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "client": state.get("client"),
                "request_id": state.get("request_id"),
                "route": route_template(scope),
            },
        )
        access_log.handle(record)
