"""Counts each HTTP request in the metrics: in flight while it runs, then its duration by route
template, method and status."""

from __future__ import annotations

from starlette.types import ASGIApp, Scope

from gateway.telemetry.metrics import Metrics
from gateway.web.accesslog import route_template
from gateway.web.asgiutil import ObservingMiddleware


class MetricsMiddleware(ObservingMiddleware):
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def before(self, scope: Scope) -> None:
        self.metrics.in_flight.inc()

    def after(self, scope: Scope, status: int, seconds: float) -> None:
        self.metrics.in_flight.dec()
        self.metrics.observe_request(route_template(scope), scope["method"], status, seconds)
