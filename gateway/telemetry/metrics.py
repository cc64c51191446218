"""Prometheus metrics: one registry per app (so several apps in one process never mix).

Labels are route templates (``/v4/{entity}/{action}``), methods, statuses, backend names and
fixed outcome words: never a raw path, a client token or anything a client typed.

Several workers (``serve`` with ``CIVI_GATEWAY_WORKERS`` > 1): prometheus_client's multiprocess
mode. ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start;
each worker writes its samples there and whichever worker answers ``/metrics`` reads them all,
so counters and histograms are sums over the workers. Gauges say how they combine
(``multiprocess_mode``): requests in flight and pool gauges add up over live workers, the
breaker state is the worst live worker's, CiviCRM's state is the latest check's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector


class Backend(Protocol):
    """What the metrics read of a backend: its name and its pool gauges."""

    name: str

    def stats(self) -> dict[str, float]: ...


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
# prometheus_client reads this variable when it is imported: it must be set before the process
# starts (``serve`` does it for its workers).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often each worker copies its backend's stats() into the shared files (multiprocess mode).
POOL_REFRESH_SECONDS = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _BackendStats(Collector):
    """``backend.stats()`` read at scrape time (pool size, busy workers, queued callers)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gateway_backend_pool", "Backend pool gauges from stats()", labels=["backend", "gauge"]
        )
        for name, value in sorted(self.backend.stats().items()):
            family.add_metric([self.backend.name, name], float(value))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route template and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer (to the end of the body), by route template",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being answered", registry=r, multiprocess_mode="livesum"
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Duration of each attempt at a backend call",
            ["backend", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "gateway_upstream_retries", "Backend calls tried again", ["backend", "reason"], registry=r
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            ["backend"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_up = Gauge(
            "gateway_upstream_up",
            "CiviCRM answered the last readiness check: 1 yes, 0 no",
            ["backend"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Calls refused with 429 by the client's rate or concurrency limit",
            ["limit"],
            registry=r,
        )
        self.breaker_opened = Counter(
            "gateway_breaker_opened", "Times the circuit breaker opened", ["backend"], registry=r
        )
        self.breaker_rejected = Counter(
            "gateway_breaker_rejected",
            "Calls failed fast while the breaker was open",
            ["backend"],
            registry=r,
        )
        self.cache = Counter("gateway_metadata_cache", "Metadata cache lookups", ["result"], registry=r)
        self.export_rows = Counter("gateway_export_rows", "Rows streamed by exports", ["format"], registry=r)
        self.audit_errors = Counter(
            "gateway_audit_errors",
            "Audit records a sink failed to write (queue: dropped, the writer was behind)",
            ["sink"],
            registry=r,
        )
        self.batch_calls = Counter(
            "gateway_batch_calls", "Calls carried in batches", ["version", "status"], registry=r
        )
        # The change feed and webhooks (docs/changes.md).
        self.feed_lag = Gauge(
            "gateway_feed_lag_seconds",
            "Age of the newest change a feed poll reported, per entity",
            ["entity"],
            registry=r,
            multiprocess_mode="max",
        )
        self.webhook_deliveries = Counter(
            "gateway_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, dead, refused)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("delivered", "failed", "dead", "refused"):  # at 0 from the start, for alerts
            self.webhook_deliveries.labels(outcome)
        self.webhook_queue = Gauge(
            "gateway_webhook_queue_depth",
            "Webhook deliveries waiting to be made",
            registry=r,
            multiprocess_mode="max",
        )

        # Labelled children looked up once per (route, method, status), not on every request.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Multiprocess mode only: the backend whose stats() this worker copies, and the task.
        self._backend: Backend | None = None
        self._pool: Gauge | None = None
        self._refresher: asyncio.Task[None] | None = None

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. ``route`` is a template, so the label set stays small."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def breaker_changed(self, backend: str, state: str) -> None:
        """The circuit breaker of ``backend`` moved to ``state``."""
        self.breaker_state.labels(backend).set(BREAKER_STATES[state])
        if state == "open":
            self.breaker_opened.labels(backend).inc()

    def watch_backend(self, backend: Backend) -> None:
        if self.multiprocess_dir is None:
            self.registry.register(_BackendStats(backend))
            return
        # Other workers cannot call this one's stats(): each copies them to a gauge that the
        # files add up over the live workers.
        self._backend = backend
        self._pool = Gauge(
            "gateway_backend_pool",
            "Backend pool gauges from stats()",
            ["backend", "gauge"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def _copy_pool_stats(self) -> None:
        if self._backend is not None and self._pool is not None:
            for name, value in self._backend.stats().items():
                self._pool.labels(self._backend.name, name).set(float(value))

    async def _refresh_pool(self) -> None:
        while True:
            self._copy_pool_stats()
            await asyncio.sleep(POOL_REFRESH_SECONDS)

    def _forget_dead_workers(self) -> None:
        """A worker killed outright (SIGKILL, out of memory) never withdrew its live gauges
        (requests in flight, pool use): withdraw them for it. Its counters stay in the sums."""
        assert self.multiprocess_dir is not None
        for path in Path(self.multiprocess_dir).glob("gauge_live*_*.db"):
            pid = path.stem.rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):  # another worker may be doing the same
                    mark_process_dead(int(pid), self.multiprocess_dir)

    def start(self) -> None:
        """In the app's lifespan, once the backend has started."""
        if self.multiprocess_dir is not None:
            self._forget_dead_workers()
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_pool())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.multiprocess_dir is not None:
            # This worker's live gauges stop counting; its counters stay in the sums.
            mark_process_dead(os.getpid(), self.multiprocess_dir)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self._copy_pool_stats()
        self._forget_dead_workers()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
