"""Retries, a circuit breaker and the metadata cache, around whatever backend the gateway uses.

Applied in ``create_app`` so the HTTP, sandbox, cv and pipe backends all behave the same:

- a call is *safe* when it and every call it chains are reads (``Call.reads_only``): only
  safe calls are retried after the upstream may have seen them; a write is retried only when the connection
  itself failed, so CiviCRM never received it (no duplicate creates);
- retries use exponential backoff with jitter, honour the upstream's ``Retry-After``, and stop
  at ``retry_max_attempts`` or ``retry_max_seconds``, whichever comes first;
- after ``breaker_threshold`` upstream failures in a row the breaker opens: calls fail at once
  with 503 and ``Retry-After`` for ``breaker_cooldown`` seconds, then one probe call decides.
  What counts as an upstream failure is the error's problem type (``ProblemType.upstream`` in
  :mod:`gateway.core.errors`), never one call's own error: CiviCRM answers a malformed call with
  HTTP 500, and five of those from one client must not make the gateway refuse every client.
  A failure that may be either (a PHP crash: HTTP 500 with no API answer) counts only when a
  trivial read as the gateway (:class:`HealthProbe`) fails too;
- metadata calls are answered from :class:`gateway.backends.metacache.MetadataCache`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.backends.base import Backend, BatchCall, BatchResult, TransientError
from gateway.backends.metacache import METADATA_ENTITIES, MetadataCache, is_metadata_call
from gateway.core.call import parse
from gateway.core.errors import GatewayError
from gateway.core.params import is_read_action
from gateway.core.results import Records

if TYPE_CHECKING:
    from gateway.flow.clients import Identity
    from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.resilience")
T = TypeVar("T")

# How long a probe's verdict stands: a client sending crashing calls in a loop costs CiviCRM at
# most one extra trivial read per this many seconds.
PROBE_TTL = 1.0


def is_safe(version: int, entity: str, action: str, params: Mapping[str, Any]) -> bool:
    """A read with no write anywhere in its chains: repeating it changes nothing. Params that
    do not parse are taken for a write (never repeated)."""
    if version == 4 and not params.get("chain"):
        # Nothing chained: the action alone decides, without parsing the params again (the
        # call was parsed before it got here; a read that would not parse is still a read).
        return is_read_action(4, action)
    try:
        return parse(version, entity, action, params).reads_only
    except GatewayError:
        return False


class CircuitBreaker:
    """Closed -> open after ``threshold`` failures in a row -> half-open after ``cooldown``
    (one probe at a time) -> closed on the probe's success, open again on its failure."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self.state = "closed"
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_change:
                self._on_change(state)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def retry_after(self) -> int:
        return max(1, math.ceil(self._opened_at + self.cooldown - self._clock()))

    def before(self) -> bool:
        """Admit a call or raise a fail-fast 503; True when the call is the half-open probe."""
        if self.state == "open":
            if self._clock() < self._opened_at + self.cooldown:
                raise self._rejection()
            self._set("half-open")
        if self.state == "half-open":
            if self._probing:
                raise self._rejection()
            self._probing = True
            return True
        return False

    def _rejection(self) -> GatewayError:
        return GatewayError(
            "upstream-unavailable",
            f"CiviCRM failed {self.threshold} times in a row; the gateway is not calling it "
            "until the cool-down ends (circuit breaker open).",
            headers={"Retry-After": str(self.retry_after())},
        )

    def success(self) -> None:
        self._probing = False
        self.failures = 0
        self._set("closed")

    def failure(self) -> None:
        self._probing = False
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            if self.state != "open":
                log.warning(
                    "circuit breaker open after %d upstream failures; cool-down %g s",
                    self.failures,
                    self.cooldown,
                )
            self._opened_at = self._clock()
            self._set("open")

    def release(self) -> None:
        """The call ended without a verdict (cancelled, or a bug): let another probe try."""
        self._probing = False


def says_unhealthy(exc: GatewayError) -> bool:
    """The failure says CiviCRM cannot serve anyone: its type says so, or the transport failed
    (no connection, a cut one, a proxy's 429/502/503/504: ``TransientError``)."""
    return isinstance(exc, TransientError) or exc.upstream_unhealthy


