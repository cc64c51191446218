"""Counts each HTTP request in the metrics: in flight while it runs, then its duration by route
template, method and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from .accesslog import route_template
from .asgiutil import StatusRecorder
from .metrics import Metrics


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = StatusRecorder(send)
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(route_template(scope), scope["method"], recorder.status,
                                         time.perf_counter() - started)
