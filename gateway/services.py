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
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from gateway.backends import Backend
from gateway.backends.config import CvConfig, HttpConfig, SandboxConfig
from gateway.backends.metacache import MetadataCache
from gateway.backends.resilience import CircuitBreaker, ResilientBackend, RetryPolicy
from gateway.clients_file import load_clients
from gateway.core.redact import install_log_redaction
from gateway.core.schema import Schemas
from gateway.flow.audit import AuditTrail
from gateway.flow.audit.trail import AuditConfig
from gateway.flow.changes import ChangeFeed, FeedLimits
from gateway.flow.changes.cursor import CursorCodec, load_key
from gateway.flow.changes.state import make_feed_state
from gateway.flow.clients import Authenticator
from gateway.flow.flow import CallFlow, FlowConfig
from gateway.flow.idempotency import Idempotency, make_store
from gateway.flow.idempotency.store import Store
from gateway.flow.ratelimit import CONCURRENCY_WAIT, Limiter
from gateway.flow.readiness import Readiness
from gateway.flow.webhooks import Deliverer, DeliveryRetry, Targets
from gateway.flow.webhooks.store import make_webhook_store
from gateway.settings import Settings, SettingsError, env_name, split_command
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway")
T = TypeVar("T")


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


def _pick(config: type[T], settings: Settings, **values: Any) -> T:
    """``config`` with each of its fields from the setting of the same name (or ``values``)."""
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    return config(**{name: getattr(settings, name) for name in names - values.keys()}, **values)


def http_config(settings: Settings) -> HttpConfig:
    return _pick(HttpConfig, settings)


def cv_config(settings: Settings) -> CvConfig:
    return _pick(
        CvConfig,
        settings,
        cv_command=tuple(split_command(settings.cv_command)),
        cv_context=tuple(split_command(settings.cv_context)),
    )


def sandbox_config(settings: Settings) -> SandboxConfig:
    return _pick(SandboxConfig, settings)


def make_backend(settings: Settings) -> Backend:
    """The backend the settings ask for, with its own config (imported lazily: each pulls in
    its own needs)."""
    if settings.backend == "http":
        from gateway.backends.http import HttpBackend

        return HttpBackend(http_config(settings))
    if settings.backend == "sandbox":
        from gateway.backends.sandbox import SandboxBackend

        return SandboxBackend(sandbox_config(settings))
    if settings.backend == "cv":
        from gateway.backends.cv import CvBackend

        return CvBackend(cv_config(settings))
    if settings.backend == "pipe":
        from gateway.backends.pipe import PipeBackend

        return PipeBackend(cv_config(settings))
    raise ValueError(f"unknown backend {settings.backend!r}")


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
    limiter = Limiter(
        settings.rate_limit_storage.get_secret_value(),
        default_rate=settings.default_rate_limit,
        client_concurrency=settings.client_concurrency,
        metrics=metrics,
        concurrency_wait=timing.concurrency_wait,
    )
    schemas = Schemas(resilient, settings.metadata_cache_ttl, clock=timing.clock)
    idempotency = Idempotency(
        lambda: idempotency_store or open_idempotency_store(settings),
        ttl=settings.idempotency_ttl,
        lease=settings.idempotency_lease_seconds,
    )
    audit = AuditTrail(audit_config(settings), metrics)
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
    redis_url = settings.rate_limit_storage.get_secret_value()
    if settings.changes_store == "redis":
        from gateway.flow.changes.redis_state import shared_cursor_key

        # every replica signs and checks cursors with one key, kept in the shared Redis
        key = functools.partial(shared_cursor_key, redis_url)
    else:
        key = functools.partial(load_key, settings.state_dir / "changes.key")
    feed = ChangeFeed(
        flow,
        make_feed_state(
            settings.changes_store, redis_url=redis_url, sqlite_path=settings.state_dir / "changes.sqlite"
        ),
        CursorCodec(key),
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
        make_webhook_store(
            settings.changes_store,
            redis_url=settings.rate_limit_storage.get_secret_value(),
            sqlite_path=settings.state_dir / "webhooks.sqlite",
        ),
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


def check_workers(settings: Settings) -> None:
    """Refuse several workers on ``memory://`` when a rate limit applies: each worker would
    count on its own, so a client would get up to ``workers`` times its rate. Redis shares the
    count; ``rate_limit_per_worker=true`` says the per-worker count is meant."""
    storage = settings.rate_limit_storage.get_secret_value()
    if settings.workers == 1 or not storage.startswith("memory://") or settings.rate_limit_per_worker:
        return
    limited = [c.name for c in load_clients(settings) if c.policy.rate is not None]
    if settings.default_rate_limit:
        limited.insert(0, f"{env_name('default_rate_limit')}={settings.default_rate_limit}")
    if limited:
        raise SettingsError(
            f"{env_name('workers')}={settings.workers} with {env_name('rate_limit_storage')}="
            f"memory:// would let each worker count rate limits on its own (a client gets up to "
            f"{settings.workers} times its rate; limits from {', '.join(limited[:3])}). Share "
            f"them with {env_name('rate_limit_storage')}=redis://..., run one worker, or set "
            f"{env_name('rate_limit_per_worker')}=true to accept per-worker limits"
        )


def flow_config(settings: Settings) -> FlowConfig:
    return FlowConfig(
        validate_calls=settings.validate_calls,
        export_page_size=settings.export_page_size,
        batch_max_calls=settings.batch_max_calls,
    )


def audit_config(settings: Settings) -> AuditConfig:
    return AuditConfig(
        sinks=tuple(settings.audit_sinks),
        state_dir=settings.state_dir,
        with_values=settings.audit_values,
        retention_days=settings.audit_retention_days,
        file=settings.audit_file,
        file_max_bytes=settings.audit_file_max_bytes,
        file_backups=settings.audit_file_backups,
    )


def open_idempotency_store(settings: Settings) -> Store:
    """The Idempotency-Key store the settings name."""
    return make_store(
        settings.idempotency_store,
        redis_url=settings.rate_limit_storage.get_secret_value(),
        sqlite_path=settings.state_dir / "idempotency.sqlite",
    )
