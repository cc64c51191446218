"""Whether this gateway process can serve (``/readyz``), and what it knows of CiviCRM's state.

Readiness is about *this* process: settings loaded (the app exists), backend started, not
draining. CiviCRM's state is checked on each ``/readyz`` (one check at a time, bounded by
``readiness_upstream_timeout``) and reported in the body and as ``gateway_upstream_up``; it
gates readiness only with ``readiness_requires_upstream=true``. By default an upstream outage
keeps every pod ready, so clients get the breaker's own 503 with ``Retry-After`` instead of a
Service with no endpoints (docs/deploy.md, "Readiness").
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from gateway.core.errors import GatewayError
from gateway.core.redact import REDACTOR

if TYPE_CHECKING:
    from gateway.backends.resilience import ResilientBackend
    from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.flow.readiness")

# The signals a server stops on; on either, this process starts draining.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class UpstreamState:
    """The outcome of one readiness check of CiviCRM."""

    error: GatewayError | None
    seconds: float

    def as_json(self, breaker: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "up" if self.error is None else "down",
            "breaker": breaker,
            "check_seconds": round(self.seconds, 4),
        }
        if self.error is not None:
            body["problem"] = self.error.problem.uri
            body["detail"] = REDACTOR.text(self.error.detail)  # as in problem+json bodies
        return body


class Readiness:
    def __init__(
        self,
        backend: ResilientBackend,
        *,
        requires_upstream: bool,
        timeout: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.requires_upstream = requires_upstream
        self.timeout = timeout
        self.started = False
        self.draining = False
        self._check: asyncio.Future[UpstreamState] | None = None
        self._chained: list[tuple[signal.Signals, Any, Any]] = []  # (signal, previous, ours)

    # --- lifecycle (called from the app's lifespan) -------------------------------------------
    def on_started(self) -> None:
        self.started = True
        self._chain_stop_signals()

    def on_stopping(self) -> None:
        self.draining = True
        # Hand the signals back (several apps in one process must not stack handlers).
        for sig, previous, ours in reversed(self._chained):
            if signal.getsignal(sig) is ours:
                signal.signal(sig, previous)
        self._chained.clear()

    def _chain_stop_signals(self) -> None:
        """Mark draining as soon as the server is told to stop, then hand the signal on to the
        server's own handler (uvicorn's graceful shutdown). Only where a server installed a
        handler: taking over a default action could swallow the signal."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def on_signal(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                if not self.draining:
                    log.info("draining: /readyz answers 503 from now on")
                self.draining = True
                previous(signum, frame)

            signal.signal(sig, on_signal)
            self._chained.append((sig, previous, on_signal))

    # --- the upstream check ----------------------------------------------------------------------
    async def upstream(self) -> UpstreamState:
        """CiviCRM's state now. Concurrent probes share one check, so a burst of probes costs
        CiviCRM one call."""
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._run_check())
        return await asyncio.shield(self._check)

    async def _run_check(self) -> UpstreamState:
        started = time.perf_counter()
        error: GatewayError | None = None
        try:
            # Through the breaker: while it is open this answers at once, without calling CiviCRM.
            await asyncio.wait_for(self.backend.check(), self.timeout)
        except TimeoutError:
            error = GatewayError(
                "upstream-timeout", f"CiviCRM did not answer the readiness check within {self.timeout:g} s."
            )
        except GatewayError as exc:
            error = exc
        if self.metrics is not None:
            self.metrics.upstream_up.labels(self.backend.name).set(0 if error else 1)
        return UpstreamState(error, time.perf_counter() - started)
