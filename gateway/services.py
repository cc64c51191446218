"""The app's collaborators, built once by ``create_app`` and handed to what needs them.

The HTTP face reads them through :func:`services` (one typed lookup on the app's state) and
hands every call to ``services.flow`` (:class:`gateway.flow.flow.CallFlow`), which gets its
collaborators here and nothing from the request; the resilience
layer, the limiter, readiness and the schemas get theirs as constructor arguments, so a test
builds an app with the clock or sleep it needs (:class:`Timing`) instead of swapping
internals after construction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway.backends import Backend, make_backend
from gateway.backends.metacache import MetadataCache
from gateway.backends.resilience import CircuitBreaker, ResilientBackend, RetryPolicy
from gateway.core.redact import install_log_redaction
from gateway.core.schema import Schemas
from gateway.flow.audit import AuditTrail
from gateway.flow.changes import ChangeFeed, FeedLimits
from gateway.flow.changes.cursor import CursorCodec, load_key
from gateway.flow.changes.state import FeedState
from gateway.flow.clients import Authenticator, load_clients
from gateway.flow.flow import CallFlow, FlowConfig
from gateway.flow.idempotency import Idempotency, make_store
from gateway.flow.idempotency.store import Store
from gateway.flow.ratelimit import CONCURRENCY_WAIT, Limiter
from gateway.flow.readiness import Readiness
from gateway.flow.webhooks import Deliverer, DeliveryRetry, Targets, WebhookStore
from gateway.settings import Settings, env_name
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Timing:
    """Where the collaborators get the time and how they wait: the real ones by default."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # How long a call may wait for one of its client's in-flight slots before a 429.
    concurrency_wait: float = CONCURRENCY_WAIT


@dataclass(frozen=True)
class Services:
    settings: Settings
    backend: ResilientBackend
    metrics: Metrics | None
    authenticator: Authenticator
    limiter: Limiter
    readiness: Readiness
    schemas: Schemas
    idempotency: Idempotency
    audit: AuditTrail
    flow: CallFlow  # what every face hands its calls to
    feed: ChangeFeed  # /v4/{Entity}/changes (docs/changes.md)
    webhooks: Deliverer  # subscriptions, their queue and the deliverer


def services(connection: HTTPConnection) -> Services:
    """The services of the app answering this request."""
    found: Services = connection.app.state.services
    return found


def resilient_backend(
    inner: Backend, settings: Settings, *, metrics: Metrics | None = None, timing: Timing | None = None
) -> ResilientBackend:
    """Retries, breaker and metadata cache around ``inner``, from the settings."""
    timing = timing or Timing()
    on_change = functools.partial(metrics.breaker_changed, inner.name) if metrics else None
    return ResilientBackend(
        inner,
        retry=RetryPolicy(settings.retry_max_attempts, settings.retry_max_seconds, settings.retry_backoff),
        breaker=CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown, clock=timing.clock, on_change=on_change
        ),
        cache=MetadataCache(settings.metadata_cache_ttl, settings.metadata_cache_size, clock=timing.clock),
        batch_concurrency=settings.batch_concurrency,
        metrics=metrics,
        sleep=timing.sleep,
    )