class HealthProbe:
    """Whether CiviCRM serves a trivial read as the gateway (``Backend.check``) right now.

    Asked after a failure of an unclear type: an HTTP 500 with no API answer is CiviCRM
    crashing, on this one call's input (a bad ``=`` list) or for everyone (its database gone).
    One probe runs at a time, whoever asks; its verdict stands for ``ttl`` seconds."""

    def __init__(
        self,
        check: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = PROBE_TTL,
    ) -> None:
        self._check = check
        self._clock = clock
        self.ttl = ttl
        self._verdict: tuple[float, bool] | None = None
        self._running: asyncio.Future[bool] | None = None
        self.probes = 0

    async def healthy(self) -> bool:
        if self._verdict is not None and self._clock() < self._verdict[0] + self.ttl:
            return self._verdict[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        running = self._running
        try:
            return await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None

    async def _probe(self) -> bool:
        self.probes += 1
        try:
            await self._check()
            verdict = True
        except GatewayError as exc:
            # CiviCRM's API answering an error (a permission, say) is CiviCRM up.
            verdict = not (says_unhealthy(exc) or exc.upstream_unclear)
        if not verdict:
            log.warning("health probe failed: CiviCRM does not serve a trivial read either")
        self._verdict = (self._clock(), verdict)
        return verdict


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is tried: ``max_attempts`` tries within ``max_seconds``,
    backing off exponentially from ``backoff`` seconds."""

    max_attempts: int
    max_seconds: float
    backoff: float


class ResilientBackend(Backend):
    """Wraps a backend; same interface, with retries, a breaker and the metadata cache."""

    def __init__(
        self,
        inner: Backend,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        cache: MetadataCache,
        batch_concurrency: int = 8,
        metrics: Metrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        probe: HealthProbe | None = None,
    ) -> None:
        """``probe``: how an unclear failure is confirmed (default: ``inner.check``)."""
        self.inner = inner
        self.name = inner.name
        self.retry = retry
        self.batch_concurrency = batch_concurrency
        self.metrics = metrics
        self._sleep = sleep
        self.cache = cache
        self.breaker = breaker
        self.probe = probe or HealthProbe(inner.check, clock=breaker.clock)
        if metrics is not None:
            metrics.breaker_state.labels(self.name).set(0)

    def unwrapped(self) -> Backend:
        return self.inner.unwrapped()

    def flush_metadata(self) -> int:
        return self.cache.flush()

    def metadata_generation(self) -> int:
        return self.cache.generation

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def stats(self) -> dict[str, float]:
        return self.inner.stats()

    async def check(self) -> None:
        await self._guarded(self.inner.check, safe=True)

    # --- calls -------------------------------------------------------------------------------
    async def call(
        self,
        version: int,
        entity: str,
        action: str,
        params: dict[str, Any],
        *,
        identity: Identity | None = None,
    ) -> Records:
        def attempt() -> Awaitable[Records]:
            return self.inner.call(version, entity, action, params, identity=identity)

        safe = is_safe(version, entity, action, params)
        if self.cache.enabled and is_metadata_call(version, entity, action, params):
            key = self.cache.key(version, entity, action, params, identity)
            return await self.cache.get_or_load(
                key, lambda: self._guarded(attempt, safe=True), self._count_cache
            )
        records = await self._guarded(attempt, safe=safe)
        if not safe and entity in METADATA_ENTITIES:
            self.cache.flush()
        return records

    async def batch(
        self,
        version: int,
        calls: Mapping[str, BatchCall],
        *,
        identity: Identity | None = None,
        concurrency: int | None = None,
    ) -> dict[str, BatchResult]:
        """The whole batch is one attempt; retried only if every call in it is safe."""
        safe = all(is_safe(version, e, a, p) for e, a, p in calls.values())
        results = await self._guarded(
            lambda: self.inner.batch(
                version, calls, concurrency=concurrency or self.batch_concurrency, identity=identity
            ),
            safe=safe,
        )
        if any(not is_safe(version, e, a, p) and e in METADATA_ENTITIES for e, a, p in calls.values()):
            self.cache.flush()
        return results

    def _count_cache(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()

    def _observe(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream.labels(self.name, outcome).observe(time.perf_counter() - started)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; never sooner than the upstream's Retry-After."""
        ceiling = self.retry.backoff * 2.0 ** (attempt - 1)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (jitter, not crypto)
        return max(delay, retry_after or 0.0)

    async def _guarded(self, attempt: Callable[[], Awaitable[T]], *, safe: bool) -> T:
        deadline = time.monotonic() + self.retry.max_seconds
        tries = 0
        while True:
            tries += 1
            try:
                self.breaker.before()
            except GatewayError:
                if self.metrics is not None:
                    self.metrics.breaker_rejected.labels(self.name).inc()
                raise
            started = time.perf_counter()
            try:
                result = await attempt()
            except TransientError as exc:
                self.breaker.failure()
                self._observe("failure", started)
                if not (safe or not exc.reached) or tries >= self.retry.max_attempts:
                    raise
                delay = self._delay(tries, exc.retry_after)
                if time.monotonic() + delay > deadline or self.breaker.state == "open":
                    raise
                if self.metrics is not None:
                    self.metrics.retries.labels(self.name, exc.slug).inc()
                log.info("retrying a call in %.3f s after %s (attempt %d)", delay, exc.slug, tries)
                await self._sleep(delay)
                continue
            except GatewayError as exc:
                unhealthy = says_unhealthy(exc)
                if not unhealthy and exc.upstream_unclear:
                    try:
                        unhealthy = not await self.probe.healthy()
                    except BaseException:
                        self.breaker.release()
                        raise
                if unhealthy:
                    self.breaker.failure()
                    self._observe("failure", started)
                    # Other backends' "unavailable" means nothing ran: retry reads only.
                    delay = self._delay(tries, None)
                    if (
                        safe
                        and exc.slug == "upstream-unavailable"
                        and tries < self.retry.max_attempts
                        and time.monotonic() + delay <= deadline
                        and self.breaker.state != "open"
                    ):
                        if self.metrics is not None:
                            self.metrics.retries.labels(self.name, exc.slug).inc()
                        await self._sleep(delay)
                        continue
                else:
                    self.breaker.success()  # CiviCRM answered (this call's own error): it is up
                    self._observe("error", started)
                raise
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.success()
            self._observe("ok", started)
            return result
