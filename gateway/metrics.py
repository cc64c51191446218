"""Prometheus metrics: one registry per app (so several apps in one process never mix).

Labels are route templates (``/v4/{entity}/{action}``), methods, statuses, backend names and
fixed outcome words: never a raw path, a client token or anything a client typed.
With several uvicorn workers each process has its own registry (scrape them one by one or run
one worker per container).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .backends.base import Backend

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


class _BackendStats(Collector):
    """``backend.stats()`` read at scrape time (pool size, busy workers, queued callers)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gateway_backend_pool", "Backend pool gauges from stats()",
                                   labels=["backend", "gauge"])
        for name, value in sorted(self.backend.stats().items()):
            family.add_metric([self.backend.name, name], float(value))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests", "HTTP requests by route template and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("gateway_request_duration_seconds",
                                 "Time to answer (to the end of the body), by route template",
                                 ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being answered", registry=r)
        self.upstream = Histogram("gateway_upstream_duration_seconds",
                                  "Duration of each attempt at a backend call",
                                  ["backend", "outcome"], buckets=_LATENCY_BUCKETS, registry=r)
        self.retries = Counter("gateway_upstream_retries", "Backend calls tried again",
                               ["backend", "reason"], registry=r)
        self.breaker_state = Gauge("gateway_breaker_state",
                                   "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["backend"], registry=r)
        self.breaker_opened = Counter("gateway_breaker_opened", "Times the circuit breaker opened",
                                      ["backend"], registry=r)
        self.breaker_rejected = Counter("gateway_breaker_rejected",
                                        "Calls failed fast while the breaker was open",
                                        ["backend"], registry=r)
        self.cache = Counter("gateway_metadata_cache", "Metadata cache lookups", ["result"],
                             registry=r)
        self.export_rows = Counter("gateway_export_rows", "Rows streamed by exports", ["format"],
                                   registry=r)
        self.batch_calls = Counter("gateway_batch_calls", "Calls carried in batches",
                                   ["version", "status"], registry=r)

        # Labelled children looked up once per (route, method, status), not on every request.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. ``route`` is a template, so the label set stays small."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)),
                        self.latency.labels(route, method))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_backend(self, backend: Backend) -> None:
        self.registry.register(_BackendStats(backend))

    def render(self) -> bytes:
        return generate_latest(self.registry)