def build_services(
    settings: Settings,
    backend: Backend | None = None,
    *,
    timing: Timing | None = None,
    idempotency_store: Store | None = None,
) -> Services:
    """Every collaborator, once. ``backend`` overrides the one the settings name, and
    ``idempotency_store`` the Idempotency-Key store they name."""
    timing = timing or Timing()
    install_log_redaction(settings.secret_values)
    metrics = Metrics() if settings.metrics_enabled else None
    # Retries, circuit breaker and metadata cache apply to every backend alike.
    resilient = resilient_backend(backend or make_backend(settings), settings, metrics=metrics, timing=timing)
    if metrics is not None:
        metrics.watch_backend(resilient)
    clients = load_clients(settings)
    install_log_redaction(
        [c.identity.api_key for c in clients if c.identity is not None and c.identity.api_key]
    )
    if settings.allow_anonymous and not clients:
        log.warning(
            "No client tokens and %s=true: anyone who can reach this gateway can call "
            "CiviCRM with its credentials",
            env_name("allow_anonymous"),
        )
    authenticator = Authenticator(clients, allow_anonymous=settings.allow_anonymous)
    limiter = Limiter(settings, metrics, concurrency_wait=timing.concurrency_wait)
    schemas = Schemas(resilient, settings.metadata_cache_ttl, clock=timing.clock)
    idempotency = Idempotency(
        lambda: idempotency_store or open_idempotency_store(settings),
        ttl=settings.idempotency_ttl,
        lease=settings.idempotency_lease_seconds,
    )
    audit = AuditTrail(settings, metrics)
    flow = CallFlow(
        flow_config(settings),
        authenticator=authenticator,
        limiter=limiter,
        schemas=schemas,
        backend=resilient,
        idempotency=idempotency,
        audit=audit,
        metrics=metrics,
    )
    feed = build_feed(settings, flow, metrics)
    return Services(
        settings=settings,
        backend=resilient,
        metrics=metrics,
        authenticator=authenticator,
        limiter=limiter,
        readiness=Readiness(
            resilient,
            requires_upstream=settings.readiness_requires_upstream,
            timeout=settings.readiness_upstream_timeout,
            metrics=metrics,
        ),
        schemas=schemas,
        idempotency=idempotency,
        audit=audit,
        flow=flow,
        feed=feed,
        webhooks=build_deliverer(settings, feed, authenticator, metrics),
    )


def build_feed(settings: Settings, flow: CallFlow, metrics: Metrics | None) -> ChangeFeed:
    """The change feed, its state in the state folder; told of every write through the flow."""
    feed = ChangeFeed(
        flow,
        FeedState(settings.state_dir / "changes.sqlite"),
        CursorCodec(functools.partial(load_key, settings.state_dir / "changes.key")),
        FeedLimits(
            overlap=settings.changes_overlap_seconds,
            poll_interval=settings.changes_poll_interval,
            max_wait=settings.changes_max_wait,
            waits_per_client=settings.changes_max_waits_per_client,
            waits=settings.changes_max_waits,
            delete_scan=settings.changes_delete_scan_seconds,
            max_ids=settings.changes_max_ids,
        ),
    )
    flow.write_listeners.append(feed.wrote)
    if metrics is not None:
        feed.on_lag = lambda entity, seconds: metrics.feed_lag.labels(entity).set(seconds)
    return feed


def build_deliverer(
    settings: Settings, feed: ChangeFeed, authenticator: Authenticator, metrics: Metrics | None
) -> Deliverer:
    by_name = {c.name: c for c in authenticator.clients}
    return Deliverer(
        WebhookStore(settings.state_dir / "webhooks.sqlite"),
        feed,
        Targets(settings.webhook_hosts, settings.http_url if settings.backend == "http" else None),
        by_name.get,
        DeliveryRetry(
            base=settings.webhook_retry_base,
            cap=settings.webhook_retry_max,
            give_up=settings.webhook_retry_hours * 3600,
            disable_after=settings.webhook_disable_hours * 3600,
        ),
        interval=settings.changes_poll_interval,
        timeout=settings.webhook_timeout,
        on_outcome=(lambda o: metrics.webhook_deliveries.labels(o).inc()) if metrics else None,
        on_depth=(lambda n: metrics.webhook_queue.set(n)) if metrics else None,
    )


def flow_config(settings: Settings) -> FlowConfig:
    return FlowConfig(
        validate_calls=settings.validate_calls,
        export_page_size=settings.export_page_size,
        batch_max_calls=settings.batch_max_calls,
    )


def open_idempotency_store(settings: Settings) -> Store:
    """The Idempotency-Key store the settings name."""
    return make_store(
        settings.idempotency_store,
        redis_url=settings.rate_limit_storage.get_secret_value(),
        sqlite_path=settings.state_dir / "idempotency.sqlite",
    )
